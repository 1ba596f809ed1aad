"""The model registry (registry.toml + registry.py); `make models` writes artifacts here too."""
