"""dask-gateway as a hub-managed service, authenticating users through JupyterHub.

A real JupyterHub + configurable-http-proxy (``ecluse.stack.Stack``) with the
gateway service wired as docs/dask.md describes (tests/dask/jupyterhub_config.py);
users sign in with LDAP passwords and use hub API tokens with the gateway.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ecluse.config import load_settings
from ecluse.ldapserver import free_port
from ecluse.stack import Stack
from ecluse.testing import HubClient, write_config

from .conftest import _projects, wait_port

pytestmark = pytest.mark.root
HUB_CONFIG = Path(__file__).with_name("jupyterhub_config.py")
PORT = free_port()  # other test runs may share this host


class GatewayStack(Stack):
    """The Écluse stack with tests/dask/jupyterhub_config.py as the hub's config."""

    def start_hub(self, timeout: float = 60) -> None:
        self.hub = subprocess.Popen(
            [str(Path(sys.executable).parent / "jupyterhub"), "-f", str(HUB_CONFIG)],
            cwd=self.state_dir, env=self.hub_env(), stdout=self.hub_log,
            stderr=subprocess.STDOUT if self.hub_log else None, stdin=subprocess.DEVNULL,
            start_new_session=True)
        self.wait_ready(timeout)


@pytest.fixture(scope="module")
def gateway_hub(tmp_path_factory, slapd, warehouse):
    d = tmp_path_factory.mktemp("dask-hub")
    path = write_config(d, slapd, overrides={"hub.auth_refresh_age": 1})
    (d / "projects.yaml").write_text(yaml.safe_dump(_projects(warehouse)))
    settings = load_settings(path)
    log = open(d / "hub.log", "wb")  # noqa: SIM115
    stack = GatewayStack(settings, hub_log=log,
                         extra_env={"ECLUSE_DASK_PROXY_PORT": str(PORT)})
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        log.close()


def _token(hub, slapd, user: str) -> str:
    client = HubClient(hub.url)
    assert client.login(user, slapd.passwords[user]).status_code == 302
    return client.new_token(user)


async def test_gateway_authenticates_through_the_hub(gateway_hub, slapd):
    from dask_gateway import Gateway, JupyterHubAuth

    from ecluse.dask.gateway import host_address

    addr = host_address(gateway_hub.settings, ensure=False)
    await wait_port(addr, PORT, timeout=60, prefix="/services/dask-gateway")

    def gateway(token: str | None) -> Gateway:
        return Gateway(address=f"{gateway_hub.url}/services/dask-gateway",
                       proxy_address=f"gateway://{addr}:{PORT}",
                       auth=JupyterHubAuth(api_token=token or "not-a-token"),
                       asynchronous=True)

    async with gateway(None) as g:  # no valid hub token: refused (the hub answers 403)
        with pytest.raises(Exception, match="401|Unauthorized|unauthorized|Permission failure"):
            await g.list_clusters()
    bob = _token(gateway_hub, slapd, "bob")
    async with gateway(bob) as g:  # hub groups decide: bob is not in air-quality
        with pytest.raises(ValueError, match="not a member of project 'air-quality'"):
            await g.new_cluster(project="air-quality")
    alice = _token(gateway_hub, slapd, "alice")
    async with gateway(alice) as g:
        cluster = await g.new_cluster(project="air-quality")
        try:
            await cluster.scale(1)
            client = await cluster.get_client(set_as_default=False)
            await client.wait_for_workers(1, timeout=120)
            assert await client.submit(lambda: __import__("os").listdir("/data"),
                                       pure=False) is not None
            await client.close()
        finally:
            await cluster.shutdown()
