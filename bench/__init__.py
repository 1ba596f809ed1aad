"""edge-bench: the model-selection study (workstation or device) and its report."""
