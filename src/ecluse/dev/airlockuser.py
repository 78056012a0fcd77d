"""The embedded stack's airlock as its own system user (``ecluse up`` as root).

The airlock parses researcher-supplied files; it runs as ``ecluse-airlock``,
not root, wherever it can. :func:`run_airlock_as` arranges it, one small step
per function, before the hub starts:

* :func:`ensure_system_user` — ``useradd --system`` (idempotent);
* :func:`open_state_dir` — the state directory and the state volume
  traversable (0711) so the user reaches its own folders by path, and nothing
  else directly in them readable by others (databases 0600, even before the
  hub creates them);
* :func:`give_airlock_folders` — the staging area and the database folder
  owned by the user (0700);
* :func:`launcher_settings` — the sandbox launcher on: the airlock checks
  through it and writes its audit records through it (it holds no key);
* :func:`write_stack_config` — the settings the hub, its services and the
  launcher read, in a file the user may read (no secret is ever in it).

When the user cannot run the service's Python (a virtualenv of an interpreter
under ``/root``, mode 0700) nothing is changed: the airlock runs as root, as
before, and one warning says why.
"""

from __future__ import annotations

import grp
import json
import logging
import os
import pwd
import subprocess
from pathlib import Path
from typing import Any

import yaml

from ..airlock.hub import service_user_cannot_run
from ..settings.airlock import airlock_settings
from ..settings.batch import batch_settings

log = logging.getLogger(__name__)

DEFAULT_USER = "ecluse-airlock"
#: the settings file written by the stack (in the state directory)
STACK_CONFIG = "ecluse-stack.yaml"
LAUNCHER_DIR = "launcher"


def run_airlock_as(settings: Any, name: str = DEFAULT_USER, *,
                   python: str | None = None) -> bool:
    """Arrange for the hub to start the airlock as ``name``; False (one warning) when the
    airlock stays root's. Root only; ``settings`` are changed in place and written to
    :data:`STACK_CONFIG`, which becomes their ``config_file``."""
    if os.geteuid() != 0:
        return False
    ensure_system_user(name)
    # its Python, the folder holding the state directory, the projects
    problem = service_user_cannot_run(
        name, python, reach=(str(settings.state_dir), str(settings.projects_file)))
    if problem:
        log.warning("the airlock runs as root, not as %s: %s (`make up` builds the "
                    "virtualenv from the distribution's Python; the state directory must be "
                    "under folders others may traverse)", name, problem)
        return False
    user = pwd.getpwnam(name)
    group = grp.getgrgid(user.pw_gid).gr_name
    launcher_settings(settings, name, group)
    settings.airlock.service_user = name
    open_state_dir(settings, keep={LAUNCHER_DIR, "airlock"})
    give_airlock_folders(settings, user)
    write_stack_config(settings, user.pw_gid)
    log.info("the airlock runs as %s (uid %d)", name, user.pw_uid)
    return True


def ensure_system_user(name: str) -> pwd.struct_passwd:
    """The system user ``name`` (with its own group, no home, no login), created once."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    proc = subprocess.run(
        ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", "/usr/sbin/nologin", "--comment", "Ecluse airlock service", name],
        capture_output=True, text=True)
    if proc.returncode not in (0, 9):  # 9: created meanwhile (another `ecluse up`)
        raise RuntimeError(f"cannot create the system user {name}: {proc.stderr.strip()}")
    log.info("created the system user %s", name)
    return pwd.getpwnam(name)


def open_state_dir(settings: Any, keep: set[str]) -> None:
    """The state directory and the state volume traversable (0711), and what lies directly
    in them closed to others (``keep``: the folders that say for themselves). The hub's
    SQLite files exist, mode 0600, before the hub first opens them: SQLite gives its
    companion files (journal, WAL) the database's mode."""
    state = Path(settings.state_dir)
    folders = {state, Path(settings.db_dir)}
    for folder in folders:
        os.chmod(folder, 0o711)
    for db in sqlite_files(settings):
        if not db.exists():
            db.touch(mode=0o600)
    for folder in folders:
        for entry in folder.iterdir():
            if entry.name in keep or entry in folders or entry.is_symlink():
                continue
            mode = entry.stat().st_mode
            if mode & 0o007:
                os.chmod(entry, mode & 0o7770)


def sqlite_files(settings: Any) -> list[Path]:
    """The hub's, audit and batch SQLite databases in the state's database folder."""

    db_dir = Path(settings.db_dir)
    urls = (settings.hub_database_url, settings.audit_db_url,
            batch_settings(settings).resolved_database_url(db_dir))
    paths = [Path(u.removeprefix("sqlite:///")) for u in urls if u.startswith("sqlite:///")]
    return [p for p in paths if p.parent == db_dir]


def give_airlock_folders(settings: Any, user: pwd.struct_passwd) -> None:
    """The staging area and the database folder owned by ``user``, mode 0700 (what root
    left there too: an earlier run's files, a database of the earlier layout)."""
    conf = airlock_settings(settings)
    conf.resolved_database_url(settings.db_dir)  # an earlier layout's database moved first
    for folder in (conf.resolved_storage_dir(settings.state_dir),
                   conf.resolved_storage_dir(settings.db_dir)):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        for root, dirs, files in os.walk(folder):
            for entry in [root, *(os.path.join(root, n) for n in dirs + files)]:
                os.lchown(entry, user.pw_uid, user.pw_gid)


def launcher_settings(settings: Any, name: str, group: str) -> None:
    """The sandbox launcher on (in the state directory unless set): its socket group is
    the airlock's, the airlock its caller as ``name``, the other services root."""
    sandbox = settings.sandbox
    if not sandbox.launcher_socket:
        sandbox.launcher_socket = Path(settings.state_dir) / LAUNCHER_DIR / "launcher.sock"
    sandbox.launcher_group = sandbox.launcher_group or group
    sandbox.launcher_callers = {"hub": "root", "batch": "root", "dask": "root",
                                **sandbox.launcher_callers, "airlock": name}


def write_stack_config(settings: Any, gid: int) -> Path:
    """``settings`` as a complete settings file in the state directory (root:``gid``,
    0640), now their ``config_file``: what the hub, its services and the launcher load."""
    path = Path(settings.state_dir) / STACK_CONFIG
    data = json.loads(settings.model_dump_json())
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    with os.fdopen(fd, "w") as f:
        f.write(f"# written by the embedded stack from {settings.config_file}: edit that "
                "file, not this one\n")
        yaml.safe_dump(data, f, sort_keys=False)
    os.chown(tmp, 0, gid)
    os.replace(tmp, path)
    settings.config_file = path
    return path
