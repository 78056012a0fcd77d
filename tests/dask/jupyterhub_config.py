"""The hub of tests/dask/test_hub.py: Écluse's configuration plus the dask-gateway
service, wired exactly as docs/dask.md asks hubconfig.configure to do."""

from ecluse.dask.gateway import USER_SCOPES, gateway_service_spec
from ecluse.hub.hubconfig import configure_from_env

c = get_config()  # noqa: F821
settings = configure_from_env(c)
c.JupyterHub.services = [*c.JupyterHub.services, gateway_service_spec(settings)]
roles = list(c.JupyterHub.load_roles)
for role in roles:
    if role["name"] == "user":
        role["scopes"] = [*role["scopes"], *USER_SCOPES]
c.JupyterHub.load_roles = roles
