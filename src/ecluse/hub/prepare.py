"""What root does for a hub that runs as its own user (``hub.service_user``), before
the hub starts: ``ecluse hub-prepare`` (a root systemd unit of the Ansible
deployment, ordered before the hub's) and ``ecluse up`` as root.

:func:`prepare` mounts the state volume (``state_volume.mode: image``: a loop
mount the hub, not root, cannot make), gives the hub its own files
(:func:`give_hub_files`) and each managed service with a user of its own its
folders (:func:`give_service_folders`): what a root hub did as it started
them; with the local backend it makes the sandbox host address too, so that
the services may start with the hub. Nothing here needs JupyterHub.
"""

from __future__ import annotations

import logging
import os
import pwd
from pathlib import Path
from typing import Any

from ..batch.hub import give_service_folders as give_batch_folders
from ..sandbox import get_backend
from ..secrets import hub_secrets, service_token
from ..settings.airlock import airlock_settings
from ..statevolume import ensure_state_volume

log = logging.getLogger(__name__)


def prepare(settings: Any) -> None:
    """As root, before a hub of ``hub.service_user`` starts: the state volume mounted, the
    hub's files and the services' folders given to their users. Idempotent."""
    user = settings.hub.service_user
    if os.geteuid() != 0:
        raise PermissionError("ecluse hub-prepare runs as root (it mounts the state volume "
                              "and gives the hub and the services their folders)")
    if not user:
        raise ValueError("hub.service_user is not set: a hub that runs as root prepares "
                         "itself as it starts")
    Path(settings.state_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
    ensure_state_volume(settings)
    give_service_folders(settings)
    give_hub_files(settings, user)
    if settings.hub.spawner == "ecluse" and settings.sandbox.backend == "local":
        # the sandbox host address, where some services listen: made now, so that they
        # may start with the hub rather than after it (the hub makes it too, through the
        # launcher; the docker backend's needs its engine, which may not be up yet)
        get_backend(settings).host_address()


def give_service_folders(settings: Any) -> None:
    """Each managed service of its own user gets its folders (the hub, root, did it as it
    started them): the airlock its staging area and database folder, batch its record
    store and queue folder, the package mirror its folder (allow-lists, key, cache)."""
    from ..hub.services import enabled_services  # deferred: the hub's modules

    names = {s.name for s in enabled_services(settings)}
    if "airlock" in names and settings.airlock.service_user:
        give_airlock_folders(settings, pwd.getpwnam(settings.airlock.service_user))
    if "batch" in names and settings.batch.service_user:
        give_batch_folders(settings, settings.batch.service_user)
    if "package-mirror" in names and settings.mirror.service_user:
        from ..mirror.hub import give_mirror_folders  # deferred: with the hub's modules

        give_mirror_folders(settings, settings.mirror.service_user)


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


#: companions of an SQLite file, moved with it
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def _move_in(old: Path, folder: Path) -> None:
    """``old`` (and its SQLite companions) into ``folder``, unless already there."""
    new = folder / old.name
    if old.exists() and not new.exists():
        for suffix in ("", *SQLITE_COMPANIONS):
            if Path(str(old) + suffix).exists():
                os.replace(str(old) + suffix, str(new) + suffix)
        log.info("moved %s into %s", old, folder)


def give_hub_files(settings: Any, user: pwd.struct_passwd | str) -> None:
    """The hub's own files in its folders, owned by ``user`` (``hub.service_user``, set):
    ``<state>/hub`` (its secrets — cookie secret, crypt key, proxy token, TOTP key,
    moved from ``<state>/secrets`` — the TOTP store ``mfa.sqlite``, its pid files, the
    tokens of the services the supervisor starts), ``<db_dir>/hub`` (its database,
    moved from ``<db_dir>``) and ``<state>/workspace`` (the workspaces' Jupyter
    configuration, which the launcher mounts only from a folder its caller owns).
    Nothing else of the state directory: the other secrets, the audit keys, the
    services' folders stay out of its reach."""
    from ..hub.services import enabled_services  # deferred: the hub's modules

    if isinstance(user, str):
        user = pwd.getpwnam(user)
    state = Path(settings.state_dir)
    hub_dir = Path(settings.hub_dir)
    hub_dir.mkdir(mode=0o700, exist_ok=True)
    os.chmod(hub_dir, 0o700)
    hub_secrets(settings)  # moved from <state>/secrets, or made
    for name in ("mfa.sqlite", "jupyterhub.pid", "proxy.pid", "route-filter.pid"):
        _move_in(state / name, hub_dir)
    folders = [hub_dir, state / "workspace"]
    if settings.database_url is None:
        db_dir = Path(settings.db_dir)
        hub_db = Path(settings.hub_db_dir)
        hub_db.mkdir(mode=0o700, exist_ok=True)
        os.chmod(hub_db, 0o700)
        _move_in(db_dir / Path(settings.hub_database_url.removeprefix("sqlite:///")).name,
                 hub_db)
        folders.append(hub_db)
    for service in enabled_services(settings):  # the supervisor starts them
        path = Path(settings.hub_secrets_dir) / f"service-token-{service.name}"
        token = service_token(state, service.name)
        if not path.exists() or path.read_text().strip() != token:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(token)
    (state / "workspace").mkdir(mode=0o755, exist_ok=True)
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            for entry in [root, *(os.path.join(root, n) for n in dirs + files)]:
                os.lchown(entry, user.pw_uid, user.pw_gid)
