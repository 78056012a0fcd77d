"""What the hub needs to run the package mirror: the service entry, the workspaces' port
and their pip configuration (:data:`HUB_SERVICE`; light: aiohttp and proxpi are not
imported here).

The hub starts ``ecluse mirror serve`` as a managed service with no public route (no
``url``: nothing of it is behind the hub's proxy); workspaces reach its front on the
sandbox host address, ``mirror.port`` (their only new allowed port), with pip pointed
at it by :func:`workspace_pip_env` — the index address carrying the project's token.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from ..hubservice import HubService, service_environment, service_user_entry
from ..settings import settings_section
from ..settings.mirror import MirrorSettings
from .allowlist import mirror_key, project_token

SERVICE_NAME = "package-mirror"


def _conf(settings: Any) -> MirrorSettings:
    return settings_section(settings, "mirror", MirrorSettings)


def give_mirror_folders(settings: Any, name: str) -> None:
    """The mirror's folder (allow-lists, key, cache) owned by the system user ``name``,
    the key created first; the allow-lists stay readable by root's CLI."""
    import pwd


    user = pwd.getpwnam(name)
    data_dir = _conf(settings).resolved_data_dir(settings.state_dir)
    mirror_key(data_dir)
    os.chmod(data_dir, 0o700)
    for root, dirs, files in os.walk(data_dir):
        for entry in [root, *(os.path.join(root, n) for n in dirs + files)]:
            os.lchown(entry, user.pw_uid, user.pw_gid)


def mirror_service_spec(settings: Any, host: str | None = None) -> dict[str, Any]:
    """The ``c.JupyterHub.services`` entry: ``ecluse mirror serve``, no route, no OAuth."""
    conf = _conf(settings)
    command = [sys.executable, "-m", "ecluse", "mirror"]
    if getattr(settings, "config_file", None):
        command += ["--config", str(settings.config_file)]
    command += ["--state-dir", str(settings.state_dir), "serve"]
    user = {}
    if conf.service_user:
        user = service_user_entry(conf.service_user, "mirror.service_user")
        if os.geteuid() == 0:  # a hub of its own user: root gave them (ecluse up, hub-prepare)
            give_mirror_folders(settings, conf.service_user)
    return {**user, "name": SERVICE_NAME, "command": command, "display": False,
            "environment": service_environment(settings)}


def workspace_pip_env(settings: Any, project: str, host: str | None) -> dict[str, str]:
    """pip in a workspace of ``project``: the mirror, with the project's token, only.

    Nothing when the mirror is off (pip then has no index it can reach)."""
    conf = _conf(settings)
    if not conf.enabled:
        return {}
    token = project_token(mirror_key(conf.resolved_data_dir(Path(settings.state_dir))),
                          project)
    addr = f"{host or '127.0.0.1'}:{conf.port}"
    env = {
        "PIP_INDEX_URL": f"http://{addr}/{token}/simple/",
        "PIP_TRUSTED_HOST": addr.rsplit(":", 1)[0],
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_INPUT": "1",
        # the workspace image sets PIP_NO_INDEX=1 (no index when the mirror is off)
        "PIP_NO_INDEX": "0",
    }
    if conf.binary_only:
        env["PIP_ONLY_BINARY"] = ":all:"
    return env


HUB_SERVICE = HubService(
    name=SERVICE_NAME,
    enabled=lambda settings: _conf(settings).enabled and settings.hub.spawner == "ecluse",
    spec=mirror_service_spec,
    workspace_ports=lambda settings: (_conf(settings).port,),
    listen_url=lambda settings, host: f"http://{host or '127.0.0.1'}:{_conf(settings).port}",
)
