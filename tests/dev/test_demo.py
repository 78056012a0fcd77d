"""The demo users' second factor: seeded at ``make up``, migrated from an earlier
state directory, enrolled in the hub's store, shown by ``ecluse dev totp``."""

from __future__ import annotations

import json
import time

from ecluse.cli import main
from ecluse.config import load_settings
from ecluse.dev.ldapserver import DEMO_USERS, EmbeddedSlapd
from ecluse.dev.stack import Stack
from ecluse.hub.mfa import TotpStore, code_at, counter_at


def test_seeded_demo_users_have_a_password_and_a_totp_secret(tmp_path):
    with EmbeddedSlapd(tmp_path / "ldap") as server:
        users = server.seed_demo(tmp_path / "demo-users.json")
    on_disk = json.loads((tmp_path / "demo-users.json").read_text())
    assert on_disk == users
    assert set(on_disk) == {u.uid for u in DEMO_USERS}
    for entry in on_disk.values():
        assert set(entry) == {"password", "totp"} and len(entry["totp"]) == 32
    assert (tmp_path / "demo-users.json").stat().st_mode & 0o777 == 0o600


def test_earlier_state_directory_is_migrated_and_enrolled(settings, capsys):
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    path = settings.state_dir / "demo-users.json"
    path.write_text(json.dumps({"alice": "old-password-1", "bob": "old-password-2"}))
    path.chmod(0o600)
    stack = Stack(settings)
    stack.enrol_demo_users()
    users = json.loads(path.read_text())
    assert users["alice"]["password"] == "old-password-1"  # passwords kept
    assert users["bob"]["password"] == "old-password-2"
    assert path.stat().st_mode & 0o777 == 0o600
    store = TotpStore.from_settings(settings)
    assert store.users() == ["alice", "bob"]
    assert store.secret("alice") == users["alice"]["totp"]
    # the next `make up` changes nothing: same secrets, still enrolled
    stack.enrol_demo_users()
    assert json.loads(path.read_text()) == users
    # `ecluse dev totp alice` prints the code the hub accepts now
    code = None
    for _ in range(3):
        before = counter_at(time.time())
        assert main(["dev", "totp", "alice", "--config", str(settings.config_file),
                     "--state-dir", str(settings.state_dir)]) == 0
        code = capsys.readouterr().out.strip()
        if counter_at(time.time()) == before:
            break
    assert code == code_at(users["alice"]["totp"], counter_at(time.time()))
    assert store.verify("alice", code).kind == "totp"
    assert main(["dev", "totp", "zoe", "--config", str(settings.config_file),
                 "--state-dir", str(settings.state_dir)]) == 2
    assert "not a demo user" in capsys.readouterr().err


def test_a_user_enrolled_again_keeps_their_own_factor(settings):
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    path = settings.state_dir / "demo-users.json"
    path.write_text(json.dumps({"alice": {"password": "p", "totp": "A" * 32}}))
    store = TotpStore.from_settings(settings)
    store.enrol("alice", "B" * 32)  # reset by staff, enrolled again on her phone
    Stack(load_settings(settings.config_file)).enrol_demo_users()
    assert store.secret("alice") == "B" * 32
