#!/usr/bin/env bash
# Kept for the README and older notes that name it: the apt list lives in scripts/install.sh.
exec bash "$(dirname "$0")/install.sh" system "$@"
