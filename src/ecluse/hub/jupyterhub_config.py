# JupyterHub config used by `ecluse up`: it only calls versioned code.
# Settings come from $ECLUSE_CONFIG (and $ECLUSE_STATE_DIR / $ECLUSE_PORT).
from ecluse.hub.hubconfig import configure_from_env

configure_from_env(c)  # noqa: F821 - `c` is provided by JupyterHub
