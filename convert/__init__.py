"""Host side of edge-slm: BERT-family checkpoints -> quantized, validated TFLite artifacts.

The library entry point is `edge_slm.convert.api.convert`; `edge-convert` (cli.py) is a thin shell
over it. Importing this package does not import TensorFlow.
"""
