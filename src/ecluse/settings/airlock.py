"""Airlock settings (the ``airlock:`` section of ``ecluse.yaml``).

:func:`airlock_settings`: the section of a deployment's settings, defaults
when a caller's settings have none (a service's tests).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from . import parse_size, settings_section
from .ingress import ImportSettings


class SmtpSettings(BaseModel):
    """E-mail notifications of the airlock over SMTP (off while ``host`` is unset)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    host: str | None = Field(
        None, description="SMTP server (unset: no e-mail is sent)."
    )
    port: int = Field(587, ge=1, le=65535, description="SMTP port.")
    starttls: bool = Field(
        True, description="Upgrade the connection with STARTTLS before sending (and before "
        "logging in); a server that does not offer it fails the mail."
    )
    user: str | None = Field(None, description="SMTP login (unset: no login).")
    password_env: str | None = Field(
        "ECLUSE_SMTP_PASSWORD", description="Environment variable holding the SMTP password."
    )
    password_file: Path | None = Field(
        None, description="File holding the SMTP password (used if the variable is unset)."
    )
    from_address: str = Field(
        "airlock@localhost", description="The From address of the airlock's e-mails."
    )
    base_url: str = Field(
        "http://localhost:8000",
        description="Public URL of the hub, for the links in e-mails (the request page is "
        "<base_url>/services/airlock/requests/<id>).",
    )
    timeout: float = Field(30.0, gt=0, description="Seconds one SMTP conversation may take.")
    attempts: int = Field(
        5, ge=1, le=100, description="Tries per e-mail before it is given up (audited as "
        "airlock.mail.failed)."
    )
    retry_seconds: float = Field(
        60.0, ge=0, description="Seconds between tries (doubling after each failure)."
    )

    @model_validator(mode="after")
    def _login_over_tls(self) -> SmtpSettings:
        if self.user and not self.starttls:
            raise ValueError(
                "airlock.smtp: a login (user) needs starttls: true, or the password would "
                "cross the network in clear"
            )
        return self

    def password(self) -> str | None:
        """The SMTP password from the environment or the file (``None``: no login)."""
        import os

        if self.password_env and os.environ.get(self.password_env):
            return os.environ[self.password_env]
        if self.password_file:
            try:
                return self.password_file.read_text().strip()
            except OSError as e:
                raise ValueError(
                    f"airlock.smtp.password_file: cannot read {self.password_file}: {e.strerror}"
                ) from None
        if self.user:
            raise ValueError(
                f"airlock.smtp: user {self.user!r} without a password: set the environment "
                f"variable {self.password_env or '(none configured)'} or "
                "airlock.smtp.password_file"
            )
        return None


class AirlockSettings(BaseModel):
    """Where the airlock listens, stores files and keeps its database; review rules."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    ip: str = Field("127.0.0.1", description="Address the airlock service binds to.")
    port: int = Field(8090, ge=1, le=65535, description="Port the airlock service binds to.")
    storage_dir: Path | None = Field(
        None,
        description="Staging area holding submitted files by sha256 (default: "
        "<state_dir>/airlock). No workspace may mount it.",
    )
    database_url: str | None = Field(
        None, description="Airlock database URL (default: SQLite airlock.sqlite in the airlock's "
        "folder, storage_dir; a database of the earlier layout, <state_dir>/airlock.sqlite, is "
        "moved there when the service starts)."
    )
    required_approvals: int = Field(
        2, ge=1, le=10, description="Independent checker approvals needed before release."
    )
    max_file_bytes: int = Field(
        512 * 1024 * 1024, ge=1, description="Largest file one upload may carry (bytes)."
    )
    max_files_per_request: int = Field(
        50, ge=1, le=10000, description="Most files in one version of a request."
    )
    staging_quota_bytes: int = Field(
        10 * 1024**3, ge=1,
        description="Most bytes one user may hold in the staging area, in bytes or with a unit "
        "(e.g. 10G): the distinct files of their open requests (draft, submitted, in review, "
        "changes requested, approved). An upload that would pass it is refused (HTTP 413, "
        "audited as airlock.file.quota_exceeded) and nothing of it is kept.",
    )
    max_title_chars: int = Field(200, ge=10, description="Longest request title.")
    max_text_chars: int = Field(
        20000, ge=100, description="Longest justification, comment or override reason."
    )
    preview_rows: int = Field(
        200, ge=1, le=5000,
        description="Rows of a table kept in the checker's preview (rendered once, when the "
        "file is checked; a blocked file shows at most 20, masked).",
    )
    checker_group: str = Field(
        "output-checkers", description="Hub group whose members are output checkers."
    )
    staff_group: str = Field("staff", description="Hub group whose members are platform staff.")
    workers: int = Field(
        8, ge=1, le=64, description="Threads running database work (and waiting on checks)."
    )
    check_processes: int = Field(
        2, ge=0, le=64,
        description="Worker processes running disclosure checks (0: in the service's threads).",
    )
    check_in_background: bool = Field(
        True,
        description="An upload answers once its bytes are stored, with the verdict "
        "`checking`, and the file is checked afterwards (check_processes at once; re-queued "
        "when the airlock restarts); a request is submitted once every file has its "
        "verdict. false: an upload answers only after its check.",
    )
    check_timeout: float = Field(
        300.0, gt=0, description="Seconds one file's disclosure check may take (then: review)."
    )
    check_runner: Literal["sandbox", "process"] = Field(
        "sandbox",
        description="Where the service runs disclosure checks and renders previews: "
        "`sandbox` (a one-shot sandbox per file through ecluse.sandbox: unprivileged, no "
        "network, no datasets, limits) or `process` (worker processes of the service; "
        "development only).",
    )
    check_user: str = Field(
        "ecluse-check", pattern=r"^[a-z_][a-z0-9_.-]{0,63}$",
        description="User name inside a check sandbox.",
    )
    check_uid: int = Field(
        64900, ge=1000,
        description="uid running checks in a sandbox: no LDAP user and no service may use it.",
    )
    check_gid: int = Field(
        64900, ge=1000, description="gid of the check sandbox (and of the file copy it reads)."
    )
    check_cpu: float = Field(1.0, gt=0, le=64, description="CPU cores of one check sandbox.")
    check_cpu_weight: float = Field(
        0.125, gt=0, le=64,
        description="CPU weight of all check sandboxes together when the host is busy, in "
        "busy processes' worth (the workspaces weigh one per core): checks run in the "
        "background and yield to the API and the workspaces; alone they use check_cpu "
        "each.",
    )
    check_memory: int = Field(
        2 * 1024**3, ge=64 * 1024**2,
        description="Memory limit of one check sandbox in bytes, or with a unit (e.g. 2G); "
        "over it the file goes to review.",
    )
    purge_after_days: float = Field(
        30.0, gt=0,
        description="Days after which the staged files of withdrawn and rejected requests "
        "are deleted (audited as airlock.request.purged).",
    )
    purge_interval_seconds: float = Field(
        3600.0, ge=0,
        description="How often the running service purges (0: never; then run "
        "`ecluse airlock purge` from cron).",
    )
    reviewers_by: Literal["directory", "name"] = Field(
        "directory",
        description="How reviewers are told apart: `directory` (by the directory entry's DN "
        "and uidNumber, asked of LDAP at each review and release: one person with two "
        "login names, or two accounts with one uidNumber, reviews once; reviews are refused "
        "while the directory does not answer) or `name` (by hub name only: for test stacks "
        "without a directory, never in production).",
    )
    service_user: str | None = Field(
        None, pattern=r"^[a-z_][a-z0-9_.-]{0,31}$",
        description="System user the hub runs the airlock service as (e.g. ecluse-airlock; "
        "unset: the hub's own user). The hub must run as root; the user must exist, be in "
        "the launcher's group (sandbox.launcher_socket) and own the airlock's folders, and "
        "the service's Python must be reachable by it. The service starts in /.",
    )
    group_cache_seconds: float = Field(
        30.0, ge=0, description="Seconds a user's hub groups are cached by the service."
    )
    imports: ImportSettings = Field(
        default_factory=ImportSettings,
        description="Import requests: files brought into a project's `/project/inbox` "
        "after checks and an approval (docs/airlock.md, Imports).",
    )
    smtp: SmtpSettings = Field(
        default_factory=SmtpSettings,
        description="E-mail notifications: checkers on submission, the requester on each "
        "decision and on release; a link to the request, never file names or content.",
    )

    @field_validator("check_memory", "staging_quota_bytes", mode="before")
    @classmethod
    def _size(cls, v: Any) -> int:
        return parse_size(v)

    def resolved_storage_dir(self, state_dir: Path) -> Path:
        return Path(self.storage_dir) if self.storage_dir else Path(state_dir) / "airlock"

    def resolved_database_url(self, state_dir: Path) -> str:
        """The database URL; the default is ``<storage_dir>/airlock.sqlite``, where a
        database of the earlier layout (``<state_dir>/airlock.sqlite``) is moved first."""
        if self.database_url:
            return self.database_url
        folder = self.resolved_storage_dir(state_dir)
        move_legacy_database(Path(state_dir) / DB_NAME, folder / DB_NAME)
        return f"sqlite:///{folder / DB_NAME}"


DB_NAME = "airlock.sqlite"
#: SQLite's files next to a database (written-ahead pages, shared memory, hot journal)
SIDECARS = ("-wal", "-shm", "-journal")


def move_legacy_database(old: Path, new: Path) -> None:
    """Move the airlock's SQLite database (and its sidecar files) from the state directory
    to the airlock's own folder, once: the folder the airlock's user owns holds its files,
    and the state directory stays root's. The sidecars move first and the database last,
    so an interrupted move is finished by the next start and loses nothing. A service
    that cannot see the state directory (its own user) has nothing to move: root moved it
    (``ecluse up``, the install)."""
    import os
    import shutil

    if os.path.lexists(new) or not os.path.lexists(old):  # False also where we may not look
        return
    new.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    for suffix in (*SIDECARS, ""):
        src, dst = Path(f"{old}{suffix}"), Path(f"{new}{suffix}")
        if not src.exists():
            continue
        try:
            os.rename(src, dst)
        except OSError:  # another file system: copy, then remove
            shutil.copy2(src, dst)
            os.unlink(src)


def airlock_settings(settings: Any) -> AirlockSettings:
    """The airlock section of a deployment's settings (defaults when absent)."""
    return settings_section(settings, "airlock", AirlockSettings)
