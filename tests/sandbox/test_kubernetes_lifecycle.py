"""The kubernetes backend's lifecycle against a Kubernetes API server of the test's own.

:class:`tests.support.kubeapi.RecordingApiServer` answers on loopback the calls
the backend makes through ``kubernetes_asyncio`` (configured with a kubeconfig
pointing at it), checks every body against the API's models and records the
requests; the test drives the pods' phases as a kubelet would. Launch, poll,
terminate, logs, Job runs and re-adoption by a new backend instance (a
restarted hub) are exercised; no cluster is needed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ecluse.config import Dataset, LDAPSettings, Project, Quota, SandboxSettings, Settings
from ecluse.sandbox import Mount, SandboxError, SandboxSpec, UserIdentity
from ecluse.sandbox.kubernetes import KubernetesSandbox
from tests.support.kubeapi import RecordingApiServer, kubeconfig

NS = "ecluse-covid-los"


@pytest.fixture
def api():
    server = RecordingApiServer().start()
    try:
        yield server
    finally:
        server.stop()
    assert not server.refused, server.refused  # every body fitted the API's models


@pytest.fixture
def settings(tmp_path) -> Settings:
    ldap = LDAPSettings(uri="ldap://127.0.0.1:3890", base_dn="dc=t", bind_dn="cn=s,dc=t",
                        user_search_base="ou=p,dc=t", group_search_base="ou=g,dc=t")
    return Settings(state_dir=tmp_path / "state", ldap=ldap,
                    sandbox=SandboxSettings(projects_root=Path("/srv/ecluse/projects"),
                                            image="ecluse/workspace:1.2"))


@pytest.fixture
def spec() -> SandboxSpec:
    project = Project(slug="covid-los", title="LOS", ldap_group="p-covid", gid=7001,
                      datasets=[Dataset(name="stays", path=Path("/srv/data/stays"))],
                      quota=Quota(cpu=2, memory="4G", disk="50G", pids=256))
    return SandboxSpec(project, UserIdentity("alice", 5001, 5000),
                       ["jupyterhub-singleuser", "--port=8888"], port=8888,
                       allowed_ports=[8081, 8082], name="workspace")


@pytest.fixture
def backend(api, settings, tmp_path) -> KubernetesSandbox:
    cfg = kubeconfig(tmp_path / "kubeconfig", api)
    return KubernetesSandbox(settings=settings, kubeconfig=str(cfg), start_timeout=60)


def with_dataset_claim(api: RecordingApiServer) -> None:
    """What the operator does once: the dataset's read-only claim in the namespace."""
    api.objects[("namespaces", "", NS)] = {"apiVersion": "v1", "kind": "Namespace",
                                           "metadata": {"name": NS}}
    api.objects[("persistentvolumeclaims", NS, "data-stays")] = {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data-stays", "namespace": NS},
        "spec": {"accessModes": ["ReadOnlyMany"], "volumeName": "stays"}}


async def run_when_created(api: RecordingApiServer, selector: str, **phase) -> str:
    """Wait for a pod the backend creates, then set its phase (the kubelet)."""
    for _ in range(600):
        pods = api.pods(selector)
        if pods:
            m = pods[0]["metadata"]
            api.set_phase(m["namespace"], m["name"], **phase)
            return m["name"]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no pod {selector} was created")


async def test_launch_poll_terminate_and_release(api, backend, spec):
    with_dataset_claim(api)
    runner = asyncio.create_task(run_when_created(api, "ecluse.io/user=alice", phase="Running"))
    state = await backend.start(spec)
    pod_name = await runner
    assert state["pod"] == pod_name and state["namespace"] == NS
    assert state["ip"].startswith("10.244.") and state["port"] == 8888
    # the project's objects were made, in order, before the pod (the namespace was there)
    posted = [(r[1].rsplit("/", 1)[-1], (r[3] or {}).get("metadata", {}).get("name"))
              for r in api.calls("POST")]
    assert posted == [("networkpolicies", "ecluse-sandboxes"),
                      ("networkpolicies", "ecluse-one-shot"), ("networkpolicies", "ecluse-dask"),
                      ("resourcequotas", "ecluse-quota"), ("limitranges", "ecluse-limits"),
                      ("persistentvolumeclaims", "project-shared"),
                      ("persistentvolumeclaims", "homes"),
                      ("persistentvolumeclaims", "project-inbox"), ("pods", pod_name)]
    pod = api.pod(NS, pod_name)
    assert pod["spec"]["securityContext"]["runAsUser"] == 5001
    assert pod["metadata"]["labels"]["ecluse.io/sandbox-id"] == state["id"]
    assert await backend.poll(state) is None
    api.logs[(NS, pod_name)] = "server started\n"
    assert await backend.read_logs(state) == ("server started\n", "")
    await backend.terminate(state, grace=7)
    (delete,) = api.calls("DELETE", f"/pods/{pod_name}")
    assert delete[2]["gracePeriodSeconds"] == "7"  # SIGTERM, then SIGKILL after 7 s
    assert api.pod(NS, pod_name) is None
    assert await backend.poll(state) == 143
    await backend.release(state)
    await backend.stop(state)  # idempotent
    assert state["released"] and api.pods("ecluse.io/backend=kubernetes") == []


async def test_a_second_launch_keeps_the_claims_and_restores_the_policy(api, backend, spec):
    """The project's objects exist: claims are kept; a policy someone widened is put back
    (the workspaces' and the one-shot pods' alike)."""
    with_dataset_claim(api)
    api.auto_run = True
    first = await backend.start(spec)
    pol = api.objects[("networkpolicies", NS, "ecluse-sandboxes")]
    pol["spec"]["egress"].append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]})
    one_shot = api.objects[("networkpolicies", NS, "ecluse-one-shot")]
    assert one_shot["spec"] == {"podSelector": {"matchLabels": {"ecluse.io/one-shot": "1"}},
                                "policyTypes": ["Ingress", "Egress"]}
    one_shot["spec"]["egress"] = [{}]  # one-shot runs open to everything
    second = await backend.start(spec)
    assert first["id"] != second["id"]
    restored = api.objects[("networkpolicies", NS, "ecluse-sandboxes")]
    assert all("ipBlock" not in t for r in restored["spec"]["egress"] for t in r["to"])
    assert len(api.calls("PUT", "/networkpolicies/ecluse-sandboxes")) == 1
    assert "egress" not in api.objects[("networkpolicies", NS, "ecluse-one-shot")]["spec"]
    assert len(api.calls("PUT", "/networkpolicies/ecluse-one-shot")) == 1
    assert len(api.calls("POST", "/persistentvolumeclaims")) == 6  # 3 made, 3 conflicts
    for st in (first, second):
        await backend.stop(st, grace=0)


async def test_a_missing_dataset_claim_fails_closed(api, backend, spec):
    api.auto_run = True
    with pytest.raises(SandboxError, match="dataset stays of project covid-los is unavailable"):
        await backend.start(spec)
    assert api.calls("POST", "/pods") == []
    # the namespace was made on the way, under the "restricted" Pod Security standard
    ns = api.objects[("namespaces", "", NS)]["metadata"]["labels"]
    assert ns["pod-security.kubernetes.io/enforce"] == "restricted"


async def test_a_server_that_exits_while_starting_fails_the_launch(api, backend, spec):
    with_dataset_claim(api)
    runner = asyncio.create_task(run_when_created(api, "ecluse.io/user=alice", phase="Failed",
                                                  exit_code=2))
    with pytest.raises(SandboxError, match="stopped while it started") as e:
        await backend.start(spec)
    await runner
    assert "exit 2" in e.value.log_message
    assert api.pods("ecluse.io/user=alice") == []  # removed


async def test_an_unreachable_api_fails_closed(settings, spec, tmp_path):
    server = RecordingApiServer().start()
    cfg = kubeconfig(tmp_path / "kubeconfig", server)
    server.stop()  # nothing answers there any more
    k = KubernetesSandbox(settings=settings, kubeconfig=str(cfg), api_timeout=5)
    with pytest.raises(SandboxError, match="Kubernetes API"):
        await k.start(spec)


async def test_readoption_after_a_hub_restart(api, backend, spec, settings):
    """A new backend instance (the restarted hub) finds the pod by its labels, polls and
    stops it from the saved state or from the listing alone."""
    with_dataset_claim(api)
    api.auto_run = True
    state = await backend.start(spec)
    other_user = SandboxSpec(spec.project, UserIdentity("carol", 5003, 5003),
                             spec.command, port=8888, allowed_ports=[8081], name="workspace")
    carol = await backend.start(other_user)
    restarted = KubernetesSandbox(settings=settings, kubeconfig=backend.kubeconfig)
    saved = {k: v for k, v in state.items()}  # as JupyterHub's get_state keeps it
    assert await restarted.poll(saved) is None
    found = await asyncio.to_thread(restarted.adopt, "covid-los", "alice", "workspace")
    assert found is not None and found["id"] == state["id"] and found["pod"] == state["pod"]
    assert found["ip"] == state["ip"] and found["allowed_ports"] == [8081, 8082]
    assert await asyncio.to_thread(restarted.adopt, "onco-surv", "alice") is None
    listed = await asyncio.to_thread(restarted.list)
    assert {s["user"] for s in listed} == {"alice", "carol"} and all(s["alive"] for s in listed)
    api.set_phase(NS, state["pod"], "Succeeded", exit_code=0)
    assert await restarted.poll(found) == 0
    await restarted.stop(found)
    assert api.pod(NS, state["pod"]) is None
    await restarted.stop(carol, grace=0)
    assert api.pods("ecluse.io/backend=kubernetes") == []


async def test_a_batch_run_is_a_job(api, backend, spec):
    """A one-shot run (batch notebook) as a Job: its exit status, its log, and nothing
    left after (the Job and its pod deleted)."""
    with_dataset_claim(api)
    spec.port = None
    spec.name = "batch"
    spec.command = ["papermill", "in.ipynb", "out.ipynb"]

    async def kubelet():
        name = await run_when_created(api, "ecluse.io/sandbox=batch", phase="Running")
        api.logs[(NS, name)] = "Executing notebook\n"
        await asyncio.sleep(0.3)
        api.set_phase(NS, name, "Failed", exit_code=3)

    driver = asyncio.create_task(kubelet())
    result = await backend.run(spec, timeout=120)
    await driver
    assert (result.exit_code, result.stdout, result.timed_out) == (3, "Executing notebook\n",
                                                                    False)
    (job_post,) = api.calls("POST", "/jobs")
    assert job_post[1] == f"/apis/batch/v1/namespaces/{NS}/jobs"
    assert job_post[3]["spec"]["backoffLimit"] == 0
    assert api.objects.get(("jobs", NS, job_post[3]["metadata"]["name"])) is None
    assert api.pods("ecluse.io/sandbox=batch") == []


async def test_a_batch_run_killed_for_memory(api, backend, spec):
    with_dataset_claim(api)
    spec.port = None
    spec.name = "batch"
    driver = asyncio.create_task(run_when_created(api, "ecluse.io/sandbox=batch",
                                                  phase="Failed", exit_code=137,
                                                  reason="OOMKilled"))
    result = await backend.run(spec, timeout=120)
    await driver
    assert result.oom_killed and result.exit_code == 137 and not result.ok


async def test_a_batch_run_that_times_out_is_deleted(api, backend, spec):
    with_dataset_claim(api)
    spec.port = None
    spec.name = "batch"
    api.auto_run = True
    result = await backend.run(spec, timeout=0.5)
    assert result.timed_out and not result.ok
    job_delete, pod_delete = api.calls("DELETE")[:2]  # the Job first: nothing replaces the pod
    assert "/jobs/" in job_delete[1] and job_delete[2]["propagationPolicy"] == "Orphan"
    assert "/pods/" in pod_delete[1] and pod_delete[2]["gracePeriodSeconds"] == "10"
    assert api.pods("ecluse.io/sandbox=batch") == [] and api.calls("DELETE", "/jobs/")


async def test_the_jupyter_configuration_is_a_read_only_config_map(api, backend, spec, tmp_path):
    """The spawner's extra mount (the hub's /etc/jupyter folder) travels as a ConfigMap of
    the project's namespace, mounted read-only with its sub-folders; a writable extra
    mount is refused (nothing of the hub's host is writable from a pod)."""
    conf = tmp_path / "jupyter"
    (conf / "locale" / "fr_FR" / "labconfig").mkdir(parents=True)
    (conf / "jupyter_server_config.json").write_text('{"ServerApp": {}}')
    (conf / "locale" / "fr_FR" / "labconfig" / "default_setting_overrides.json").write_text("{}")
    (conf / "logo.png").write_bytes(b"\x89PNG\xff\x00")
    with_dataset_claim(api)
    api.auto_run = True
    spec.extra_mounts = [Mount(conf, "/etc/jupyter", True)]
    state = await backend.start(spec)
    cm = api.objects[("configmaps", NS, "ecluse-mount-etc-jupyter")]
    pod = api.pod(NS, state["pod"])
    (vol,) = [v for v in pod["spec"]["volumes"] if "configMap" in v]
    paths = {i["key"]: i["path"] for i in vol["configMap"]["items"]}
    assert sorted(paths.values()) == ["jupyter_server_config.json",
                                      "locale/fr_FR/labconfig/default_setting_overrides.json",
                                      "logo.png"]
    by_path = {p: k for k, p in paths.items()}
    assert cm["data"][by_path["jupyter_server_config.json"]] == '{"ServerApp": {}}'
    assert by_path["logo.png"] in cm["binaryData"]
    (mnt,) = [m for m in pod["spec"]["containers"][0]["volumeMounts"]
              if m["name"] == vol["name"]]
    assert (mnt["mountPath"], mnt["readOnly"]) == ("/etc/jupyter", True)
    await backend.stop(state, grace=0)
    spec.extra_mounts = [Mount(conf, "/etc/jupyter", False)]
    with pytest.raises(SandboxError, match="cannot be mounted on Kubernetes"):
        await backend.start(spec)
