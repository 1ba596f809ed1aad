"""Device side of edge-slm: read artifacts, tokenize, run, benchmark. Needs no TensorFlow."""

from .errors import EdgeError

__version__ = "0.1.0"  # the single source: pyproject reads it

__all__ = ["EdgeError"]
