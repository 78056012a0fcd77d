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
          "NetworkPolicy": "V1NetworkPolicy"}


def documents() -> list[dict]:
    return [d for p in sorted((ROOT / "config" / "kubernetes").glob("*.yaml"))
            for d in yaml.safe_load_all(p.read_text()) if d]


@pytest.mark.parametrize("doc", documents(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_every_manifest_loads_into_its_model(doc):
    load_model(doc, MODELS[doc["kind"]])


def test_the_hub_role_grants_only_sandbox_objects():
    (role,) = [d for d in documents() if d["kind"] == "ClusterRole"]
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
