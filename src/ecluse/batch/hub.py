"""What the hub needs to run the batch service: the service entry and its roles.

The hub configuration (``ecluse.hub.hubconfig``) reads :data:`HUB_SERVICE`,
as it reads every service's.

Every signed-in user reaches the service (:data:`USER_SCOPES`, in the hub's
``user`` role), because a project member shares a run's log and files with
staff (``POST /runs/<id>/share``) and may read them; everything else —
submit, list, show, cancel, export — needs the ``staff`` hub group (LDAP
``ecluse-staff``), checked by the service itself. The service's own token
may read users' groups (like the airlock's).
The service is API-only: clients send hub API tokens, there is no browser UI
and no OAuth login.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from ..airlock.hub import airlock_url
from ..hubservice import HubService, service_spec, service_user_entry
from ..sandbox import backend_class
from ..settings.batch import batch_settings
from ..statevolume import StateVolumeError
from .records import ROOT_NAME

SERVICE_NAME = "batch"
ACCESS_SCOPE = f"access:services!service={SERVICE_NAME}"

#: extra scopes of the hub's ``user`` role: reach the service (members share and read)
USER_SCOPES = [ACCESS_SCOPE]

#: what a staff member's token needs for the batch service
STAFF_SCOPES = [ACCESS_SCOPE, "read:users:groups!user"]

#: the service's own token: look up a user's groups, and reach the airlock, where it
#: puts a finished run's outputs into a request for the staff member exporting them (the
#: airlock accepts it for that, and for nothing else: ``ecluse.airlock.web.base``)
SERVICE_SCOPES = ["read:users:groups", "access:services!service=airlock"]


def batch_service_spec(settings: Any, host: str | None = None) -> dict[str, Any]:
    """The entry for ``c.JupyterHub.services``: a hub-managed batch service on loopback."""
    conf = batch_settings(settings)
    spec = service_spec(SERVICE_NAME, settings, conf, display=False,
                        description="Batch notebook runs (papermill) in project sandboxes")
    if settings.sandbox.backend == "kubernetes":
        return external_batch_spec(settings, spec, conf)
    # exports go to the airlock's API, where workspaces reach it
    spec["environment"]["ECLUSE_AIRLOCK_URL"] = airlock_url(settings, host)
    if conf.service_user:
        spec.update(service_user_entry(conf.service_user, "batch.service_user"))
        if os.geteuid() == 0:  # a hub of its own user: root gave them (ecluse up, hub-prepare)
            give_service_folders(settings, conf.service_user)
    return spec


#: the environment variable holding the batch service's hub API token on Kubernetes (the
#: hub pod and the batch Deployment read it from the same Secret)
KUBE_TOKEN_ENV = "ECLUSE_BATCH_API_TOKEN"


def external_batch_spec(settings: Any, spec: dict[str, Any], conf: Any) -> dict[str, Any]:
    """On Kubernetes the batch service is a Deployment of its own (config/kubernetes/
    ecluse-batch.yaml), not a process of the hub pod: the hub knows it by its Service's
    address and the API token both read from the ``ecluse-batch-token`` Secret. Fails
    closed without the token (the service could not check its callers)."""
    token = os.environ.get(KUBE_TOKEN_ENV, "")
    if not token:
        raise ValueError(f"sandbox.backend is kubernetes: the batch service runs as its own "
                         f"Deployment and the hub needs its API token in ${KUBE_TOKEN_ENV} "
                         "(from the ecluse-batch-token Secret)")
    hub_ns = dict(getattr(settings.sandbox, "kubernetes", None) or {}).get(
        "hub_namespace", "ecluse")
    out = {k: v for k, v in spec.items() if k not in ("command", "environment")}
    out["url"] = f"http://ecluse-batch.{hub_ns}.svc.cluster.local:{conf.port}"
    out["api_token"] = token
    return out


def give_service_folders(settings: Any, name: str) -> None:
    """The run record store (``<state>/batch-records``: the launcher mounts a run's
    ``input/`` only when the service's uid owns it) and the queue's folder
    (``<db>/batch``, where an earlier layout's ``batch.sqlite`` is moved first) owned by
    the system user ``name``, mode 0700, with what root left in them. Done by root as
    the hub starts the service (the state volume is mounted by then) and by ``ecluse
    up``; a state volume that is not mounted leaves the queue's folder alone (the
    service then says so when it opens its queue)."""
    import pwd

    user = pwd.getpwnam(name)
    conf = batch_settings(settings)
    folders = [Path(settings.state_dir) / ROOT_NAME]
    if not conf.database_url:
        try:
            url = conf.resolved_database_url(settings.db_dir)  # an earlier layout's moved
            folders.append(Path(url.removeprefix("sqlite:///")).parent)
        except StateVolumeError:
            pass
    for folder in folders:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        for root, dirs, files in os.walk(folder):
            for entry in [root, *(os.path.join(root, n) for n in dirs + files)]:
                os.lchown(entry, user.pw_uid, user.pw_gid)
    db_dir = Path(settings.db_dir)
    # a state volume of its own only: the state directory itself (no volume) holds the
    # launcher's socket and the settings, whose modes `ecluse up` and Ansible set
    if (len(folders) > 1 and folders[1].parent == db_dir
            and db_dir != Path(settings.state_dir)):
        _open_to_its_own(db_dir, folders[1])


def _open_to_its_own(db_dir: Path, own: Path) -> None:
    """The state's database folder traversable (0711, as ``ecluse up`` makes it) so that
    the service's user reaches its queue's folder ``own`` by path, and what lies directly
    in it closed to others. Needed where the hub mounts the state volume itself
    (Ansible): the volume's root is 0700 until then."""
    os.chmod(db_dir, stat.S_IMODE(db_dir.stat().st_mode) | 0o711)
    for entry in db_dir.iterdir():
        if entry == own or entry.is_symlink():
            continue
        mode = entry.stat().st_mode
        if mode & 0o007:
            os.chmod(entry, stat.S_IMODE(mode) & 0o770)


def batch_roles(staff_group: str = "staff") -> list[dict[str, Any]]:
    """Roles for ``c.JupyterHub.load_roles``: staff reach the service; the service reads groups."""
    return [
        {
            "name": "ecluse-batch-user",
            "description": "Platform staff: submit and manage batch notebook runs",
            "scopes": list(STAFF_SCOPES),
            "groups": [staff_group],
        },
        {
            "name": "ecluse-batch-service",
            "description": "Batch service: read users' hub groups (staff check); reach the "
            "airlock (exports)",
            "scopes": list(SERVICE_SCOPES),
            "services": [SERVICE_NAME],
        },
    ]


def batch_enabled(settings: Any) -> bool:
    """The hub runs the batch service with the Écluse spawner on a backend that starts
    sandboxes on this host (``Sandbox.on_host``: local, with this host's Python
    environment; docker, with the workspace image's — papermill is in both), or on
    ``kubernetes``, where each run is a Job and its folder is on the project's
    ``batch-runs`` claim (:mod:`.kube`) and the service a Deployment of its own, enabled
    by giving the hub its API token (``$ECLUSE_BATCH_API_TOKEN``, from the Secret the
    Deployment reads too)."""
    if settings.hub.spawner != "ecluse":
        return False
    if settings.sandbox.backend == "kubernetes":
        return bool(os.environ.get(KUBE_TOKEN_ENV))
    return backend_class(settings.sandbox.backend).on_host


HUB_SERVICE = HubService(
    name=SERVICE_NAME,
    enabled=batch_enabled,
    spec=batch_service_spec,
    roles=lambda settings: batch_roles(),
    user_scopes=tuple(USER_SCOPES),
)
