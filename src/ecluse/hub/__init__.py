"""JupyterHub configuration for Écluse (logic lives here, not in config files)."""
