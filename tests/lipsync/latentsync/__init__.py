"""Tests of lipsync/latentsync (tiny configs, CPU, goldens from tests/fixtures/latentsync)."""
