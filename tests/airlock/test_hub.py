"""The hub service entry, roles and settings handed to the lead's hub config."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from ecluse.airlock import AirlockSettings, airlock_roles, airlock_service_spec, airlock_settings
from ecluse.cli import build_parser
from ecluse.hubservice import service_user_cannot_run


def test_service_spec_defaults_to_loopback_and_hub_oauth():
    settings = SimpleNamespace(config_file=Path("/etc/ecluse/ecluse.yaml"),
                               state_dir=Path("/var/lib/ecluse"))
    spec = airlock_service_spec(settings)
    assert spec["name"] == "airlock"
    assert spec["url"] == "http://127.0.0.1:8090"
    assert spec["command"][:5] == [sys.executable, "-m", "ecluse", "airlock", "serve"]
    assert "--config" in spec["command"] and "/var/lib/ecluse" in spec["command"]
    assert spec["oauth_no_confirm"] is True
    assert spec["oauth_client_allowed_scopes"] == [
        "access:services!service=airlock", "read:users:groups!user"]
    assert "api_token" not in spec  # the hub generates the service's token


def test_service_spec_keeps_config_and_state_with_the_directory_password(monkeypatch):
    """The service password was once set by replacing the whole environment,
    dropping ECLUSE_CONFIG and ECLUSE_STATE_DIR."""
    monkeypatch.setenv("ECLUSE_TEST_BIND_PW", "s3cret")
    settings = SimpleNamespace(config_file=Path("/etc/ecluse/ecluse.yaml"),
                               state_dir=Path("/var/lib/ecluse"),
                               ldap=SimpleNamespace(bind_password_env="ECLUSE_TEST_BIND_PW"))
    assert airlock_service_spec(settings)["environment"] == {
        "ECLUSE_STATE_DIR": "/var/lib/ecluse", "ECLUSE_CONFIG": "/etc/ecluse/ecluse.yaml",
        "ECLUSE_TEST_BIND_PW": "s3cret"}


def test_service_spec_follows_airlock_settings():
    settings = SimpleNamespace(config_file=None, state_dir=Path("/s"),
                               airlock=AirlockSettings(port=9999, ip="127.0.0.2"))
    assert airlock_service_spec(settings)["url"] == "http://127.0.0.2:9999"


def test_roles_are_least_privilege():
    roles = airlock_roles()
    assert roles == [{
        "name": "ecluse-airlock-service",
        "description": roles[0]["description"],
        "scopes": ["read:users:groups"],
        "services": ["airlock"],
    }]


def test_settings_defaults_validation_and_fallback():
    conf = AirlockSettings()
    assert (conf.port, conf.ip, conf.required_approvals) == (8090, "127.0.0.1", 2)
    assert conf.resolved_storage_dir(Path("/s")) == Path("/s/airlock")
    assert conf.resolved_database_url(Path("/s")) == "sqlite:////s/airlock/airlock.sqlite"
    assert airlock_settings(SimpleNamespace()) == conf
    assert airlock_settings(SimpleNamespace(airlock={"required_approvals": 3})
                            ).required_approvals == 3
    with pytest.raises(ValidationError):
        AirlockSettings(required_approvals=0)
    with pytest.raises(ValidationError):
        AirlockSettings(surprise=1)


def test_cli_has_serve_migrate_list():
    args = build_parser().parse_args(["airlock", "migrate", "--state-dir", "/tmp/x"])
    assert args.airlock_command == "migrate" and args.state_dir == "/tmp/x"
    assert build_parser().parse_args(["airlock", "--config", "c.yaml", "serve"]).config == "c.yaml"


def test_service_user_sets_the_hub_entry_user_and_cwd():
    """The hub runs the airlock as the configured system user, from / (not the hub's
    folder, which that user may not read)."""
    assert os.geteuid() == 0, "the hub switches users only as root (this suite runs as root)"
    settings = SimpleNamespace(config_file=None, state_dir=Path("/s"),
                               airlock=AirlockSettings(service_user="nobody"))
    spec = airlock_service_spec(settings)
    assert (spec["user"], spec["cwd"]) == ("nobody", "/")
    plain = airlock_service_spec(SimpleNamespace(config_file=None, state_dir=Path("/s")))
    assert "user" not in plain and "cwd" not in plain  # unset: the hub's own user


def test_service_user_that_does_not_exist_fails_closed():
    settings = SimpleNamespace(config_file=None, state_dir=Path("/s"),
                               airlock=AirlockSettings(service_user="ecluse-no-such-user"))
    with pytest.raises(ValueError, match="'ecluse-no-such-user' is not a user on this machine"):
        airlock_service_spec(settings)
    with pytest.raises(ValidationError):
        AirlockSettings(service_user="root; rm -rf /")


def test_service_user_cannot_run_an_interpreter_under_a_private_folder(tmp_path):
    """A virtualenv under /root (0700) is not reachable by the service user: said, not
    discovered when the hub fails to start the service."""
    private = tmp_path / "home"
    private.mkdir(mode=0o700)
    python = private / "python"
    python.symlink_to(sys.executable)
    problem = service_user_cannot_run("nobody", str(python))
    assert problem == f"'nobody' cannot run {python}: [Errno 13] Permission denied: '{python}'"
    assert "not a user" in service_user_cannot_run("ecluse-no-such-user")
