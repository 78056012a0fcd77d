"""A real JupyterHub with the hub-managed batch service, for REST and CLI tests.

:class:`BatchHub` (a :class:`~tests.support.hubservice.ServiceHub`) writes a
``jupyterhub_config.py`` next to an Écluse config made for the session
``slapd`` (run identities and project gids come from LDAP), starts
``jupyterhub`` (which starts configurable-http-proxy and ``ecluse batch
serve`` through :func:`ecluse.batch.batch_service_spec`) on free loopback
ports, and stops everything (process group) and deletes the folder. Users sign
in with :class:`~tests.support.doubles.GroupsFromConfigAuthenticator` (hub
groups from config, as the LDAP authenticator sets them); tokens are minted by
a ``test-admin`` service.
"""

from __future__ import annotations

from pathlib import Path

from ecluse.testing import write_config

from ..support.hubservice import ServiceHub

TMP_PREFIX = "ecluse-test-batch-"

USERS: dict[str, list[str]] = {
    "sam": ["staff", "cardio-los"],  # staff and a member of the project: may export
    "erin": ["staff"],  # staff, member of no project
    "alice": ["cardio-los"],  # researcher, not staff
}


class BatchHub(ServiceHub):
    service = "batch"
    users = USERS
    tmp_prefix = TMP_PREFIX
    start_timeout = 90
    stop_timeout = 30

    def __init__(self, slapd) -> None:
        super().__init__()
        self.batch_url = f"{self.service_url}/"
        self.config = write_config(self.root / "ecluse", slapd,
                                   overrides={"sandbox.stop_grace": 1})

    def ecluse_config(self) -> Path:
        return self.config
