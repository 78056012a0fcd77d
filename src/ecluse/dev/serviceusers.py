"""The embedded stack's services as system users of their own (``ecluse up`` as root).

The airlock parses researcher-supplied files, dask-gateway runs clusters of
researcher code and the batch service runs researchers' notebooks and reads
what they wrote: each runs as its own system user (``ecluse-airlock``,
``ecluse-dask``, ``ecluse-batch``), not root, wherever it can. :func:`run_services_as` arranges
it, one small step per function, before the hub starts:

* :func:`ensure_group` and :func:`ensure_system_user` — ``groupadd`` /
  ``useradd --system`` (idempotent), each user a member of the launcher's
  group (:data:`LAUNCHER_GROUP`: its socket and the stack's settings file);
* :func:`open_state_dir` — the state directory and the state volume
  traversable (0711) so a user reaches its own folders by path, and nothing
  else directly in them readable by others (databases 0600, even before the
  hub creates them);
* :data:`SERVICES` — what each service owns (the airlock: its staging area and
  database folder, :func:`give_airlock_folders`; batch: its run record store
  and queue database folder, :func:`give_batch_folders`; dask-gateway:
  nothing, its database is in memory; the package mirror: its folder,
  :func:`give_mirror_folder` — it is no caller of the launcher);
* :func:`launcher_settings` — the sandbox launcher on: the services start
  their sandboxes and write their audit records through it (they hold no key);
* :func:`write_stack_config` — the settings the hub, its services and the
  launcher read, in a file the users may read (no secret is ever in it).

A service whose user cannot run the service's Python or reach the state
directory (a virtualenv of an interpreter under ``/root``, mode 0700; a state
directory under a private folder) stays root's, as before, with one warning
that says why. The hub runs as ``ecluse-hub`` (:func:`give_hub_files`: its own
files; the stack then starts the services itself, as external services of the
hub).
"""

from __future__ import annotations

import grp
import json
import logging
import os
import pwd
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ..batch.hub import HUB_SERVICE as BATCH_SERVICE
from ..batch.hub import give_service_folders
from ..batch.records import ROOT_NAME as BATCH_RECORDS
from ..dask.hub import HUB_SERVICE as DASK_SERVICE
from ..hub.prepare import give_airlock_folders, give_hub_files
from ..hubservice import service_user_cannot_run
from ..mirror.hub import HUB_SERVICE as MIRROR_SERVICE
from ..mirror.hub import give_mirror_folders
from ..settings.batch import batch_settings

log = logging.getLogger(__name__)

#: the services ``ecluse up`` runs as users of their own, and those users' names
DEFAULT_USERS = {"airlock": "ecluse-airlock", "dask": "ecluse-dask", "batch": "ecluse-batch",
                 "mirror": "ecluse-mirror", "hub": "ecluse-hub"}
#: group of the launcher's socket and of the stack's settings file: the services' users
LAUNCHER_GROUP = "ecluse-sandbox"
#: the settings file written by the stack (in the state directory)
STACK_CONFIG = "ecluse-stack.yaml"
LAUNCHER_DIR = "launcher"


def give_batch_folders(settings: Any, user: pwd.struct_passwd) -> None:
    """The run record store and the queue's folder owned by ``user``
    (:func:`ecluse.batch.hub.give_service_folders`, which the hub does too)."""
    give_service_folders(settings, user.pw_name)


def _nothing(settings: Any, user: pwd.struct_passwd) -> None:
    return None


def give_mirror_folder(settings: Any, user: pwd.struct_passwd) -> None:
    """The package mirror's folder (allow-lists, token key, cache) owned by ``user``
    (:func:`ecluse.mirror.hub.give_mirror_folders`, which the hub does too)."""
    give_mirror_folders(settings, user.pw_name)


#: per service: is it run by this deployment, what it owns (given to its user), and the
#: folders directly in the state directory that say for themselves
SERVICES: dict[str, tuple[Callable[[Any], bool], Callable[[Any, pwd.struct_passwd], None],
                          set[str]]] = {
    "airlock": (lambda settings: True, give_airlock_folders, {"airlock"}),
    "dask": (DASK_SERVICE.enabled, _nothing, set()),
    "batch": (BATCH_SERVICE.enabled, give_batch_folders, {BATCH_RECORDS, "batch"}),
    "mirror": (MIRROR_SERVICE.enabled, give_mirror_folder, {"mirror"}),
    "hub": (lambda settings: True, give_hub_files, {"hub", "workspace"}),
}
#: services that start no sandbox and write no audit record: not callers of the launcher
NOT_LAUNCHER_CALLERS = {"mirror"}


def run_services_as(settings: Any, users: dict[str, str | None], *,
                    python: str | None = None) -> dict[str, str]:
    """Arrange for the hub to start each service of ``users`` (``airlock``, ``dask``,
    ``batch``, ``hub``: system user name; empty: root's) as that user. Returns the services arranged; one
    left root's gets one warning. Root only; ``settings`` are changed in place and
    written to :data:`STACK_CONFIG`, which becomes their ``config_file``."""
    if os.geteuid() != 0:
        return {}
    wanted = {s: n for s, n in users.items() if n and SERVICES[s][0](settings)}
    if not wanted:
        return {}
    group = settings.sandbox.launcher_group or LAUNCHER_GROUP
    gid = ensure_group(group)
    arranged: dict[str, str] = {}
    for service, name in wanted.items():
        ensure_system_user(name, f"Ecluse {service} service", group)
        # its Python, the folder holding the state directory, the projects
        problem = service_user_cannot_run(
            name, python, reach=(str(settings.state_dir), str(settings.projects_file)))
        if problem:
            log.warning("the %s runs as root, not as %s: %s (`make up` builds the virtualenv "
                        "from the distribution's Python; the state directory must be under "
                        "folders others may traverse)", service, name, problem)
            continue
        arranged[service] = name
    if not arranged:
        return {}
    launcher_settings(settings, {s: n for s, n in arranged.items()
                                 if s not in NOT_LAUNCHER_CALLERS}, group)
    keep = {LAUNCHER_DIR}
    for service, name in arranged.items():
        getattr(settings, service).service_user = name
        keep |= SERVICES[service][2]
    open_state_dir(settings, keep=keep)
    for service, name in arranged.items():
        user = pwd.getpwnam(name)
        SERVICES[service][1](settings, user)
        log.info("the %s runs as %s (uid %d)", service, name, user.pw_uid)
    write_stack_config(settings, gid)
    return arranged


def ensure_group(name: str) -> int:
    """The system group ``name``'s gid, created once."""
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        pass
    proc = subprocess.run(["groupadd", "--system", name], capture_output=True, text=True)
    if proc.returncode not in (0, 9):  # 9: created meanwhile (another `ecluse up`)
        raise RuntimeError(f"cannot create the system group {name}: {proc.stderr.strip()}")
    return grp.getgrnam(name).gr_gid


def ensure_system_user(name: str, comment: str = "Ecluse service",
                       group: str | None = None) -> pwd.struct_passwd:
    """The system user ``name`` (with its own group, no home, no login), created once,
    and a member of ``group``."""
    try:
        user: pwd.struct_passwd | None = pwd.getpwnam(name)
    except KeyError:
        user = None
    if user is None:
        proc = subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir",
             "/nonexistent", "--shell", "/usr/sbin/nologin", "--comment", comment, name],
            capture_output=True, text=True)
        if proc.returncode not in (0, 9):  # 9: created meanwhile (another `ecluse up`)
            raise RuntimeError(f"cannot create the system user {name}: {proc.stderr.strip()}")
        log.info("created the system user %s", name)
        user = pwd.getpwnam(name)
    if group and name not in grp.getgrnam(group).gr_mem \
            and grp.getgrnam(group).gr_gid != user.pw_gid:
        proc = subprocess.run(["usermod", "--append", "--groups", group, name],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"cannot add {name} to the group {group}: "
                               f"{proc.stderr.strip()}")
    return user


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


def launcher_settings(settings: Any, users: dict[str, str], group: str) -> None:
    """The sandbox launcher on (in the state directory unless set): its socket's group is
    ``group``, each service of ``users`` its caller as that user, the others root."""
    sandbox = settings.sandbox
    if not sandbox.launcher_socket:
        sandbox.launcher_socket = Path(settings.state_dir) / LAUNCHER_DIR / "launcher.sock"
    sandbox.launcher_group = group
    sandbox.launcher_callers = {"hub": "root", "batch": "root", "dask": "root",
                                **sandbox.launcher_callers, **users}


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
