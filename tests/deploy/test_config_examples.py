"""The production examples under config/examples load and say what they claim."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ecluse.config import load_settings

EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples"


def test_every_example_is_tested():
    # z2jh-values.yaml: Helm values, tested in tests/deploy/test_kubernetes_manifests.py
    names = {p.name for p in EXAMPLES.glob("*.yaml")} - {"projects.yaml", "z2jh-values.yaml"}
    assert names == {"hub-docker.yaml", "hub-kubernetes.yaml", "ldaps-active-directory.yaml"}


@pytest.mark.parametrize("name,backend", [("hub-docker.yaml", "docker"),
                                          ("hub-kubernetes.yaml", "kubernetes"),
                                          ("ldaps-active-directory.yaml", "local")])
def test_example_loads(name, backend):
    settings = load_settings(EXAMPLES / name)
    assert settings.sandbox.backend == backend
    assert settings.ldap.security == "ldaps" and settings.ldap.uri.startswith("ldaps://")
    assert not settings.ldap.embedded
    assert set(settings.projects) == {"cardio-los", "air-quality"}
    assert settings.policy_for("cardio-los").threshold == 11


def test_active_directory_example():
    s = load_settings(EXAMPLES / "ldaps-active-directory.yaml")
    assert s.ldap.username_attribute == "sAMAccountName"
    assert s.ldap.user_object_class == "user"
    assert s.ldap.group_member_attributes == ["member"]
    assert s.ldap.ca_file == Path("/etc/ecluse/ad-root-ca.pem")


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_hold_no_secret(path):
    text = path.read_text().lower()
    if path.name == "z2jh-values.yaml":  # Helm values: a Secret *volume* is named there
        text = text.replace("secret: {secretname: ecluse-secrets", "")
        # the services' tokens, read from their Secrets (a reference, not a value)
        text = re.sub(r"ecluse_(airlock|batch)_api_token:\n\s+valuefrom: \{secretkeyref:",
                      "", text)
    for word in ("password:", "secret:", "token:", "bind_password: "):
        assert word not in text, f"{path.name} assigns a secret ({word})"
