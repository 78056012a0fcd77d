"""One validated settings model for an Écluse deployment.

Two YAML files describe a deployment:

* ``ecluse.yaml`` — the deployment: hub, state directory, database, LDAP,
  sandbox backend and the default disclosure policy;
* ``projects.yaml`` — the research projects: LDAP group, title, datasets,
  quotas and per-project disclosure overrides.

:func:`load_settings` reads both into one :class:`Settings`. Unknown keys are
rejected and every error names the file, the key and what was expected, e.g.::

    config/ecluse.yaml: ldap.connect_timeout: expected a number, got 'soon'

Relative paths in a file are resolved against the directory of that file.
Secrets are never stored in these files: the LDAP service password comes from
an environment variable or a file named here.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from ldap3.utils.dn import parse_dn
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .auditkeys import AuditSettings, default_checkpoint_file, default_key_dir
from .sdc.policy import DisclosurePolicy
from .settings import parse_size
from .settings.airlock import AirlockSettings
from .settings.batch import BatchSettings
from .settings.dask import DaskSettings
from .settings.mirror import MirrorSettings

SLUG_RE = re.compile(r"^[a-z][a-z0-9-]{1,38}[a-z0-9]$")
DEFAULT_CONFIG = Path("config/ecluse.yaml")
CONFIG_ENV = "ECLUSE_CONFIG"


class ConfigError(Exception):
    """A configuration file is missing, malformed or invalid.

    The message is meant for the operator: it names the file, the key and
    what was expected.
    """


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ---------------------------------------------------------------- deployment


class HubSettings(_Model):
    ip: str = Field("127.0.0.1", description="Address the proxy's public side binds to.")
    port: int = Field(8000, ge=1, le=65535, description="Port the proxy's public side binds to.")
    public_url: str = Field(
        "http://127.0.0.1:8000", description="URL users type in their browser (used in links)."
    )
    hub_port: int = Field(
        8081, ge=1, le=65535, description="Port of the hub's internal API (proxy and sandboxes)."
    )
    proxy_api_port: int = Field(8001, ge=1, le=65535, description="Port of the proxy's REST API.")
    route_filter_port: int = Field(
        8002, ge=1, le=65535,
        description="Loopback port of the host-side route filter between the proxy and the "
        "workspaces (see docs/sandbox.md).",
    )
    admin_users: list[str] = Field(
        default_factory=list,
        description="Usernames with full hub admin. Empty by default: staff get scoped roles.",
    )
    staff_are_admins: bool = Field(
        False, description="Give members of the staff group full hub admin (not least privilege)."
    )
    auth_refresh_age: int = Field(
        300, ge=0, description="Seconds after which LDAP groups are re-read for a signed-in user."
    )
    revocation_interval: float = Field(
        300, ge=0,
        description="Seconds between two passes of the membership reconciler, which stops "
        "the workspaces of users who left a project and removes the project from their "
        "tokens (0: no reconciler; leaving then takes effect at the next refresh only).",
    )
    token_max_age: int = Field(
        8 * 3600, ge=60,
        description="Longest lifetime, in seconds, of a token a user creates (Token page or "
        "API); a token asked for without an expiry gets this one.",
    )
    login_max_failures: int = Field(
        5, ge=1,
        description="Failed sign-ins of one user before further attempts wait "
        "(login_backoff) and are refused without asking the directory.",
    )
    login_max_failures_per_address: int = Field(
        50, ge=1,
        description="Failed sign-ins from one client address before it waits: higher than "
        "per user, as many people share an address (VDI, NAT).",
    )
    login_backoff: int = Field(
        30, ge=1,
        description="Seconds of the first wait after login_max_failures failures; doubled at "
        "each further failure, up to login_backoff_max.",
    )
    login_backoff_max: int = Field(
        900, ge=1, description="Longest wait, in seconds, between sign-in attempts."
    )
    authenticator: Literal["ldap", "oidc"] = Field(
        "ldap",
        description="How people sign in: 'ldap' (password in the hub's form, and the TOTP "
        "second factor of mfa), or 'oidc' (the hospital's OpenID Connect provider, which "
        "asks the second factor itself; see the oidc section). Groups come from LDAP either way.",
    )
    spawner: str = Field(
        "ecluse",
        description="Spawner class or entry-point name used for workspaces ('simple' for "
        "a plain local process spawner with no isolation — development only).",
    )
    service_user: str | None = Field(
        None, pattern=r"^[a-z_][a-z0-9_.-]{0,31}$",
        description="System user the hub (JupyterHub, the spawner, configurable-http-proxy, "
        "the route filter) runs as, e.g. ecluse-hub (unset: the user that starts it). Set, "
        "the hub's own files are in <state>/hub/ (its secrets, sign-in factor store, pid "
        "files) and <database folder>/hub/ (its database), owned by that user; the "
        "managed services (airlock, batch, dask-gateway) are external services of the hub "
        "(URL and token), started by `ecluse up` or their own systemd units as their own "
        "users; workspaces, the host address and the hub's audit records go through the "
        "sandbox launcher (sandbox.launcher_socket). `ecluse up` as root sets it "
        "(--hub-user, default ecluse-hub).",
    )


MFA_ROLES = ("researcher", "output-checker", "staff")
#: roles whose second factor cannot be turned off (SATRE 3.2.04)
MFA_ALWAYS = ("output-checker", "staff")


class MfaSettings(_Model):
    required_for: list[Literal["researcher", "output-checker", "staff"]] = Field(
        default_factory=lambda: list(MFA_ROLES),
        description="Roles that must give a TOTP code at sign-in (researcher: a member "
        "of a project). output-checker and staff cannot be left out. A user who has "
        "enrolled gives a code whatever their role.",
    )
    issuer: str = Field(
        "Écluse", description="Name shown for the account in the user's authenticator app."
    )
    valid_window: int = Field(
        1, ge=0, le=10,
        description="Time steps (30 s) either side of now whose code is accepted, for "
        "clock drift. 1 is what RFC 6238 recommends; a code is never accepted twice.",
    )
    key_file: Path | None = Field(
        None,
        description="File holding the key (32 bytes, hex) that encrypts the TOTP secrets. "
        "Default: <state_dir>/secrets/totp_key, generated at first start. Kept apart "
        "from the hub database and from the secrets store (mfa.sqlite).",
    )
    enrol_timeout: int = Field(
        600, ge=60, description="Seconds a user has to confirm enrolment after the password."
    )

    @field_validator("required_for")
    @classmethod
    def _never_off_for_staff(cls, v: list[str]) -> list[str]:
        missing = [r for r in MFA_ALWAYS if r not in v]
        if missing:
            raise ValueError(
                f"the second factor cannot be turned off for {', '.join(missing)} "
                f"(must include {', '.join(MFA_ALWAYS)})")
        return sorted(set(v), key=MFA_ROLES.index)


class OidcSettings(_Model):
    issuer: str = Field(
        ..., description="Issuer URL of the hospital's OpenID Connect provider (its "
        "/.well-known/openid-configuration is read at hub start). https, or http on loopback.",
    )
    client_id: str = Field(..., description="The hub's client id at the provider.")
    client_secret_file: Path | None = Field(
        None, description="File holding the client secret (mode 0600; never in this file)."
    )
    client_secret_env: str | None = Field(
        "ECLUSE_OIDC_CLIENT_SECRET",
        description="Environment variable holding the client secret, when no file is given.",
    )
    username_claim: str = Field(
        "preferred_username",
        description="ID token claim holding the directory user name (looked up in LDAP for "
        "projects and roles).",
    )
    scopes: list[str] = Field(
        default_factory=lambda: ["openid", "profile"], description="Scopes asked for."
    )
    required_acr: list[str] = Field(
        default_factory=list,
        description="acr values (any one) the ID token must carry, e.g. "
        "'https://refeds.org/profile/mfa'; also sent as acr_values. Empty: not checked.",
    )
    required_amr: list[str] = Field(
        default_factory=list,
        description="amr methods of which the ID token must list at least one, e.g. "
        "['mfa', 'otp', 'hwk']. Empty: not checked.",
    )
    ca_file: Path | None = Field(None, description="CA bundle used to verify the provider.")
    login_service: str = Field(
        "your hospital account", description="Shown on the button: 'Sign in with …'."
    )

    @field_validator("issuer")
    @classmethod
    def _secure_issuer(cls, v: str) -> str:
        from urllib.parse import urlsplit

        u = urlsplit(v)
        if u.scheme == "https" or (u.scheme == "http" and _is_loopback(u.hostname or "")):
            return v.rstrip("/")
        raise ValueError(f"expected an https:// URL (http only on loopback), got {v!r}")


def _is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LDAPSettings(_Model):
    embedded: bool = Field(
        False,
        description="Start a local slapd on loopback with a demo directory (development only).",
    )
    uri: str = Field(..., description="ldap:// or ldaps:// URI of the directory server.")
    security: Literal["none", "starttls", "ldaps"] = Field(
        "starttls", description="Transport security: none, starttls or ldaps."
    )
    ca_file: Path | None = Field(None, description="CA bundle used to verify the server.")
    base_dn: str = Field(..., description="Base DN of the directory.")
    bind_dn: str = Field(..., description="DN of the service account used for searches.")
    bind_password_env: str | None = Field(
        "ECLUSE_LDAP_BIND_PASSWORD",
        description="Environment variable holding the service account password.",
    )
    bind_password_file: Path | None = Field(
        None, description="File holding the service account password (used if the env is unset)."
    )
    user_search_base: str = Field(..., description="Where user entries are searched.")
    user_object_class: str = Field("posixAccount", description="objectClass of user entries.")
    username_attribute: str = Field("uid", description="Attribute holding the login name.")
    username_pattern: str = Field(
        r"^[a-z_][a-z0-9_.-]{0,31}$",
        description="Login names must match this pattern before anything is sent to LDAP.",
    )
    group_search_base: str = Field(..., description="Where group entries are searched.")
    group_name_attribute: str = Field("cn", description="Attribute holding a group's name.")
    group_member_attributes: list[Literal["member", "uniqueMember", "memberUid"]] = Field(
        default_factory=lambda: ["member", "uniqueMember", "memberUid"],
        description="Group attributes that list members (DN-valued or uid-valued).",
    )
    output_checker_group: str = Field(
        "ecluse-output-checkers", description="LDAP group whose members are output checkers."
    )
    staff_group: str = Field("ecluse-staff", description="LDAP group whose members are staff.")
    connect_timeout: float = Field(3.0, gt=0, le=120, description="Seconds to open a connection.")
    receive_timeout: float = Field(
        5.0, gt=0, le=300, description="Seconds to wait for any LDAP answer."
    )
    port: int | None = Field(
        None, ge=1, le=65535, description="Port for the embedded slapd (default: from uri)."
    )

    @field_validator("username_pattern")
    @classmethod
    def _pattern_compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"not a valid regular expression: {e}") from None
        return v

    @field_validator("uri")
    @classmethod
    def _uri_scheme(cls, v: str) -> str:
        if not re.match(r"^ldaps?://[^/\s]+/?$", v):
            raise ValueError("expected ldap://host:port or ldaps://host:port")
        return v

    @model_validator(mode="after")
    def _ldaps_consistent(self) -> LDAPSettings:
        if self.security == "ldaps" and not self.uri.startswith("ldaps://"):
            raise ValueError("security 'ldaps' needs an ldaps:// uri")
        if self.security != "ldaps" and self.uri.startswith("ldaps://"):
            raise ValueError("an ldaps:// uri needs security: ldaps")
        if self.security == "none" and not _is_loopback(self.host):
            raise ValueError(
                f"security 'none' sends passwords in clear: it is allowed only for a "
                f"directory on loopback (127.0.0.0/8, ::1, localhost), not {self.host!r}; "
                "use security: starttls (ldap://) or ldaps (ldaps://)"
            )
        return self

    @property
    def host(self) -> str:
        return self.uri.split("://", 1)[1].rstrip("/").rsplit(":", 1)[0]

    @property
    def uri_port(self) -> int:
        hostport = self.uri.split("://", 1)[1].rstrip("/")
        if ":" in hostport:
            return int(hostport.rsplit(":", 1)[1])
        return 636 if self.uri.startswith("ldaps://") else 389

    def bind_password(self) -> str:
        """Return the service password from the environment or the password file.

        Raises :class:`ConfigError` naming both sources when neither is set.
        """
        if self.bind_password_env and os.environ.get(self.bind_password_env):
            return os.environ[self.bind_password_env]
        if self.bind_password_file:
            try:
                return self.bind_password_file.read_text().strip()
            except PermissionError as e:
                raise ConfigError(_unreadable_password_file(self.bind_password_file,
                                                            self.bind_password_env, e)) from None
            except OSError as e:
                raise ConfigError(
                    f"ldap.bind_password_file: cannot read {self.bind_password_file}: {e.strerror}"
                ) from None
        raise ConfigError(
            "ldap: no service account password: set the environment variable "
            f"{self.bind_password_env or '(none configured)'} or ldap.bind_password_file"
        )


def _unreadable_password_file(path: Path, env: str | None, e: OSError) -> str:
    """Why a service (the hub as ``hub.service_user``, most often) cannot read the LDAP
    password file, and the two ways out."""
    import pwd

    uid = os.geteuid()
    try:
        who = f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        who = f"uid {uid}"
    return (f"ldap.bind_password_file: {path} is not readable by {who}, the user this "
            f"process runs as ({e.strerror}); a hub running as its own user "
            "(hub.service_user) cannot read a password file only root may read: give the "
            "password in the environment variable named by ldap.bind_password_env "
            f"({env or 'none configured'}; `ecluse up` and the Ansible units set it), or "
            f"let {who.split(' ')[0]} read the file (its group, mode 0640)")


class SandboxSettings(_Model):
    backend: Literal["local", "docker", "kubernetes"] = Field(
        "local", description="Sandbox backend: local (bubblewrap), docker or kubernetes."
    )
    projects_root: Path | None = Field(
        None,
        description="Where project shared folders and per-user homes live "
        "(default: <state_dir>/projects).",
    )
    start_timeout: int = Field(120, ge=5, description="Seconds a workspace may take to start.")
    stop_grace: float = Field(
        10.0, ge=0, description="Seconds between SIGTERM and SIGKILL when a sandbox stops."
    )
    subnet: str = Field(
        "10.213.0.0/16",
        description="Private range carved into one /30 per sandbox (local and docker backends).",
    )
    python_env: Path | None = Field(
        None,
        description="Python environment mounted read-only in workspaces (default: the "
        "environment running Écluse).",
    )
    idle_timeout: int = Field(
        3600, ge=0, description="Seconds without activity before a workspace is culled (0: never)."
    )
    max_server_age: int = Field(
        12 * 3600, ge=0,
        description="Seconds after which a workspace is stopped even when active (idle "
        "culler --max-age; 0: never). It is started again, after a fresh membership check.",
    )
    image: str = Field(
        "ecluse/workspace:0.1.0", description="Workspace image (docker and kubernetes backends)."
    )
    docker_url: str | None = Field(
        None,
        description="Docker backend: the Engine API socket, e.g. unix:///run/ecluse/docker/"
        "docker.sock (default: $DOCKER_HOST, else unix:///var/run/docker.sock).",
    )
    kubernetes: dict[str, Any] = Field(
        default_factory=dict,
        description="Kubernetes backend: values of the KubernetesSandbox settings "
        "(hub_namespace, namespace_template, storage_class, access_mode, home_size, "
        "kubeconfig, node_selector, allow_dns, egress_components...; see "
        "docs/deploy-kubernetes.md). Default: in-cluster, the hub in namespace ecluse.",
    )
    project_volumes: Literal["none", "sparse", "preallocated"] = Field(
        "none",
        description="Local backend: each project folder is its own ext4 filesystem of "
        "quota.disk bytes ('preallocated': space reserved up front; 'sparse': taken as "
        "written; 'none': no disk quota).",
    )
    launcher_socket: Path | None = Field(
        None,
        description="Unix socket of the sandbox launcher (`ecluse sandbox launcher`, root). "
        "When set, the airlock, batch, dask-gateway and the spawner start sandboxes through "
        "it (each with its own policy) and may run as non-root users; unset: each service "
        "starts sandboxes itself and must run as root.",
    )
    launcher_group: str | None = Field(
        None,
        description="Group owning the launcher's socket (mode 0660): the services' users "
        "are its members. Unset: the socket is root's only (0600).",
    )
    launcher_callers: dict[Literal["hub", "airlock", "batch", "dask"], str] = Field(
        default_factory=dict,
        description="Who may ask the launcher for what: caller (hub, airlock, batch, dask) -> "
        "the system user (name or uid) its service runs as. The launcher knows a caller by "
        "the kernel-verified uid of its socket peer; any other uid is refused.",
    )


class StateVolumeSettings(_Model):
    mode: Literal["none", "image", "mounted"] = Field(
        "none",
        description="Where the state's databases (hub, audit, airlock, batch queue) live: "
        "'image': an ext4 image <state_dir>/db.ext4 of `size` bytes, reserved up front, "
        "mounted on <state_dir>/db by `ecluse up` (with the file checkpoint sink, the "
        "checkpoints get their own image too); 'mounted': a filesystem of its own the "
        "operator mounts on <state_dir>/db (a disk, an LVM volume); 'none': in the state "
        "directory, on the projects' disk.",
    )
    size: int = Field(1024**3, description="Image mode: size of the state volume (grown "
                      "when raised, never shrunk), e.g. 1G.")
    checkpoint_size: int = Field(64 * 1024**2, description="Image mode with the file "
                                 "checkpoint sink at its default place: size of the audit "
                                 "checkpoints' volume, e.g. 64M.")

    @field_validator("size", "checkpoint_size", mode="before")
    @classmethod
    def _size(cls, v: Any) -> int:
        return parse_size(v)


HUB_DB, AUDIT_DB, AUDIT_JSONL = "jupyterhub.sqlite", "audit.sqlite", "audit.jsonl"
#: the hub's own folder in the state directory and in the database folder (hub_dir)
HUB_FOLDER = "hub"


def sqlite_url(directory: Path, name: str) -> str:
    return f"sqlite:///{Path(directory) / name}"


class Settings(_Model):
    """The whole deployment, as read from ``ecluse.yaml`` and ``projects.yaml``."""

    config_file: Path | None = Field(None, exclude=True)
    state_dir: Path = Field(Path(".ecluse"), description="Secrets, databases and logs.")
    database_url: str | None = Field(
        None, description="Hub database URL (default: SQLite in the state dir)."
    )
    audit_database_url: str | None = Field(
        None, description="Audit log database URL (default: SQLite audit.sqlite in the state dir)."
    )
    projects_file: Path = Field(Path("projects.yaml"), description="The projects definition.")
    state_volume: StateVolumeSettings = Field(default_factory=StateVolumeSettings)
    hub: HubSettings = Field(default_factory=HubSettings)
    mfa: MfaSettings = Field(default_factory=MfaSettings)
    oidc: OidcSettings | None = Field(
        None, description="OpenID Connect sign-in (with hub.authenticator: oidc)."
    )
    ldap: LDAPSettings
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)
    disclosure: DisclosurePolicy = Field(default_factory=DisclosurePolicy)
    airlock: AirlockSettings = Field(default_factory=AirlockSettings)
    dask: DaskSettings = Field(default_factory=DaskSettings)
    batch: BatchSettings = Field(default_factory=BatchSettings)
    mirror: MirrorSettings = Field(default_factory=MirrorSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    projects: dict[str, Project] = Field(default_factory=dict, exclude=True)

    @property
    def db_dir(self) -> Path:
        """Where the state's SQLite databases live: the state volume when there is one
        (:mod:`ecluse.statevolume`; raises when it is not mounted)."""
        # deferred: import cycle (statevolume reads the settings)
        from .statevolume import database_dir

        return database_dir(self)

    @property
    def hub_dir(self) -> Path:
        """The hub's own folder: ``<state>/hub`` when the hub runs as a user of its own
        (``hub.service_user``) or that folder exists (it then holds the hub's files
        whoever reads them: ``ecluse dev totp``), else the state directory."""
        own = Path(self.state_dir) / HUB_FOLDER
        return own if self.hub.service_user or own.is_dir() else Path(self.state_dir)

    @property
    def hub_secrets_dir(self) -> Path:
        """Where the hub's secrets are (cookie secret, crypt key, proxy token, TOTP key)."""
        return self.hub_dir / "secrets"

    @property
    def hub_db_dir(self) -> Path:
        """The folder of the hub's SQLite database: ``<db_dir>/hub`` beside ``hub_dir``."""
        if self.hub_dir == Path(self.state_dir):
            return self.db_dir
        return self.db_dir / HUB_FOLDER

    @property
    def hub_database_url(self) -> str:
        return self.database_url or sqlite_url(self.hub_db_dir, HUB_DB)

    @property
    def audit_db_url(self) -> str:
        return self.audit_database_url or sqlite_url(self.db_dir, AUDIT_DB)

    @property
    def audit_jsonl_path(self) -> Path:
        return self.db_dir / AUDIT_JSONL

    @property
    def projects_root(self) -> Path:
        return self.sandbox.projects_root or self.state_dir / "projects"

    def project_for_group(self, group: str) -> Project | None:
        for p in self.projects.values():
            if p.ldap_group == group:
                return p
        return None

    def policy_for(self, slug: str) -> DisclosurePolicy:
        """The effective disclosure policy of a project (deployment defaults + overrides)."""
        return self.disclosure.merged(self.projects[slug].disclosure)


# ------------------------------------------------------------------ projects


class Dataset(_Model):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$", description="Name under /data.")
    path: Path = Field(..., description="Host path of the dataset (mounted read-only).")
    description: str = ""


class Quota(_Model):
    cpu: float = Field(1.0, gt=0, le=256, description="CPU cores.")
    memory: int = Field(2 * 1024**3, description="Memory limit (e.g. 2G).")
    disk: int = Field(10 * 1024**3, description="Disk quota of the shared folder (e.g. 10G).")
    dask_workers: int = Field(2, ge=0, le=256, description="Most Dask workers per cluster.")
    pids: int = Field(512, ge=16, description="Most processes and threads in one sandbox.")

    @field_validator("memory", "disk", mode="before")
    @classmethod
    def _size(cls, v: Any) -> int:
        return parse_size(v)


class Project(_Model):
    slug: str = Field(..., description="Project identifier (server name, hub group name).")
    title: str = Field(..., min_length=1)
    ldap_group: str = Field(
        ..., min_length=1,
        description="LDAP group of the project members, by DN (cn=…,ou=groups,…). A bare "
        "name is accepted only when exactly one group has it under ldap.group_search_base "
        "(checked when the hub starts and by `ecluse config check`).",
    )
    gid: int | None = Field(
        None, ge=1000, description="gidNumber of the project group (filled from LDAP)."
    )
    datasets: list[Dataset] = Field(default_factory=list)
    quota: Quota = Field(default_factory=Quota)
    disclosure: dict[str, Any] = Field(
        default_factory=dict, description="Overrides of the deployment disclosure policy."
    )
    members_may_review: bool = Field(
        False, description="Allow project members to review this project's exports."
    )
    data_owner_group: str | None = Field(
        None, min_length=1,
        description="LDAP group (by DN, or a bare name) of the project's data owners: its "
        "members, besides staff, approve the project's import requests (never their own). "
        "Unset: staff only.",
    )

    @field_validator("ldap_group", "data_owner_group")
    @classmethod
    def _group_dn(cls, v: str | None) -> str | None:
        if v is not None and "=" in v:
            try:
                parse_dn(v, strip=True)
            except Exception:  # noqa: BLE001 - ldap3 raises several kinds
                raise ValueError(
                    f"{v!r} is not a valid DN: expected cn=<name>,ou=<unit>,dc=… or a bare "
                    "group name") from None
        return v

    @field_validator("slug")
    @classmethod
    def _slug(cls, v: str) -> str:
        if v in ("output-checkers", "staff"):
            raise ValueError(f"{v!r} is reserved for a role group")
        if not SLUG_RE.match(v):
            raise ValueError(
                "expected a slug: 3-40 lower-case letters, digits and dashes, starting "
                "with a letter"
            )
        return v

    @field_validator("disclosure")
    @classmethod
    def _disclosure(cls, v: dict[str, Any]) -> dict[str, Any]:
        DisclosurePolicy().merged(v)  # validates names and types
        return v


def is_dn(value: str) -> bool:
    """A group named by DN (``cn=…,ou=…``) rather than by its bare name."""
    return "=" in value


def normalize_dn(dn: str) -> str:
    """A DN compared case-insensitively, without spaces around separators."""
    try:
        parts = parse_dn(dn, strip=True)
    except Exception:  # noqa: BLE001 - ldap3 raises several kinds for a malformed DN
        return dn.strip().lower()
    return ",".join(f"{attr.strip().lower()}={value.strip().lower()}"
                    for attr, value, _ in parts)


def group_key(ldap_group: str) -> str:
    """How a configured group (``ldap_group``, checker/staff group) is matched:
    its normalised DN, or its bare name."""
    return normalize_dn(ldap_group) if is_dn(ldap_group) else ldap_group


class ProjectsFile(_Model):
    projects: dict[str, Project] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _inject_slugs(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("projects"), dict):
            for slug, body in data["projects"].items():
                if isinstance(body, dict):
                    body.setdefault("slug", slug)
        return data


# ------------------------------------------------------------------- loading


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _format_error(path: Path, err: dict[str, Any], model: type[BaseModel]) -> str:
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        parent = _model_at(model, err["loc"][:-1])
        allowed = ", ".join(parent.model_fields) if parent else "see docs/reference/config.md"
        return f"{path}: {loc}: unknown key; expected one of: {allowed}"
    if kind == "missing":
        return f"{path}: {loc}: required key is missing"
    msg = err["msg"]
    msg = msg.replace("Value error, ", "")
    expected = {
        "int_parsing": "expected an integer",
        "int_type": "expected an integer",
        "float_parsing": "expected a number",
        "float_type": "expected a number",
        "bool_parsing": "expected true or false",
        "bool_type": "expected true or false",
        "string_type": "expected a string",
        "dict_type": "expected a mapping",
        "model_type": "expected a mapping",
        "list_type": "expected a list",
    }.get(kind, msg[:1].lower() + msg[1:])
    return f"{path}: {loc}: {expected}, got {_describe(err.get('input'))}"


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    current: Any = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                # a dict key (project slug): stay on the value type
                continue
            current = _unwrap(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    args = getattr(annotation, "__args__", None)
    if args:
        for a in reversed(args):
            if isinstance(a, type) and issubclass(a, BaseModel):
                return a
    return annotation


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a YAML file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{path}: {where}malformed YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _validate(model: type[BaseModel], data: dict[str, Any], path: Path) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        lines = [_format_error(path, err, model) for err in e.errors()]
        raise ConfigError("\n".join(lines)) from None


def _resolve(base: Path, p: Path | None) -> Path | None:
    if p is None:
        return None
    p = Path(os.path.expanduser(p))
    return p if p.is_absolute() else (base / p).resolve()


def load_projects(path: Path) -> dict[str, Project]:
    path = Path(path)
    parsed: ProjectsFile = _validate(ProjectsFile, _read_yaml(path), path)
    base = path.parent.resolve()
    groups: dict[str, str] = {}
    for slug, project in parsed.projects.items():
        if project.slug != slug:
            raise ConfigError(f"{path}: projects.{slug}.slug: must equal the key {slug!r}")
        key = group_key(project.ldap_group)
        if key in groups:
            raise ConfigError(
                f"{path}: projects.{slug}.ldap_group: {project.ldap_group!r} is already used "
                f"by project {groups[key]!r}"
            )
        groups[key] = slug
        names = set()
        for i, ds in enumerate(project.datasets):
            if ds.name in names:
                raise ConfigError(
                    f"{path}: projects.{slug}.datasets.{i}.name: duplicate dataset {ds.name!r}"
                )
            names.add(ds.name)
            ds.path = _resolve(base, ds.path)
    return parsed.projects


def config_path(path: str | os.PathLike | None = None) -> Path:
    """The config file to use: the argument, ``$ECLUSE_CONFIG`` or ``config/ecluse.yaml``."""
    if path:
        return Path(path)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    return DEFAULT_CONFIG


def load_settings(
    path: str | os.PathLike | None = None,
    *,
    state_dir: str | os.PathLike | None = None,
    port: int | None = None,
) -> Settings:
    """Load and validate the deployment and its projects.

    ``state_dir`` and ``port`` override the file (as ``ecluse up`` flags do).
    Raises :class:`ConfigError` with one line per problem.
    """
    path = config_path(path)
    data = _read_yaml(path)
    settings: Settings = _validate(Settings, data, path)
    base = path.parent.resolve()
    settings.config_file = path.resolve()
    settings.state_dir = (
        Path(state_dir).resolve() if state_dir else _resolve(base, settings.state_dir)
    )
    if port:
        settings.hub.port = port
        settings.hub.public_url = f"http://{settings.hub.ip}:{port}"
    settings.projects_file = _resolve(base, settings.projects_file)
    settings.ldap.ca_file = _resolve(base, settings.ldap.ca_file)
    settings.ldap.bind_password_file = _resolve(base, settings.ldap.bind_password_file)
    settings.sandbox.projects_root = _resolve(base, settings.sandbox.projects_root)
    settings.sandbox.python_env = _resolve(base, settings.sandbox.python_env)
    settings.airlock.storage_dir = _resolve(base, settings.airlock.storage_dir)
    settings.mfa.key_file = _resolve(base, settings.mfa.key_file)
    if settings.oidc is not None:
        settings.oidc.client_secret_file = _resolve(base, settings.oidc.client_secret_file)
        settings.oidc.ca_file = _resolve(base, settings.oidc.ca_file)
    if settings.hub.authenticator == "oidc" and settings.oidc is None:
        raise ConfigError(f"{path}: oidc: required with hub.authenticator: oidc "
                          "(issuer, client_id, client secret)")
    _resolve_audit(path, base, settings)
    settings.projects = load_projects(settings.projects_file)
    return settings


def _resolve_audit(path: Path, base: Path, settings: Settings) -> None:
    """Audit keys and checkpoints: resolved, and never inside the state directory
    (whoever can write the state directory must not hold them)."""
    audit = settings.audit
    audit.key_dir = _resolve(base, audit.key_dir) or default_key_dir(settings.state_dir)
    audit.checkpoint_file = (
        _resolve(base, audit.checkpoint_file) or default_checkpoint_file(settings.state_dir)
    )
    state = settings.state_dir.resolve()
    for key in ("key_dir", "checkpoint_file"):
        value = getattr(audit, key).resolve()
        if value == state or state in value.parents:
            raise ConfigError(
                f"{path}: audit.{key}: must be outside the state directory {state}, got {value}"
            )


SECRET_MASK = "********"


def effective_settings(settings: Settings) -> dict[str, Any]:
    """The settings as plain data for display, secrets masked."""
    data = settings.model_dump(mode="json")
    ldap = data["ldap"]
    env = settings.ldap.bind_password_env
    try:
        settings.ldap.bind_password()
        ldap["bind_password"] = SECRET_MASK
    except ConfigError:
        ldap["bind_password"] = "(not set)"
    if env:
        ldap["bind_password_env"] = env
    if data.get("database_url") and "@" in data["database_url"]:
        data["database_url"] = re.sub(r"://([^:/@]+):[^@]*@", r"://\1:" + SECRET_MASK + "@",
                                      data["database_url"])
    data["projects"] = {
        slug: {
            **p.model_dump(mode="json", exclude={"slug"}),
            "effective_disclosure": settings.policy_for(slug).model_dump(),
        }
        for slug, p in settings.projects.items()
    }
    return data
Settings.model_rebuild()
