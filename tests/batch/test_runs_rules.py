"""The rules tables are complete and consistent."""

from __future__ import annotations

from ecluse.batch.hub import batch_roles, batch_service_spec
from ecluse.batch.runs import EVENTS, FINAL, OUTCOMES, TRANSITIONS, Status
from ecluse.settings.batch import BatchSettings, batch_settings


def test_every_status_has_transitions_and_final_ones_have_none() -> None:
    assert set(TRANSITIONS) == set(Status)
    for status, targets in TRANSITIONS.items():
        assert (status in FINAL) == (not targets)
    assert set(OUTCOMES) == set(FINAL)
    assert {t for ts in TRANSITIONS.values() for t in ts} | {Status.QUEUED} == set(Status)


def test_audit_events_are_namespaced() -> None:
    assert all(v.startswith("batch.") for v in EVENTS.values())
    assert {"submit", "start", "finish", "cancel", "export", "share", "read",
            "denied"} == set(EVENTS)


def test_hub_spec_and_roles(settings) -> None:
    spec = batch_service_spec(settings)
    assert spec["name"] == "batch"
    assert spec["url"] == f"http://127.0.0.1:{settings.batch.port}"
    assert spec["command"][-4:] == ["--config", str(settings.config_file), "--state-dir",
                                    str(settings.state_dir)]
    roles = {r["name"]: r for r in batch_roles()}
    assert roles["ecluse-batch-user"]["groups"] == ["staff"]
    assert "access:services!service=batch" in roles["ecluse-batch-user"]["scopes"]
    # its own token: users' groups, and the airlock's API (exports, for staff)
    assert roles["ecluse-batch-service"]["scopes"] == ["read:users:groups",
                                                       "access:services!service=airlock"]
    assert batch_settings(settings) == settings.batch  # the wired section
    assert spec["environment"]["ECLUSE_STATE_DIR"] == str(settings.state_dir)
    assert spec["environment"]["ECLUSE_AIRLOCK_URL"].endswith("/services/airlock/")
    assert "user" not in spec  # batch.service_user unset: the hub's own user


def test_the_hub_starts_the_batch_service_as_its_service_user(settings) -> None:
    """``batch.service_user``: the hub's service entry runs it as that user from ``/``;
    a user that does not exist stops the hub's configuration (never root instead)."""
    import pwd
    from pathlib import Path

    import pytest

    old = Path(settings.state_dir) / "batch-records" / "br-0123456789ab"
    old.mkdir(parents=True)  # a record of a service that ran as root
    settings.batch.service_user = "nobody"
    spec = batch_service_spec(settings)
    assert (spec["user"], spec["cwd"]) == ("nobody", "/")
    # root gives the user its record store and its queue's folder as it starts it
    nobody = pwd.getpwnam("nobody").pw_uid
    queue = Path(settings.batch.resolved_database_url(settings.db_dir)
                 .removeprefix("sqlite:///")).parent
    for folder in (old.parent, old, queue):
        st = folder.stat()
        assert (st.st_uid, folder.name) == (nobody, folder.name)
    assert queue.stat().st_mode & 0o777 == 0o700 and queue.name == "batch"
    settings.batch.service_user = "ecluse-no-such-user"
    with pytest.raises(ValueError, match="batch.service_user 'ecluse-no-such-user' is not a "
                       "user on this machine"):
        batch_service_spec(settings)


def test_hub_services_get_the_directory_password_from_the_hub(settings, monkeypatch) -> None:
    """JupyterHub starts a managed service without the hub's environment: the password
    given to the hub in ``ldap.bind_password_env`` must be passed on to every service."""
    from ecluse.airlock import airlock_service_spec
    from ecluse.dask.hub import gateway_service_spec

    settings.ldap.bind_password_env = "ECLUSE_TEST_BIND_PASSWORD"
    monkeypatch.setenv("ECLUSE_TEST_BIND_PASSWORD", "s3cret-from-the-hub")
    for spec in (batch_service_spec(settings), airlock_service_spec(settings),
                 gateway_service_spec(settings)):
        assert spec["environment"]["ECLUSE_TEST_BIND_PASSWORD"] == "s3cret-from-the-hub", spec
    monkeypatch.delenv("ECLUSE_TEST_BIND_PASSWORD")
    assert "ECLUSE_TEST_BIND_PASSWORD" not in batch_service_spec(settings)["environment"]
    assert BatchSettings().port == 8091  # the documented default


def test_service_without_the_directory_password_does_not_start(make_config) -> None:
    """Fail closed and say why, rather than answer every submission with 503."""
    import os
    import subprocess
    import sys

    path = make_config(**{"ldap.bind_password_file": None,
                          "ldap.bind_password_env": "ECLUSE_TEST_UNSET_PASSWORD"})
    env = {k: v for k, v in os.environ.items() if k != "ECLUSE_TEST_UNSET_PASSWORD"}
    res = subprocess.run([sys.executable, "-m", "ecluse", "batch", "serve", "--config",
                          str(path)], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 2, res.stderr
    assert "no service account password" in res.stderr
    assert "ECLUSE_TEST_UNSET_PASSWORD" in res.stderr


def test_a_queue_of_an_earlier_version_gets_the_new_columns(tmp_path) -> None:
    import sqlalchemy as sa

    from ecluse.batch.runs import _ADDED_COLUMNS, make_engine, runs_table

    url = f"sqlite:///{tmp_path / 'batch.sqlite'}"
    old = sa.MetaData()
    sa.Table(runs_table.name, old, *[c._copy() for c in runs_table.columns
                                     if c.name not in _ADDED_COLUMNS])
    engine = sa.create_engine(url)
    old.create_all(engine)
    engine.dispose()
    engine = make_engine(url)
    names = {c["name"] for c in sa.inspect(engine).get_columns(runs_table.name)}
    assert set(_ADDED_COLUMNS) <= names
    engine.dispose()


def test_an_earlier_layouts_queue_moves_into_the_services_own_folder(tmp_path) -> None:
    """The queue lives in ``<db>/batch/`` (a folder its user may own: SQLite writes its
    journal beside it); a ``<db>/batch.sqlite`` of the earlier layout moves there, with
    its companions, once."""
    (tmp_path / "batch.sqlite").write_bytes(b"queue")
    (tmp_path / "batch.sqlite-wal").write_bytes(b"wal")
    url = BatchSettings().resolved_database_url(tmp_path)
    assert url == f"sqlite:///{tmp_path / 'batch' / 'batch.sqlite'}"
    assert (tmp_path / "batch" / "batch.sqlite").read_bytes() == b"queue"
    assert (tmp_path / "batch" / "batch.sqlite-wal").read_bytes() == b"wal"
    assert not (tmp_path / "batch.sqlite").exists()
    assert BatchSettings(database_url="postgresql://x/y").resolved_database_url(
        tmp_path) == "postgresql://x/y"


def test_attack_a_mounted_state_volume_is_opened_to_the_queues_folder_only(settings) -> None:
    """Where the hub mounts the state volume itself (Ansible), the volume's root is 0700:
    root, handing the batch service its queue's folder, makes that root traversable
    (0711) so the service reaches ``<db>/batch`` by path — and closes to others what else
    lies in it (a hub database left 0644 would otherwise become readable)."""
    import pwd
    import subprocess
    import tempfile
    from pathlib import Path

    from ecluse.batch.hub import give_service_folders

    base = Path(tempfile.mkdtemp(prefix="ecluse-test-volume-", dir="/tmp"))
    state, db = base / "state", base / "state" / "db"
    db.mkdir(parents=True)
    base.chmod(0o711)
    state.chmod(0o711)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0700,size=4m", "ecluse-test", str(db)],
                   check=True)
    try:
        (db / "jupyterhub.sqlite").write_bytes(b"hub")
        (db / "jupyterhub.sqlite").chmod(0o644)
        settings.state_dir = state
        settings.state_volume.mode = "mounted"
        settings.batch.service_user = "nobody"
        give_service_folders(settings, "nobody")
        nobody = pwd.getpwnam("nobody").pw_uid
        assert db.stat().st_mode & 0o777 == 0o711
        assert (db / "batch").stat().st_uid == nobody
        assert (db / "jupyterhub.sqlite").stat().st_mode & 0o777 == 0o640
        as_nobody = ["setpriv", f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups"]
        reach = subprocess.run([*as_nobody, "test", "-w", str(db / "batch")])
        assert reach.returncode == 0, "the service's user cannot reach its queue's folder"
        peek = subprocess.run([*as_nobody, "cat", str(db / "jupyterhub.sqlite")],
                              capture_output=True)
        assert peek.returncode != 0 and peek.stdout == b""
        listing = subprocess.run([*as_nobody, "ls", str(db)], capture_output=True)
        assert listing.returncode != 0 and listing.stdout == b""
    finally:
        subprocess.run(["umount", str(db)], check=False)
        subprocess.run(["rm", "-rf", str(base)], check=False)


def test_without_a_state_volume_the_state_directory_keeps_its_modes(settings) -> None:
    """No state volume: the queue's folder is in the state directory itself, whose
    entries (the launcher's socket folder, the settings) keep the modes `ecluse up` and
    Ansible gave them — other services reach the launcher through them."""
    from pathlib import Path

    from ecluse.batch.hub import give_service_folders

    state = Path(settings.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    settings.state_volume.mode = "none"
    (state / "launcher").mkdir(mode=0o751, exist_ok=True)
    (state / "launcher").chmod(0o751)
    (state / "ecluse.yaml").write_text("x: 1\n")
    (state / "ecluse.yaml").chmod(0o644)
    before = state.stat().st_mode & 0o777
    give_service_folders(settings, "nobody")
    assert (state / "batch").is_dir()
    assert (state / "launcher").stat().st_mode & 0o777 == 0o751
    assert (state / "ecluse.yaml").stat().st_mode & 0o777 == 0o644
    assert state.stat().st_mode & 0o777 == before
