"""``ecluse check``: output, JSON, exit codes and policy sources."""

from __future__ import annotations

import json

import pytest
import yaml

from ecluse.cli import main


@pytest.fixture
def files(tmp_path):
    safe = tmp_path / "safe.csv"
    safe.write_text("ward,n\nA,40\nB,50\n")
    ten = tmp_path / "ten.csv"
    ten.write_text("ward,n\nA,40\nB,10\n")
    ids = tmp_path / "ids.csv"
    ids.write_text("patient_id,age\nP1,40\n")
    return safe, ten, ids


def test_exit_codes(files, capsys):
    safe, ten, ids = files
    assert main(["check", str(safe)]) == 0
    assert main(["check", str(safe), str(ids)]) == 1
    out = capsys.readouterr().out
    assert "block" in out and "identifier-column" in out
    assert main(["check", str(safe.parent / "missing.csv")]) == 2
    with pytest.raises(SystemExit) as e:
        main(["check"])
    assert e.value.code == 2


def test_json_output(files, capsys):
    safe, ten, ids = files
    assert main(["check", "--json", str(safe), str(ids)]) == 1
    data = json.loads(capsys.readouterr().out)
    assert [f["verdict"] for f in data["files"]] == ["pass", "block"]
    assert {"path", "verdict", "format", "findings"} <= set(data["files"][0])
    assert data["files"][1]["findings"][0]["rule"] == "identifier-column"


def test_policy_file(files, tmp_path, capsys):
    safe, ten, ids = files
    pol = tmp_path / "policy.yaml"
    pol.write_text(yaml.safe_dump({"threshold": 11}))
    assert main(["check", str(ten)]) == 0
    assert main(["check", "--policy", str(pol), "--json", str(ten)]) == 1
    capsys.readouterr()
    pol.write_text(yaml.safe_dump({"thresold": 11}))
    assert main(["check", "--policy", str(pol), str(ten)]) == 2
    assert "thresold" in capsys.readouterr().err


def test_project_policy_from_config(files, tmp_path, capsys):
    safe, ten, ids = files
    cfg = tmp_path / "ecluse.yaml"
    cfg.write_text(yaml.safe_dump({
        "state_dir": str(tmp_path / "state"), "projects_file": "projects.yaml",
        "ldap": {"uri": "ldap://127.0.0.1:3890", "security": "none", "base_dn": "dc=x",
                 "bind_dn": "cn=s,dc=x", "user_search_base": "ou=p,dc=x",
                 "group_search_base": "ou=g,dc=x"},
        "disclosure": {"threshold": 10}}))
    (tmp_path / "projects.yaml").write_text(yaml.safe_dump({"projects": {
        "cardio-los": {"title": "t", "ldap_group": "g", "disclosure": {"threshold": 11}},
        "air-quality": {"title": "t", "ldap_group": "h"}}}))
    assert main(["check", "--config", str(cfg), "--project", "air-quality", str(ten)]) == 0
    capsys.readouterr()
    assert main(["check", "--config", str(cfg), "--project", "cardio-los", "--json",
                 str(ten)]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["files"][0]["policy"]["threshold"] == 11
    assert main(["check", "--config", str(cfg), "--project", "nope", str(ten)]) == 2
