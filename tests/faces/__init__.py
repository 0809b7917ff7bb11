"""Tests of faces/ (MTCNN on the astronaut portrait; real weights from assets/mtcnn)."""
