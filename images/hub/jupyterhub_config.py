# JupyterHub configuration of the hub image: it only calls versioned code.
# Settings come from $ECLUSE_CONFIG (/etc/ecluse/ecluse.yaml, mounted).
from ecluse.hub.hubconfig import configure_from_env

configure_from_env(c)  # noqa: F821 - `c` is provided by JupyterHub
