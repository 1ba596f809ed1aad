"""Device side of edge-slm: read artifacts, tokenize, run, benchmark. Needs no TensorFlow."""

from .errors import EdgeError

__all__ = ["EdgeError"]
