"""edge-train: fine-tuning on the workstation, with training speed as a result."""
