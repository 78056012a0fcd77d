"""The airlock's checks as Kubernetes Jobs (ecluse.airlock.kubecheck), against a recording
API server: the checker of a ``backend: kubernetes`` deployment submits a Job of the check
namespace, the test plays the kubelet (the pod's output and exit) and checks the objects."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from ecluse.airlock.checkbox import CHECK_DIR, SandboxChecker
from ecluse.airlock.checkjob import LEDGER_DIR, RESULT_MARK
from ecluse.airlock.kubecheck import (
    KubernetesCheckSandbox,
    check_job_problems,
    deny_all_policy,
    deny_all_problems,
)
from ecluse.config import Dataset, LDAPSettings, Project, Quota, SandboxSettings, Settings
from ecluse.sdc import DisclosurePolicy
from ecluse.settings.airlock import AirlockSettings
from tests.support.kubeapi import RecordingApiServer, kubeconfig, load_model

NS = "ecluse-airlock-checks"


@pytest.fixture
def api():
    server = RecordingApiServer().start()
    try:
        yield server
    finally:
        server.stop()
    assert not server.refused, server.refused


@pytest.fixture
def deployment(tmp_path, api) -> Settings:
    ldap = LDAPSettings(uri="ldap://127.0.0.1:3890", base_dn="dc=t", bind_dn="cn=s,dc=t",
                        user_search_base="ou=p,dc=t", group_search_base="ou=g,dc=t")
    (tmp_path / "share").mkdir()
    project = Project(slug="covid-los", title="LOS", ldap_group="p-covid", gid=7001,
                      datasets=[Dataset(name="stays", path=Path("/srv/data/stays"))],
                      quota=Quota(cpu=2, memory="4G", disk="50G", pids=256))
    return Settings(state_dir=tmp_path / "state", ldap=ldap, projects={"covid-los": project},
                    airlock=AirlockSettings(check_timeout=30, check_memory="512M"),
                    sandbox=SandboxSettings(
                        backend="kubernetes", image="ecluse/workspace:1.2",
                        kubernetes={"kubeconfig": str(kubeconfig(tmp_path / "kc", api)),
                                    "check_root": str(tmp_path / "share"),
                                    "check_image": "ecluse/hub:9.9", "start_timeout": 30}))


def closed_namespace(api: RecordingApiServer, policy=None) -> None:
    """What the operator applies once (config/kubernetes/ecluse-airlock.yaml)."""
    api.objects[("namespaces", "", NS)] = {"apiVersion": "v1", "kind": "Namespace",
                                           "metadata": {"name": NS}}
    if policy is not False:
        api.objects[("networkpolicies", NS, "deny-all")] = policy or deny_all_policy(NS)


def kubelet(api: RecordingApiServer, tmp_path: Path, seen: dict, output: str,
            exit_code: int = 0) -> threading.Thread:
    """Wait for the check Job's pod; note what the pod would see; print, exit."""
    def play() -> None:
        for _ in range(1200):
            pods = api.pods("ecluse.io/one-shot=1")
            if pods:
                pod = pods[0]
                sid = next(e["value"] for e in pod["spec"]["containers"][0]["env"]
                           if e["name"] == "ECLUSE_CHECK_ID")
                share = tmp_path / "share" / sid
                seen["files"] = sorted(str(p.relative_to(share)) for p in share.rglob("*"))
                seen["object"] = (share / "0" / "in" / "counts.csv").read_bytes() \
                    if (share / "0" / "in").exists() else None
                seen["share"] = share
                api.logs[(NS, pod["metadata"]["name"])] = output
                api.set_phase(NS, pod["metadata"]["name"],
                              "Succeeded" if exit_code == 0 else "Failed", exit_code=exit_code)
                return
            time.sleep(0.05)

    t = threading.Thread(target=play)
    t.start()
    return t


def the_job(api: RecordingApiServer) -> dict:
    return next(r[3] for r in api.requests if r[0] == "POST" and r[1].endswith("/jobs"))


def test_a_check_is_a_job_of_the_closed_namespace_with_a_read_only_copy(
        api, deployment, tmp_path):
    closed_namespace(api)
    staged = tmp_path / "staged"
    staged.write_bytes(b"age,n\n40-49,12\n")
    checker = SandboxChecker(deployment, deployment.airlock)
    assert isinstance(checker.backend, KubernetesCheckSandbox)
    answer = {"report": {"verdict": "pass", "format": "csv", "findings": []},
              "preview": {"kind": "table"}}
    seen: dict = {}
    t = kubelet(api, tmp_path, seen, "noise\n" + RESULT_MARK + json.dumps(answer) + "\n")
    try:
        result = checker(staged, "counts.csv", DisclosurePolicy(), tmp_path)
    finally:
        t.join(60)
    assert result["report"]["verdict"] == "pass"
    assert seen["object"] == b"age,n\n40-49,12\n"  # the object reached the Job
    assert not seen["share"].exists()  # its copy is gone with the Job
    assert not [k for k in api.objects if k[0] in ("jobs", "pods")]
    job = the_job(api)
    load_model(job, "V1Job")
    assert job["metadata"]["namespace"] == NS
    assert check_job_problems(job, namespace=NS, project=job["metadata"]["labels"][
        "ecluse.io/project"], claim="airlock-checks") == []
    tmpl = job["spec"]["template"]["spec"]
    ctr = tmpl["containers"][0]
    assert ctr["image"] == "ecluse/hub:9.9"
    mounts = {m["mountPath"]: m for m in ctr["volumeMounts"]}
    # no data, no project folder, no home, no inbox; the object read-only
    assert set(mounts) == {"/tmp", CHECK_DIR}
    assert mounts[CHECK_DIR]["readOnly"] is True and mounts[CHECK_DIR]["subPath"].endswith("/0")
    vols = {v["name"]: v for v in tmpl["volumes"]}
    assert vols["check-share"]["persistentVolumeClaim"] == {"claimName": "airlock-checks",
                                                            "readOnly": True}
    assert ctr["resources"]["limits"]["memory"] == str(512 * 2**20)
    assert tmpl["automountServiceAccountToken"] is False
    assert isinstance(job["spec"]["activeDeadlineSeconds"], int)
    # the airlock made nothing else: no namespace, policy, claim or quota of its own
    assert {r[1].rsplit("/", 1)[-1] for r in api.calls("POST")} == {"jobs"}
    assert api.calls("GET", f"/namespaces/{NS}/networkpolicies/deny-all")


@pytest.mark.parametrize("policy", [
    False,  # none: check pods would have the network
    {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
     "metadata": {"name": "deny-all", "namespace": NS},
     "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
              "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]}},
    {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
     "metadata": {"name": "deny-all", "namespace": NS},
     "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}},
], ids=["missing", "egress-opened", "ingress-only"])
def test_a_namespace_open_to_the_network_runs_no_check(api, deployment, tmp_path, policy):
    closed_namespace(api, policy)
    staged = tmp_path / "staged"
    staged.write_bytes(b"age,n\n40-49,12\n")
    checker = SandboxChecker(deployment, deployment.airlock)
    result = checker(staged, "counts.csv", DisclosurePolicy(), tmp_path)
    assert result["report"]["verdict"] == "review"  # fail closed
    assert not api.calls("POST")
    assert not list((tmp_path / "share").iterdir())


def test_differencing_gets_the_ledger_read_only_and_a_crash_is_review(
        api, deployment, tmp_path):
    closed_namespace(api)
    checker = SandboxChecker(deployment, deployment.airlock)
    seen: dict = {}
    t = kubelet(api, tmp_path, seen, "Traceback ...\n", exit_code=1)
    try:
        with pytest.raises(RuntimeError):
            checker.difference([{"name": "a.csv"}], [{"scope": "x"}], DisclosurePolicy(),
                               tmp_path)
    finally:
        t.join(60)
    assert "1/ledger.json" in seen["files"] and "0/job.json" in seen["files"]
    mounts = {m["mountPath"]: m for m in
              the_job(api)["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert mounts[LEDGER_DIR]["readOnly"] is True


def test_an_altered_check_job_is_refused(deployment):
    backend = KubernetesCheckSandbox(settings=deployment)
    from ecluse.sandbox import Mount, SandboxSpec, UserIdentity

    spec = SandboxSpec(Project(slug="airlock-check-1", title="c", ldap_group="-", gid=64900,
                               quota=Quota(cpu=1, memory="512M", pids=64)),
                       UserIdentity("ecluse-check", 64900, 64900), ["python"],
                       env={"ECLUSE_CHECK_ID": "c1"},
                       extra_mounts=[Mount(Path("/x"), CHECK_DIR, True)], name="airlock-check")
    job = backend.build_job(spec, "k1")
    assert check_job_problems(job, namespace=NS, project="airlock-check-1",
                              claim="airlock-checks") == []
    tmpl = job["spec"]["template"]["spec"]
    tmpl["volumes"].append({"name": "data-stays", "persistentVolumeClaim": {
        "claimName": "data-stays", "readOnly": True}})
    tmpl["containers"][0]["volumeMounts"].append({"name": "data-stays",
                                                  "mountPath": "/data/stays"})
    tmpl["containers"][0]["volumeMounts"][1]["readOnly"] = False
    del job["spec"]["activeDeadlineSeconds"]
    found = " | ".join(check_job_problems(job, namespace=NS, project="airlock-check-1",
                                          claim="airlock-checks"))
    for what in ("claim data-stays", "/data/stays mounted", f"{CHECK_DIR} writable",
                 "activeDeadlineSeconds"):
        assert what in found
    assert deny_all_problems(deny_all_policy(NS), NS) == []
