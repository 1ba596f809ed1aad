"""Device side of edge-slm: read artifacts, tokenize, run, benchmark. Needs no TensorFlow."""
