"""Thin Ray Serve shells (resources, health, metrics) over the Ray-free stages in stages/."""
