"""The shared leaf every room may use: errors and exit codes, atomic writes, result documents,
CLI conventions and progress output. It imports nothing else of edge-slm."""

__version__ = "0.1.0"  # the single source: pyproject reads it
