"""Nothing on the sandbox host address serves a Dask dashboard (docs/dask.md).

dask-gateway does not authenticate dashboards: its proxy's HTTP listener (API and
dashboards) is on loopback, only the front reaches it. Sandboxes get the proxy's
scheduler (TLS) listener and the front's API listener, which forwards the API and
refuses dashboards. Checked from inside the sandboxes of another project's
researcher — a workspace and a cluster of their own — against a live cluster of a
project they are not in, on every port the workspace may reach on the host address
(and the gateway's other ports), while the API and the scheduler traffic work from
that workspace: ``Gateway()`` with the workspace environment only.
"""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap

import pytest
import requests
from traitlets.config import Config

from ecluse.dask.front import DASHBOARD_REFUSED
from ecluse.dask.gateway import host_address
from ecluse.dask.hub import gateway_client_env
from ecluse.directory import Directory
from ecluse.hub.hubconfig import configure_spawner
from ecluse.sandbox import SandboxSpec, UserIdentity, get_backend

pytestmark = pytest.mark.root

#: run in bob's workspace sandbox (cardio-los): probe, then use the gateway as a researcher
WORKSPACE = textwrap.dedent('''
    import json, os, sys

    def probe(host, ports, paths):
        """GET each path on each port; the raw answer, or why there is none."""
        import socket

        out = {}
        for port in ports:
            try:  # a port the firewall drops: once, not once per path
                socket.create_connection((host, port), timeout=3).close()
            except OSError as e:
                out.update({f"{port} {path}": f"no connection: {type(e).__name__}"
                            for path in paths})
                continue
            for path in paths:
                key = f"{port} {path}"
                try:
                    s = socket.create_connection((host, port), timeout=3)
                except OSError as e:
                    out[key] = f"no connection: {type(e).__name__}"
                    continue
                try:
                    s.settimeout(5)
                    s.sendall((f"GET {path} HTTP/1.0\\r\\nHost: {host}:{port}\\r\\n"
                               "Accept: text/html\\r\\n\\r\\n").encode())
                    data = b""
                    while len(data) < 1 << 20:
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    out[key] = data.decode("latin-1") or "closed: no answer"
                except OSError as e:
                    out[key] = f"closed: {type(e).__name__}"
                finally:
                    s.close()
        return out

    host, ports, paths = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    result = {"workspace": probe(host, ports, paths)}

    from dask_gateway import Gateway

    gateway = Gateway()  # address, scheduler proxy and auth from the environment
    cluster = gateway.new_cluster(project="cardio-los")
    try:
        cluster.scale(1)
        client = cluster.get_client()
        client.wait_for_workers(1, timeout=120)
        result["sum"] = client.submit(sum, range(10), pure=False).result()
        result["cluster"] = client.submit(probe, host, ports, paths, pure=False).result()
        client.close()
    finally:
        cluster.shutdown()
    print(json.dumps(result))
''')


def _status(answer: str) -> int | None:
    first = answer.split("\r\n", 1)[0].split()
    return int(first[1]) if len(first) > 1 and first[0].startswith("HTTP/") else None


def _workspace_ports(settings) -> list[int]:
    """What the spawner lets a workspace reach on the host address (hubconfig)."""
    c = Config()
    configure_spawner(c, settings.model_copy(update={
        "hub": settings.hub.model_copy(update={"spawner": "ecluse"}),
        "dask": settings.dask.model_copy(update={"gateway": True})}))
    return [settings.hub.hub_port, *c.EcluseSpawner.extra_allowed_ports]


async def test_no_dashboard_on_the_sandbox_host_address(gateway):
    settings = gateway.ecluse_settings
    ds = settings.dask
    prefix = gateway.prefix
    alice = gateway.connect("alice")
    cluster = await alice.new_cluster(project="air-quality")  # bob is not in air-quality
    try:
        # the dashboard is live: the proxy's HTTP listener (loopback) serves it to the front
        local = f"http://{gateway.backend.proxy.address}{prefix}/clusters/{cluster.name}/status"
        for _ in range(120):
            r = await asyncio.to_thread(requests.get, local, timeout=10)
            if r.status_code == 200:
                break
            await asyncio.sleep(0.5)
        assert r.status_code == 200 and "bokeh" in r.text.lower(), r.status_code

        allowed = _workspace_ports(settings)
        assert {ds.api_port, ds.proxy_port} <= set(allowed)
        assert ds.proxy_http_port not in allowed
        ports = sorted({*allowed, ds.proxy_http_port, ds.front_port})
        name = cluster.name
        paths = [f"{prefix}/clusters/{name}/status",
                 f"{prefix}/clusters/{name}/status/ws",
                 f"{prefix}/api/../clusters/{name}/status",
                 f"{prefix}/api/%2e%2e/clusters/{name}/status",
                 f"/clusters/{name}/status"]

        who = await asyncio.to_thread(Directory(settings.ldap).lookup, "bob")
        user = UserIdentity("bob", who.uid_number, who.gid_number)
        project = settings.projects["cardio-los"]
        project = project.model_copy(update={"gid": who.group_gids[project.ldap_group]})
        sandbox = get_backend(settings)
        sandbox.prepare_project_dirs(project, user)
        env = {**gateway_client_env(settings, host_address(settings, ensure=False)), "JUPYTERHUB_API_TOKEN": "bob"}
        spec = SandboxSpec(project, user,
                           [sys.executable, "-c", WORKSPACE, gateway.addr, json.dumps(ports),
                            json.dumps(paths)],
                           env=env, allowed_ports=allowed, name="test-dashboard-probe")
        result = await sandbox.run(spec, timeout=240)
        assert result.ok, result.stderr[-3000:]
        out = json.loads(result.stdout.strip().splitlines()[-1])
    finally:
        await cluster.shutdown()

    # the API and the scheduler traffic work from the workspace
    assert out["sum"] == 45
    for where in ("workspace", "cluster"):
        answers = out[where]
        assert set(answers) == {f"{p} {q}" for p in ports for q in paths}
        for key, answer in answers.items():
            status = _status(answer)
            assert status in (None, 400, 403, 404), (where, key, answer[:500])
            assert "bokeh" not in answer.lower(), (where, key, answer[:500])
        # the API listener says why
        refusal = answers[f"{ds.api_port} {prefix}/clusters/{name}/status"]
        assert _status(refusal) == 403, refusal[:500]
        assert DASHBOARD_REFUSED.split(".")[0] in refusal, refusal[:500]
        # the proxy's scheduler listener speaks TLS only: no HTTP answer
        assert _status(answers[f"{ds.proxy_port} {prefix}/clusters/{name}/status"]) is None
