"""Dask clusters on Kubernetes: dask-gateway's own backend builds the pods from the values
Écluse's options handler returns, and they keep the project's isolation.

The pods are made by the upstream ``KubeController.make_pod`` (no cluster: the
controller is never started), from the ``KubeClusterConfig`` the gateway would
build from :func:`ecluse.dask.gateway.production_options`; each is loaded into
the ``kubernetes`` client's ``V1Pod`` model and checked.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from ecluse.config import Dataset, Project, Quota
from ecluse.dask.gateway import production_options
from ecluse.dask.kube import dask_network_policy
from ecluse.sandbox.k8s_checks import network_policy_problems
from tests.support.kubeapi import load_model, model_problems


class _User:
    def __init__(self, name, groups):
        self.name, self.groups = name, groups


class _Settings:
    projects = {"cardio-los": Project(
        slug="cardio-los", title="t", ldap_group="g", gid=7002,
        datasets=[Dataset(name="omop", path=Path("/srv/data/omop"))],
        quota=Quota(cpu=2, memory="4G", dask_workers=2))}


def upstream_pods(conf: dict) -> list[dict]:
    from dask_gateway_server.backends.kubernetes.backend import KubeClusterConfig
    from dask_gateway_server.backends.kubernetes.controller import KubeController

    config = KubeClusterConfig(**conf)
    ctl = KubeController(api_url="http://127.0.0.1:1", gateway_instance="test")
    return [ctl.make_pod(conf["namespace"], "abc123", config, is_worker=w)
            for w in (False, True)]


def test_pods_of_a_project_cluster_are_isolated():
    opts = production_options(_Settings(), "kubernetes")
    conf = opts.get_configuration(opts.parse_options({"project": "cardio-los"}),
                                  _User("alice", ["cardio-los"]))
    assert conf["namespace"] == "ecluse-cardio-los"
    assert conf["worker_memory_limit"] == conf["worker_memory"]
    for pod in upstream_pods(conf):
        assert model_problems(pod, "V1Pod") == []
        load_model(pod, "V1Pod")
        spec, (ctr,) = pod["spec"], pod["spec"]["containers"]
        assert spec["automountServiceAccountToken"] is False
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["supplementalGroups"] == [7002]
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        sc = ctr["securityContext"]
        assert sc["capabilities"] == {"drop": ["ALL"]} and sc["readOnlyRootFilesystem"]
        assert sc["allowPrivilegeEscalation"] is False
        mounts = {m["mountPath"]: m for m in ctr["volumeMounts"]}
        assert mounts["/data/omop"]["readOnly"] is True and "/project" in mounts
        assert ctr["resources"]["limits"] == {
            "cpu": ctr["resources"]["requests"]["cpu"],
            "memory": ctr["resources"]["requests"]["memory"]}
        labels = pod["metadata"]["labels"]
        assert labels["ecluse.io/project"] == "cardio-los"
        assert labels["app.kubernetes.io/name"] == "dask-gateway"  # the policy selects it
        assert not any("hostPath" in v for v in spec["volumes"])
    # the gateway's project check still runs first
    with pytest.raises(ValueError, match="not a member"):
        opts.get_configuration(opts.parse_options({"project": "cardio-los"}),
                               _User("mallory", ["air-quality"]))


def test_the_dask_policy_stays_within_the_project_and_the_gateway():
    pol = dask_network_policy("cardio-los")
    load_model(pol, "V1NetworkPolicy")
    s = pol["spec"]
    assert s["policyTypes"] == ["Ingress", "Egress"]
    assert s["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "dask-gateway"}}
    for rule, way in ((s["ingress"][0], "from"), (s["egress"][0], "to")):
        peers = rule[way]
        assert all("ipBlock" not in p for p in peers)
        # the namespace's own peers are Dask pods only (never a workspace)
        own = [p for p in peers if "namespaceSelector" not in p]
        assert own == [{"podSelector": {"matchLabels": {
            "app.kubernetes.io/name": "dask-gateway"}}}]
        others = [p for p in peers if "namespaceSelector" in p]
        assert [p["namespaceSelector"] for p in others] == [
            {"matchLabels": {"kubernetes.io/metadata.name": "ecluse"}}]
    # the workspace check rejects this policy for sandboxes (Dask pods talk to each other;
    # workspaces never do): the two are kept apart by their pod selectors
    problems = network_policy_problems(copy.deepcopy(pol), namespace="ecluse-cardio-los",
                                       hub_namespaces={"ecluse"})
    assert any("project's own namespace" in p for p in problems)
