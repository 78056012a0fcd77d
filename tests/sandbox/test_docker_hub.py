"""The real hub spawns a workspace in a Docker container, from the built workspace
image, and the user reaches JupyterLab through the proxy (issue 17 item 1)."""

from __future__ import annotations

import contextlib

import pytest

from ecluse.config import load_settings
from ecluse.dev.ldapserver import free_port
from ecluse.dev.testing import write_config
from tests.support.stacks import running_stack
from tests.workspace.helpers import start_workspace_now

pytestmark = pytest.mark.root


@pytest.fixture
def docker_hub(docker_engine, workspace_image, slapd, tmp_path_factory):
    from ecluse.sandbox.local import teardown_host_network

    engine, _ = docker_engine
    directory = tmp_path_factory.mktemp("dockerhub")
    path = write_config(directory, slapd, overrides={
        "hub.spawner": "ecluse", "sandbox.backend": "docker",
        "sandbox.docker_url": engine.url, "sandbox.image": workspace_image,
        "sandbox.stop_grace": 2, "sandbox.start_timeout": 120,
        "airlock.port": free_port(), "airlock.check_processes": 0})
    try:
        with running_stack(load_settings(path), directory / "hub.log",
                           cleanup_servers=True) as stack:
            yield stack
    finally:
        teardown_host_network()


def test_the_hub_spawns_a_docker_workspace_reached_through_the_proxy(docker_hub,
                                                                   docker_engine,
                                                                   workspace_image,
                                                                   ldap_passwords):
    engine, _ = docker_engine
    ws = start_workspace_now(docker_hub, ldap_passwords, "alice", "cardio-los")
    with contextlib.closing(engine.client()) as client:
        running = client.containers.list(filters={"label": "ecluse.project=cardio-los"})
        assert [c.image.tags for c in running] and \
            workspace_image in running[0].image.tags, running
        assert running[0].attrs["Config"]["User"].split(":")[0] != "0"
    r = ws.get("lab", allow_redirects=True)
    assert r.status_code == 200 and "JupyterLab" in r.text, r.text[:500]
    assert ws.get("api/contents/").status_code == 200
    # the export guard is there too, through the proxy
    assert ws.get("files/anything.csv").status_code == 403
    r = ws.client.api("DELETE", "/users/alice/servers/cardio-los", ws.token)
    assert r.status_code in (202, 204), r.text
