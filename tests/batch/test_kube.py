"""Batch runs as Kubernetes Jobs (ecluse.batch.kube) against a recording API server.

The run's Job is made by the batch backend from the runner's own specification
(:meth:`QueueRunner._spec`); the test plays the kubelet (the pod's phase, exit
code) and the pod's writes to its run folder (the share the service mounts).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from ecluse.batch.files import UnsafePath
from ecluse.batch.identity import RunIdentity
from ecluse.batch.kube import KubernetesBatchSandbox, KubeRunFolders, batch_backend
from ecluse.batch.runner import QueueRunner
from ecluse.batch.runs import INPUT_MOUNT
from ecluse.config import Dataset, LDAPSettings, Project, Quota, SandboxSettings, Settings
from ecluse.sandbox import SandboxError
from ecluse.sandbox.k8s_checks import pod_problems
from ecluse.sandbox.kubernetes import KubernetesSandbox
from tests.support.kubeapi import RecordingApiServer, kubeconfig, load_model

NS = "ecluse-covid-los"
RID = "r20261204abcdef"


class RunnerOfBackend(QueueRunner):
    """The queue runner's spec building and sandbox removal, on a given backend."""

    def __init__(self, settings, backend, records_dir: Path) -> None:
        self.settings = settings
        self.backend = backend
        self.conf = type("Conf", (), {"kernel_name": "python3"})()
        self.records = type("Records", (), {"inputs": lambda _s, rid: records_dir})()


@pytest.fixture
def api():
    server = RecordingApiServer().start()
    try:
        yield server
    finally:
        server.stop()
    assert not server.refused, server.refused


@pytest.fixture
def settings(tmp_path, api) -> Settings:
    ldap = LDAPSettings(uri="ldap://127.0.0.1:3890", base_dn="dc=t", bind_dn="cn=s,dc=t",
                        user_search_base="ou=p,dc=t", group_search_base="ou=g,dc=t")
    (tmp_path / "share").mkdir()
    project = Project(slug="covid-los", title="LOS", ldap_group="p-covid", gid=7001,
                      datasets=[Dataset(name="stays", path=Path("/srv/data/stays"))],
                      quota=Quota(cpu=2, memory="4G", disk="50G", pids=256))
    return Settings(state_dir=tmp_path / "state", ldap=ldap, projects={"covid-los": project},
                    sandbox=SandboxSettings(
                        backend="kubernetes", image="ecluse/workspace:1.2",
                        kubernetes={"kubeconfig": str(kubeconfig(tmp_path / "kc", api)),
                                    "batch_runs_root": str(tmp_path / "share"),
                                    "start_timeout": 30}))


def with_dataset_claim(api: RecordingApiServer, settings=None, spec=None,
                       policy: bool = True) -> None:
    """The project's namespace as the hub makes it (a workspace's launch: its
    NetworkPolicy) and the operator (the dataset's and the batch-runs claims)."""
    api.objects[("namespaces", "", NS)] = {"apiVersion": "v1", "kind": "Namespace",
                                           "metadata": {"name": NS}}
    for claim in ("data-stays", "batch-runs"):
        api.objects[("persistentvolumeclaims", NS, claim)] = {
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim, "namespace": NS}, "spec": {}}
    if policy:
        k = KubernetesSandbox(settings=settings)
        api.objects[("networkpolicies", NS, "ecluse-sandboxes")] = k.network_policy(spec)
        api.objects[("networkpolicies", NS, "ecluse-one-shot")] = k.one_shot_policy(
            spec.project.slug)


def run_spec(settings, tmp_path):
    inputs = tmp_path / "records" / RID / "input"
    inputs.mkdir(parents=True)
    (inputs / "input.ipynb").write_text('{"cells": []}')
    (inputs / "parameters.json").write_text("{}")
    backend = batch_backend(settings)
    runner = RunnerOfBackend(settings, backend, inputs)
    who = RunIdentity(name="alice", uid=5001, gid=5000, project_gid=7001)
    run = {"id": RID, "project": "covid-los", "run_as": "alice", "parameters": {},
           "notebook_sha256": "0" * 64}
    return backend, runner, runner._spec(run, who)


async def wait_job_pod(api):
    for _ in range(600):
        pods = api.pods("ecluse.io/one-shot=1")
        if pods:
            return pods[0]
        await asyncio.sleep(0.05)
    raise AssertionError("no job pod")


def test_a_run_is_a_job_with_its_folder_inputs_and_data(api, settings, tmp_path):
    backend, runner, spec = run_spec(settings, tmp_path)
    with_dataset_claim(api, settings, spec)
    assert isinstance(backend, KubernetesBatchSandbox)
    folders = KubeRunFolders(settings, backend)
    assert isinstance(folders, KubeRunFolders)
    from ecluse.batch.service import BatchService
    svc = BatchService.__new__(BatchService)
    svc.settings, svc._backend, svc._folders = settings, None, None
    assert isinstance(svc.backend, KubernetesBatchSandbox)
    assert isinstance(svc.folders, KubeRunFolders)
    folder = folders.create(settings.projects["covid-los"], spec.user, 7001, RID)

    async def go():
        state = await backend.launch(spec, one_shot=True)
        pod = await wait_job_pod(api)
        # the pod writes its outputs in its folder (the share, as the service sees it)
        run_dir = tmp_path / "share" / "covid-los" / RID
        (run_dir / "result.json").write_text('{"status": "succeeded"}')
        (run_dir / "output.ipynb").write_text('{"cells": [1]}')
        api.set_phase(NS, pod["metadata"]["name"], "Succeeded", exit_code=0)
        code = await backend.poll(state)
        await backend.stop(state, grace=0)
        return state, code

    state, code = asyncio.run(go())
    assert code == 0
    job = api.requests[[r[1].endswith("/jobs") and r[0] == "POST"
                        for r in api.requests].index(True)][3]
    load_model(job, "V1Job")
    assert pod_problems(job, namespace=NS, project="covid-los") == []
    tmpl = job["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m for m in tmpl["containers"][0]["volumeMounts"]}
    vols = {v["name"]: v for v in tmpl["volumes"]}
    assert mounts[f"/project/batch/{RID}"] == {"name": "batch-runs", "subPath": RID,
                                               "mountPath": f"/project/batch/{RID}"}
    assert mounts[INPUT_MOUNT]["readOnly"] is True
    assert mounts[INPUT_MOUNT]["subPath"] == f".inputs/{RID}"
    assert vols["batch-runs"]["persistentVolumeClaim"]["claimName"] == "batch-runs"
    assert mounts["/data/stays"]["readOnly"] is True
    assert vols["data-stays"]["persistentVolumeClaim"]["readOnly"] is True
    # no ConfigMap of the inputs (a notebook may be larger than a ConfigMap holds), and
    # nothing made but the Job: the service's role runs Jobs only
    assert not [k for k in api.objects if k[0] == "configmaps"]
    assert {r[1].rsplit("/", 1)[-1] for r in api.calls("POST")} == {"jobs"}
    ctr = tmpl["containers"][0]
    assert ctr["securityContext"]["readOnlyRootFilesystem"] is True
    assert tmpl["automountServiceAccountToken"] is False
    # the run talks to nothing: its pod is left out of the workspaces' policy and
    # selected by the one-shot policy, which has no rule
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels["ecluse.io/one-shot"] == "1"
    sandboxes = api.objects[("networkpolicies", NS, "ecluse-sandboxes")]["spec"]
    assert {"key": "ecluse.io/one-shot", "operator": "NotIn",
            "values": ["1"]} in sandboxes["podSelector"]["matchExpressions"]
    one_shot = api.objects[("networkpolicies", NS, "ecluse-one-shot")]["spec"]
    assert one_shot["podSelector"] == {"matchLabels": {"ecluse.io/one-shot": "1"}}
    assert sorted(one_shot["policyTypes"]) == ["Egress", "Ingress"]
    assert not one_shot.get("ingress") and not one_shot.get("egress")
    # the service reads the outputs back through the no-link folder
    assert folder.read("result.json", 1024) == b'{"status": "succeeded"}'
    folder.close()
    with folders.open("covid-los", RID) as again:
        assert b"".join(again.iter("output.ipynb")) == b'{"cells": [1]}'
    # the copied inputs are removed with the Job; the Job and its pod are gone
    assert not (tmp_path / "share" / "covid-los" / ".inputs" / RID).exists()
    assert not [k for k in api.objects if k[0] in ("jobs", "pods")]
    assert state["exit_code"] == 0


def test_exit_code_and_memory_kill_are_read_back(api, settings, tmp_path):
    backend, _runner, spec = run_spec(settings, tmp_path)
    with_dataset_claim(api, settings, spec)

    async def go():
        state = await backend.launch(spec, one_shot=True)
        pod = await wait_job_pod(api)
        api.set_phase(NS, pod["metadata"]["name"], "Failed", exit_code=137, reason="OOMKilled")
        code = await backend.poll(state)
        await backend.stop(state, grace=0)
        return state, code

    state, code = asyncio.run(go())
    assert code == 137 and state["oom_killed"] is True


def test_a_restarted_service_removes_the_job_of_an_interrupted_run(api, settings, tmp_path):
    backend, _runner, spec = run_spec(settings, tmp_path)
    with_dataset_claim(api, settings, spec)

    async def start():
        state = await backend.launch(spec, one_shot=True)
        await wait_job_pod(api)
        return state

    state = asyncio.run(start())
    assert [k for k in api.objects if k[0] == "jobs"]
    # a new process: new backend, nothing but the run's sandbox id from its queue
    fresh = RunnerOfBackend(settings, batch_backend(settings), tmp_path)
    asyncio.run(fresh._remove_sandbox(state["id"]))
    assert not [k for k in api.objects if k[0] in ("jobs", "pods")]
    assert api.calls("DELETE", f"/namespaces/{NS}/jobs/{state['job']}")
    # found in the project's namespace: the service's role lists nothing cluster-wide
    assert api.calls("GET", f"/namespaces/{NS}/pods") and not [
        r for r in api.requests if r[1] == "/api/v1/pods"]


def test_a_run_without_its_id_or_inputs_is_refused(api, settings, tmp_path):
    backend, _runner, spec = run_spec(settings, tmp_path)
    from dataclasses import replace

    with pytest.raises(SandboxError):
        asyncio.run(backend.launch(replace(spec, env={}), one_shot=True))
    with pytest.raises(SandboxError):
        asyncio.run(backend.launch(spec, one_shot=False))
    assert not api.calls("POST")


def test_run_folders_never_follow_a_link(settings, tmp_path):
    folders = KubeRunFolders(settings)
    proj = tmp_path / "share" / "covid-los"
    proj.mkdir()
    os.symlink("/etc", proj / RID)
    with pytest.raises(UnsafePath):
        folders.open("covid-los", RID)
    with pytest.raises(FileExistsError):  # never reuse a run's folder
        folders.create(settings.projects["covid-los"], None, 7001, RID)


NOT_READY = {
    "no-policy": "no NetworkPolicy ecluse-sandboxes",
    "open-policy": "an ipBlock peer",
    "no-claim": "claim ecluse-covid-los/batch-runs does not exist",
    # a run's pod selected by the workspaces' policy: the hub side's ports
    "sandboxes-select-runs": "does not leave one-shot pods out",
    # a run's pod selected by no policy: the whole network
    "no-one-shot-policy": "no NetworkPolicy ecluse-one-shot",
    "open-one-shot-policy": "ecluse-one-shot: it allows traffic",
    "one-shot-policy-narrowed": "does not select every one-shot pod",
}


@pytest.mark.parametrize("broken", list(NOT_READY))
def test_a_project_namespace_not_ready_runs_nothing(api, settings, tmp_path, broken):
    backend, _runner, spec = run_spec(settings, tmp_path)
    with_dataset_claim(api, settings, spec, policy=broken != "no-policy")
    if broken == "no-policy":  # the one-shot policy alone
        api.objects[("networkpolicies", NS, "ecluse-one-shot")] = KubernetesSandbox(
            settings=settings).one_shot_policy(spec.project.slug)
    pol = api.objects.get(("networkpolicies", NS, "ecluse-sandboxes"))
    one_shot = api.objects[("networkpolicies", NS, "ecluse-one-shot")]
    if broken == "open-policy":
        pol["spec"]["egress"].append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}],
                                      "ports": [{"port": 443, "protocol": "TCP"}]})
    if broken == "no-claim":
        del api.objects[("persistentvolumeclaims", NS, "batch-runs")]
    if broken == "sandboxes-select-runs":
        del pol["spec"]["podSelector"]["matchExpressions"]
    if broken == "no-one-shot-policy":
        del api.objects[("networkpolicies", NS, "ecluse-one-shot")]
    if broken == "open-one-shot-policy":
        one_shot["spec"]["egress"] = [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]
    if broken == "one-shot-policy-narrowed":
        one_shot["spec"]["podSelector"]["matchLabels"]["ecluse.io/user"] = "bob"
    with pytest.raises(SandboxError, match="its namespace is not ready") as e:
        asyncio.run(backend.launch(spec, one_shot=True))
    assert NOT_READY[broken] in e.value.log_message
    assert not api.calls("POST")
    assert not (tmp_path / "share" / "covid-los" / ".inputs" / RID).exists()
