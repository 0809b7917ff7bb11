"""Tests of the embedded CPU lip-sync engine (lipsync/animator.py, lipsync/source.py) and samples/."""
