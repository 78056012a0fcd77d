"""Config loading: every error names the file, the key and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ecluse.cli import main
from ecluse.config import ConfigError, load_settings, parse_size

REPO = Path(__file__).resolve().parents[1]

MINIMAL_LDAP = {
    "uri": "ldap://127.0.0.1:3890",
    "security": "none",
    "base_dn": "dc=x",
    "bind_dn": "cn=svc,dc=x",
    "user_search_base": "ou=people,dc=x",
    "group_search_base": "ou=groups,dc=x",
}


def write(tmp_path: Path, config: dict | str, projects: dict | str | None = None) -> Path:
    path = tmp_path / "ecluse.yaml"
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
    if projects is None:
        projects = {"projects": {}}
    (tmp_path / "projects.yaml").write_text(
        projects if isinstance(projects, str) else yaml.safe_dump(projects)
    )
    return path


def test_repository_config_is_valid():
    settings = load_settings(REPO / "config" / "ecluse.yaml")
    assert set(settings.projects) == {"cardio-los", "air-quality"}
    assert settings.policy_for("cardio-los").threshold == 11
    assert settings.policy_for("air-quality").threshold == 10
    assert settings.projects["cardio-los"].quota.memory == 2 * 1024**3
    # relative paths resolve against the config file's directory
    assert settings.state_dir == (REPO / ".ecluse").resolve()


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_settings(tmp_path / "nope.yaml")
    assert str(e.value) == f"{tmp_path / 'nope.yaml'}: no such config file"


def test_malformed_yaml_names_line_and_column(tmp_path):
    path = write(tmp_path, "ldap:\n  uri: [unclosed\n")
    with pytest.raises(ConfigError) as e:
        load_settings(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: line ")
    assert "column" in msg and "malformed YAML" in msg


def test_unknown_key_lists_expected_keys(tmp_path):
    path = write(tmp_path, {"ldap": {**MINIMAL_LDAP, "uri_typo": "x"}})
    with pytest.raises(ConfigError) as e:
        load_settings(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ldap.uri_typo: unknown key; expected one of: ")
    assert "connect_timeout" in msg


def test_unknown_top_level_key(tmp_path):
    path = write(tmp_path, {"ldap": MINIMAL_LDAP, "hubb": {}})
    with pytest.raises(ConfigError, match=r"hubb: unknown key; expected one of: .*ldap"):
        load_settings(path)


def test_wrong_type(tmp_path):
    path = write(tmp_path, {"ldap": {**MINIMAL_LDAP, "connect_timeout": "soon"}})
    with pytest.raises(ConfigError) as e:
        load_settings(path)
    assert str(e.value) == f"{path}: ldap.connect_timeout: expected a number, got 'soon'"


def test_missing_required_key(tmp_path):
    ldap = dict(MINIMAL_LDAP)
    del ldap["bind_dn"]
    path = write(tmp_path, {"ldap": ldap})
    with pytest.raises(ConfigError) as e:
        load_settings(path)
    assert str(e.value) == f"{path}: ldap.bind_dn: required key is missing"


def test_several_errors_are_all_reported(tmp_path):
    path = write(tmp_path, {"ldap": {**MINIMAL_LDAP, "connect_timeout": "x"},
                            "hub": {"port": "http"}})
    with pytest.raises(ConfigError) as e:
        load_settings(path)
    lines = str(e.value).splitlines()
    assert len(lines) == 2
    assert any("hub.port: expected an integer" in line for line in lines)


def test_ldaps_uri_needs_ldaps_security(tmp_path):
    path = write(tmp_path, {"ldap": {**MINIMAL_LDAP, "uri": "ldaps://ad.chu.fr:636",
                                     "security": "starttls"}})
    with pytest.raises(ConfigError, match="ldap: an ldaps:// uri needs security: ldaps"):
        load_settings(path)


def test_not_a_mapping(tmp_path):
    path = write(tmp_path, "- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level, got list"):
        load_settings(path)


def test_projects_errors_name_the_projects_file(tmp_path):
    path = write(
        tmp_path,
        {"ldap": MINIMAL_LDAP},
        {"projects": {"Bad_Slug": {"title": "x", "ldap_group": "g"}}},
    )
    with pytest.raises(ConfigError) as e:
        load_settings(path)
    assert str(e.value).startswith(f"{tmp_path / 'projects.yaml'}: projects.Bad_Slug.slug: ")


def test_project_quota_and_policy_validation(tmp_path):
    path = write(
        tmp_path,
        {"ldap": MINIMAL_LDAP},
        {"projects": {"abc": {"title": "x", "ldap_group": "g", "quota": {"memory": "lots"},
                              "disclosure": {"treshold": 5}}}},
    )
    with pytest.raises(ConfigError) as e:
        load_settings(path)
    msg = str(e.value)
    assert "projects.abc.quota.memory: expected a size such as 512M or 2G" in msg
    assert "projects.abc.disclosure" in msg and "treshold" in msg


def test_duplicate_ldap_group(tmp_path):
    path = write(
        tmp_path,
        {"ldap": MINIMAL_LDAP},
        {"projects": {"aaa": {"title": "x", "ldap_group": "g"},
                      "bbb": {"title": "y", "ldap_group": "g"}}},
    )
    with pytest.raises(ConfigError, match="projects.bbb.ldap_group: 'g' is already used"):
        load_settings(path)


def test_reserved_slug(tmp_path):
    path = write(tmp_path, {"ldap": MINIMAL_LDAP},
                 {"projects": {"staff": {"title": "x", "ldap_group": "g"}}})
    with pytest.raises(ConfigError, match="reserved for a role group"):
        load_settings(path)


@pytest.mark.parametrize("value,expected", [("512M", 512 * 1024**2), ("2G", 2 * 1024**3),
                                            ("2GiB", 2 * 1024**3), (1000, 1000)])
def test_parse_size(value, expected):
    assert parse_size(value) == expected


def test_config_check_cli_masks_secrets(tmp_path, capsys, monkeypatch):
    path = write(tmp_path, {"ldap": {**MINIMAL_LDAP, "bind_password_env": "TEST_LDAP_PW"}})
    monkeypatch.setenv("TEST_LDAP_PW", "s3cret-value")
    assert main(["config", "check", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "s3cret-value" not in out
    assert "bind_password: '********'" in out


def test_config_check_cli_reports_errors(tmp_path, capsys):
    path = write(tmp_path, {"ldap": {**MINIMAL_LDAP, "receive_timeout": -1}})
    assert main(["config", "check", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: ldap.receive_timeout: " in err


def test_config_reference_documents_every_field(capsys):
    from ecluse.config import LDAPSettings

    assert main(["config", "reference"]) == 0
    out = capsys.readouterr().out
    for name in LDAPSettings.model_fields:
        assert f"`ldap.{name}`" in out


def test_generated_config_reference_is_current():
    from ecluse.docs import config_reference

    committed = (REPO / "docs" / "reference" / "config.md").read_text()
    assert committed.strip() == config_reference().strip(), (
        "docs/reference/config.md is stale: run `ecluse config reference > "
        "docs/reference/config.md`"
    )


def test_the_stacks_configuration_copy_reads_the_same_from_elsewhere(tmp_path):
    """``Stack(sandbox="docker")`` gives the hub a copy of the configuration in the state
    folder: the overrides applied, every relative path as the original resolves it."""
    from ecluse.dev.stack import config_copy

    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "projects.yaml").write_text(
        "projects:\n  proj-one: {title: P, ldap_group: g1, datasets: [{name: d, path: data/d}]}\n")
    (conf / "ecluse.yaml").write_text(
        "state_dir: ../state\nprojects_file: projects.yaml\n"
        "sandbox: {backend: local, projects_root: ../projects}\n"
        "mfa: {key_file: null}\nhub: {spawner: simple}\n"
        + yaml.safe_dump({"ldap": MINIMAL_LDAP}))
    original = load_settings(conf / "ecluse.yaml")
    elsewhere = tmp_path / "state"
    elsewhere.mkdir()
    copy = config_copy(original, elsewhere / "ecluse-docker.yaml", {
        "sandbox.backend": "docker", "sandbox.docker_url": "unix:///x.sock",
        "hub.spawner": "ecluse"})
    assert oct(copy.stat().st_mode & 0o777) == "0o600"
    loaded = load_settings(copy)
    assert loaded.sandbox.backend == "docker" and loaded.sandbox.docker_url == "unix:///x.sock"
    assert loaded.hub.spawner == "ecluse"
    for key in ("state_dir", "projects_file"):
        assert getattr(loaded, key) == getattr(original, key)
    assert loaded.sandbox.projects_root == original.sandbox.projects_root
    assert loaded.audit.key_dir == original.audit.key_dir
    assert loaded.projects["proj-one"].datasets[0].path == conf / "data/d"


@pytest.mark.root
def test_a_password_file_the_hub_user_cannot_read_says_so_and_how_out(tmp_path):
    """The hub as its own user (hub.service_user) and a password file only root reads:
    the error names the file, the user, and the two ways out."""
    import os
    import pwd
    import subprocess
    import sys

    from ecluse.dev.serviceusers import DEFAULT_USERS

    user = pwd.getpwnam(DEFAULT_USERS["hub"])
    os.chmod(tmp_path, 0o755)
    secret = tmp_path / "ldap-password"
    secret.write_text("s3cret\n")
    os.chmod(secret, 0o600)  # root's
    code = (
        "from ecluse.config import ConfigError, LDAPSettings\n"
        f"s = LDAPSettings(**{MINIMAL_LDAP!r}, bind_password_env='TEST_NOT_SET_PW', "
        f"bind_password_file={str(secret)!r})\n"
        "try:\n    s.bind_password()\nexcept ConfigError as e:\n    print(e)\n")
    env = {k: v for k, v in os.environ.items() if k != "TEST_NOT_SET_PW"}
    r = subprocess.run([sys.executable, "-c", code], user=user.pw_uid, group=user.pw_gid,
                       extra_groups=[], cwd="/", env=env, capture_output=True, text=True,
                       timeout=60, check=True)
    message = r.stdout.strip()
    assert str(secret) in message and f"{user.pw_name} (uid {user.pw_uid})" in message, r
    assert "ldap.bind_password_env (TEST_NOT_SET_PW" in message, message
    assert "s3cret" not in message + r.stderr
