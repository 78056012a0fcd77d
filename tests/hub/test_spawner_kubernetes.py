"""EcluseSpawner on the kubernetes backend: the spawner's own path (LDAP identity, audit,
the Jupyter configuration, orphans) with workspace pods on a Kubernetes API of the
test's own.

:class:`tests.support.kubeapi.RecordingApiServer` answers the API calls and gives
running pods the address 127.0.0.1, where the test listens on the workspace port
(the "server" in the pod), so the spawner's readiness check passes as it would on a
cluster. A second spawner with a new backend instance plays the restarted hub.
"""

from __future__ import annotations

import asyncio
import socket

import pytest
from jupyterhub import orm
from jupyterhub.objects import Hub

from ecluse.audit import AuditLog
from ecluse.config import load_settings
from ecluse.hub.spawner import EcluseSpawner
from ecluse.sandbox.kubernetes import KubernetesSandbox
from tests.support.doubles import SignedInUser
from tests.support.kubeapi import RecordingApiServer, kubeconfig

NS = "ecluse-cardio-los"


@pytest.fixture
def api():
    server = RecordingApiServer().start()
    server.auto_run = True
    server.pod_ip = "127.0.0.1"
    try:
        yield server
    finally:
        server.stop()
    assert not server.refused, server.refused


@pytest.fixture
async def workspace_port():
    """A listener standing for the workspace server inside the pod."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def answer(reader, writer):
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", port)
    try:
        yield port
    finally:
        server.close()
        await server.wait_closed()


def spawner(settings, backend, port: int) -> EcluseSpawner:
    s = EcluseSpawner(user=SignedInUser("alice", ["cardio-los"]), hub=Hub(),
                      orm_spawner=orm.Spawner(name="cardio-los"), settings=settings,
                      verify_membership_in_directory="never", workspace_port=port)
    s._backend = backend
    return s


async def test_a_workspace_pod_through_the_spawner(make_config, api, workspace_port, tmp_path,
                                                   monkeypatch):
    settings = load_settings(make_config(**{"hub.spawner": "ecluse",
                                            "sandbox.backend": "kubernetes"}))
    monkeypatch.setattr(EcluseSpawner, "_audit_log", None)  # this test's audit log
    cfg = str(kubeconfig(tmp_path / "kubeconfig", api))
    api.objects[("namespaces", "", NS)] = {"apiVersion": "v1", "kind": "Namespace",
                                           "metadata": {"name": NS}}
    for ds in settings.projects["cardio-los"].datasets:
        api.objects[("persistentvolumeclaims", NS, f"data-{ds.name}")] = {
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": f"data-{ds.name}", "namespace": NS}}
    first = spawner(settings, KubernetesSandbox(settings=settings, kubeconfig=cfg),
                    workspace_port)
    ip, port = await first.start()
    assert (ip, port) == ("127.0.0.1", workspace_port)
    state = first.get_state()
    (pod,) = api.pods("ecluse.io/user=alice")
    ctr = pod["spec"]["containers"][0]
    # the directory's identity and the project's group (SignedInUser's auth state)
    assert pod["spec"]["securityContext"]["runAsUser"] == 20001
    assert pod["spec"]["securityContext"]["supplementalGroups"] == [30001]
    env = {e["name"]: e["value"] for e in ctr["env"] if "value" in e}
    assert env["JUPYTERHUB_USER"] == "alice" and env["ECLUSE_PROJECT"] == "cardio-los"
    # workspaces reach the airlock by the hub Service's name, on an allowed port
    assert env["ECLUSE_AIRLOCK_URL"].startswith(
        f"http://hub.ecluse.svc.cluster.local:{settings.airlock.port}/")
    egress = api.objects[("networkpolicies", NS, "ecluse-sandboxes")]["spec"]["egress"]
    # (the airlock's port joins through c.EcluseSpawner.extra_allowed_ports: test_hubconfig)
    assert {p["port"] for p in egress[0]["ports"]} == {settings.hub.hub_port}
    # the Jupyter configuration (export guard) as a read-only ConfigMap
    (mnt,) = [m for m in ctr["volumeMounts"] if m["mountPath"] == "/etc/jupyter"]
    assert mnt["readOnly"] is True
    assert ("configmaps", NS, "ecluse-mount-etc-jupyter") in api.objects
    # the restarted hub: a new backend instance, the saved state
    again = spawner(settings, KubernetesSandbox(settings=settings, kubeconfig=cfg),
                    workspace_port)
    again.load_state(state)
    assert await again.poll() is None
    await again.stop()
    assert api.pods("ecluse.io/user=alice") == []
    records = [r for r in AuditLog.from_settings(settings).records()
               if r.event in ("workspace.start", "workspace.stop")]
    assert [r.event for r in records] == ["workspace.start", "workspace.stop"]
    assert records[0].details["sandbox"] == state["sandbox"]["id"]
