"""The Kubernetes deployment files: the extra manifests load into the API's models and
grant no more than they say; the zero-to-jupyterhub values run Écluse's configuration.

No cluster: each document of config/kubernetes/*.yaml is loaded into the
``kubernetes`` client's model of its kind (no unknown field, right types).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.support.kubeapi import load_model

ROOT = Path(__file__).resolve().parents[2]
MODELS = {"ClusterRole": "V1ClusterRole", "ClusterRoleBinding": "V1ClusterRoleBinding",
          "PersistentVolumeClaim": "V1PersistentVolumeClaim", "Ingress": "V1Ingress",
          "NetworkPolicy": "V1NetworkPolicy", "Namespace": "V1Namespace",
          "ResourceQuota": "V1ResourceQuota", "LimitRange": "V1LimitRange",
          "ServiceAccount": "V1ServiceAccount", "Role": "V1Role",
          "RoleBinding": "V1RoleBinding", "Deployment": "V1Deployment", "Service": "V1Service"}


def documents() -> list[dict]:
    return [d for p in sorted((ROOT / "config" / "kubernetes").glob("*.yaml"))
            for d in yaml.safe_load_all(p.read_text()) if d]


@pytest.mark.parametrize("doc", documents(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_every_manifest_loads_into_its_model(doc):
    load_model(doc, MODELS[doc["kind"]])


def test_the_hub_role_grants_only_sandbox_objects():
    (role,) = [d for d in documents() if d["kind"] == "ClusterRole"
               and d["metadata"]["name"] == "ecluse-hub-sandboxes"]
    granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"]
               for r in rule["resources"] for v in rule["verbs"]}
    resources = {r for _, r, _ in granted}
    assert resources == {"namespaces", "pods", "pods/log", "persistentvolumeclaims",
                         "configmaps", "resourcequotas", "limitranges", "jobs",
                         "networkpolicies"}
    assert not any(v in ("*", "escalate", "bind", "impersonate") for _, _, v in granted)
    assert ("", "namespaces", "delete") not in granted  # a project's data is never dropped
    assert ("", "secrets", "get") not in granted
    # what the backend calls (tests/sandbox/test_kubernetes_lifecycle.py) is granted
    for need in [("", "pods", "create"), ("", "pods", "delete"), ("", "pods/log", "get"),
                 ("", "pods", "list"), ("", "pods", "deletecollection"),
                 ("batch", "jobs", "create"), ("networking.k8s.io", "networkpolicies", "update"),
                 ("", "configmaps", "update"), ("", "limitranges", "update")]:
        assert need in granted, need


def test_z2jh_values_run_ecluse():
    values = yaml.safe_load((ROOT / "config" / "examples" / "z2jh-values.yaml").read_text())
    hub = values["hub"]
    assert hub["image"]["name"].endswith("/ecluse/hub")
    assert "configure_from_env(c)" in hub["extraConfig"]["ecluse"]
    assert "c.ConfigurableHTTPProxy.should_start = True" in hub["extraConfig"]["ecluse"]
    assert hub["extraEnv"]["ECLUSE_CONFIG"] == "/etc/ecluse/ecluse.yaml"
    assert hub["extraEnv"]["ECLUSE_CLEANUP_SERVERS"] == "0"  # workspaces outlive a restart
    ports = {p["name"]: p["port"] for p in hub["service"]["extraPorts"]}
    assert ports == {"http-ecluse": 8000, "airlock": 8090}
    (rule,) = hub["networkPolicy"]["ingress"]
    assert [p["port"] for p in rule["ports"]] == [8081, 8090]
    assert rule["from"][0]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/component": "ecluse-sandbox"}
    # the chart's own user pods and policies stay out of the way
    assert values["singleuser"]["networkPolicy"]["enabled"] is False
    assert values["cull"]["enabled"] is False and values["ingress"]["enabled"] is False
    secrets = next(v for v in hub["extraVolumes"] if v["name"] == "ecluse-secrets")
    assert secrets["secret"] == {"secretName": "ecluse-secrets", "defaultMode": 0o400}


def doc(kind: str, name: str) -> dict:
    (found,) = [d for d in documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def grants(role: dict) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"]
            for r in rule["resources"] for v in rule["verbs"]}


DANGEROUS = {"*", "escalate", "bind", "impersonate", "create-token"}


def bindings_of(account: str) -> list[dict]:
    return [d for d in documents() if d["kind"] in ("RoleBinding", "ClusterRoleBinding")
            and any(s.get("name") == account for s in d["subjects"])]


def test_the_airlock_may_run_jobs_in_the_check_namespace_only():
    role = doc("Role", "ecluse-airlock-checks")
    assert role["metadata"]["namespace"] == "ecluse-airlock-checks"
    assert {r for _, r, _ in grants(role)} == {"jobs", "pods", "pods/log", "networkpolicies"}
    assert ("batch", "jobs", "create") in grants(role)
    assert not {v for *_, v in grants(role)} & DANGEROUS
    # the policy: read back, never changed; only the deny-all one
    assert {v for _, r, v in grants(role) if r == "networkpolicies"} == {"get"}
    (rule,) = [r for r in role["rules"] if "networkpolicies" in r["resources"]]
    assert rule["resourceNames"] == ["deny-all"]
    (binding,) = bindings_of("ecluse-airlock")
    assert binding["kind"] == "RoleBinding"  # never cluster-wide
    assert binding["metadata"]["namespace"] == "ecluse-airlock-checks"
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": "ecluse-airlock-checks"}


def test_the_check_namespace_is_closed_to_the_network():
    from ecluse.airlock.kubecheck import deny_all_problems

    ns = doc("Namespace", "ecluse-airlock-checks")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert deny_all_problems(doc("NetworkPolicy", "deny-all"), "ecluse-airlock-checks") == []
    claims = [d for d in documents() if d["kind"] == "PersistentVolumeClaim"
              and d["metadata"].get("namespace") == "ecluse-airlock-checks"]
    assert [c["metadata"]["name"] for c in claims] == ["airlock-checks"]  # no data claim


def test_batch_may_run_jobs_in_project_namespaces_only():
    role = doc("ClusterRole", "ecluse-batch-jobs")
    g = grants(role)
    assert {r for _, r, _ in g} == {"jobs", "pods", "pods/log", "networkpolicies",
                                    "persistentvolumeclaims"}
    creates = {(grp, r) for grp, r, v in g if v in ("create", "update", "patch")}
    assert creates == {("batch", "jobs")}  # it makes Jobs, nothing else
    assert not {v for *_, v in g} & DANGEROUS
    for binding in bindings_of("ecluse-batch"):
        assert binding["kind"] == "RoleBinding"  # per project namespace, never cluster-wide
        assert binding["metadata"]["namespace"].startswith("ecluse-")
        assert binding["metadata"]["namespace"] not in ("ecluse", "ecluse-airlock-checks")


@pytest.mark.parametrize("name", ["ecluse-airlock", "ecluse-batch"])
def test_the_service_deployments_run_unprivileged_with_their_own_account(name):
    dep = doc("Deployment", name)
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == name
    assert pod["securityContext"]["runAsNonRoot"] is True
    (ctr,) = pod["containers"]
    sc = ctr["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert ctr["resources"]["limits"]["memory"]
    svc = doc("Service", name)
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    policy = doc("NetworkPolicy", name)
    assert sorted(policy["spec"]["policyTypes"]) == ["Egress", "Ingress"]
