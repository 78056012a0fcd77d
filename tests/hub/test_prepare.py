"""``ecluse hub-prepare`` (:mod:`ecluse.hub.prepare`): what root does before a hub of its
own user (``hub.service_user``) starts, with a real system user and real file modes."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecluse.config import load_settings
from ecluse.dev.serviceusers import DEFAULT_USERS, ensure_system_user
from ecluse.dev.testing import write_config
from ecluse.hub.prepare import prepare
from tests.stack.test_service_users import try_read_as
from tests.support import leftovers

pytestmark = pytest.mark.root
HUB_USER = DEFAULT_USERS["hub"]


@pytest.fixture
def folder() -> Iterator[Path]:
    """A folder others may traverse (pytest's are private: every read would be refused
    whatever the modes inside)."""
    root = Path(tempfile.mkdtemp(prefix="ecluse-prepare-", dir="/tmp"))
    os.chmod(root, 0o755)
    leftovers.register(root)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _reader(user: pwd.struct_passwd) -> subprocess.Popen:
    """A process of ``user``'s uid and gid (try_read_as reads its ids from /proc)."""
    import time

    proc = subprocess.Popen(["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                             "--clear-groups", sys.executable, "-c",
                             "import time; time.sleep(120)"])
    deadline = time.monotonic() + 30
    while Path(f"/proc/{proc.pid}").stat().st_uid != user.pw_uid:  # setpriv switched
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    return proc


def test_the_hub_gets_its_own_files_and_nothing_else(folder, slapd):
    """The hub's secrets moved into ``<state>/hub`` (its user's, 0700), each service's
    token in both places (root's copy for the services' units, the hub's copy), the
    services' folders given to their users; the hub's uid reads its own files but not
    root's secrets nor the services' tokens there. Run twice: nothing changes."""
    config = write_config(folder / "cfg", slapd, overrides={
        "hub.service_user": HUB_USER, "state_volume.mode": "none",
        "airlock.service_user": DEFAULT_USERS["airlock"]})
    settings = load_settings(config)
    settings.state_dir.mkdir(parents=True)
    os.chmod(settings.state_dir, 0o711)
    hub = ensure_system_user(HUB_USER)
    ensure_system_user(DEFAULT_USERS["airlock"])
    # an earlier root hub's secrets, in <state>/secrets
    from ecluse.secrets import ensure_secrets

    old = ensure_secrets(settings.state_dir)
    prepare(settings)
    prepare(settings)  # idempotent
    own = settings.state_dir / "hub"
    assert (own.stat().st_uid, stat.S_IMODE(own.stat().st_mode)) == (hub.pw_uid, 0o700)
    assert (own / "secrets" / "cookie_secret").read_text().strip() == old["cookie_secret"]
    assert not (settings.state_dir / "secrets" / "cookie_secret").exists()
    root_secrets = settings.state_dir / "secrets"
    tokens = sorted(root_secrets.glob("service-token-*"))
    assert "service-token-airlock" in {p.name for p in tokens}
    for token in tokens:
        assert token.stat().st_uid == 0 and stat.S_IMODE(token.stat().st_mode) == 0o600
        assert (own / "secrets" / token.name).read_text() == token.read_text()
    staging = settings.airlock.resolved_storage_dir(settings.state_dir)
    assert staging.stat().st_uid == pwd.getpwnam(DEFAULT_USERS["airlock"]).pw_uid

    reader = _reader(hub)
    try:
        refused = try_read_as(reader.pid, *tokens)
        assert set(refused.values()) == {"PermissionError"}, refused
        assert set(try_read_as(reader.pid, own / "secrets" / "cookie_secret",
                               own / "secrets" / "proxy_token").values()) == {"read"}
    finally:
        reader.kill()
        reader.wait(10)


def test_it_runs_as_root_for_a_hub_of_its_own_user_only(folder, slapd):
    settings = load_settings(write_config(folder / "cfg", slapd,
                                          overrides={"state_volume.mode": "none"}))
    with pytest.raises(ValueError, match="hub.service_user is not set"):
        prepare(settings)
    assert not (settings.state_dir / "hub").exists()
