"""Tests of personas/ (CPU base takes)."""
