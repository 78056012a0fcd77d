"""The audit log's keys, its signed checkpoints and where they go.

Attacker model (docs/operations.md, "Audit log"): someone who can write the
state directory — the audit database, its JSON Lines mirror, every other
file there — but holds neither the audit keys nor the checkpoint sink.

* **HMAC key** (``audit-hmac.key``, 32 random bytes in hex): every record's
  hash is HMAC-SHA256 under this key over the record and the previous hash.
  Without the key nobody can produce a record that verifies, so deleting,
  inserting, reordering or rewriting records and recomputing the hashes no
  longer passes.
* **Checkpoint signing key** (``audit-checkpoint.key``, Ed25519, PEM) and its
  public half (``audit-checkpoint.pub``): after a record is written the writer
  signs a *checkpoint* — log id, record count, head hash, time — and sends it
  to a second sink outside the state directory (a file, or syslog). Anyone
  with the public key verifies checkpoints off-host and cannot forge one.
  They catch what a chain cannot: dropping the last record(s).

Both keys live in ``audit.key_dir``, outside the state directory, readable
by the audit writers only; they are generated at install (``ecluse audit
init``, the Ansible hub role) or at the first start of ``ecluse up``.
"""

from __future__ import annotations

import base64
import errno
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import socket
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

HMAC_KEY_FILE = "audit-hmac.key"
SIGNING_KEY_FILE = "audit-checkpoint.key"
PUBLIC_KEY_FILE = "audit-checkpoint.pub"
#: marks a checkpoint in a file or a syslog line
CHECKPOINT_TAG = "ecluse-audit-checkpoint"
#: syslog program name (rsyslog: ``:programname, isequal, "ecluse-audit"``)
SYSLOG_IDENT = "ecluse-audit"

SYSLOG_FACILITIES = {
    "kern": 0, "user": 1, "daemon": 3, "auth": 4, "syslog": 5, "authpriv": 10,
    **{f"local{i}": 16 + i for i in range(8)},
}


class AuditSettings(BaseModel):
    """The ``audit:`` section of ``ecluse.yaml``: keys and checkpoints."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    key_dir: Path | None = Field(
        None,
        description="Directory of the audit HMAC key and the checkpoint signing key, outside "
        "the state directory, readable by the audit writers only (default: <state_dir>-keys, "
        "a sibling of the state directory).",
    )
    checkpoint_sink: Literal["file", "syslog"] = Field(
        "file",
        description="Where signed checkpoints go: 'file' (checkpoint_file) or 'syslog' "
        "(syslog_address; forward it off-host).",
    )
    checkpoint_file: Path | None = Field(
        None,
        description="Checkpoint file of the 'file' sink, outside the state directory "
        "(default: <state_dir>-checkpoints/audit-checkpoints.log).",
    )
    syslog_address: str = Field(
        "/dev/log",
        description="Syslog receiver of the 'syslog' sink: a Unix datagram socket path, or "
        "host:port (UDP).",
    )
    syslog_facility: str = Field(
        "authpriv", description="Syslog facility of checkpoint messages (e.g. authpriv, local0)."
    )
    checkpoint_every: int = Field(
        1,
        ge=1,
        description="Sign a checkpoint every N records (1: every record; with N > 1 the last "
        "N-1 records can be dropped undetected).",
    )

    @field_validator("syslog_facility")
    @classmethod
    def _facility(cls, v: str) -> str:
        if v not in SYSLOG_FACILITIES:
            raise ValueError(f"expected one of {', '.join(SYSLOG_FACILITIES)}")
        return v


def default_key_dir(state_dir: Path) -> Path:
    state_dir = Path(state_dir)
    return state_dir.with_name(state_dir.name + "-keys")


def default_checkpoint_file(state_dir: Path) -> Path:
    state_dir = Path(state_dir)
    return state_dir.with_name(state_dir.name + "-checkpoints") / "audit-checkpoints.log"


class AuditKeyError(Exception):
    """An audit key is missing, unreadable, malformed or not the log's key."""


def _ed25519():
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return ed25519


def _serialization():
    from cryptography.hazmat.primitives import serialization

    return serialization


@dataclass
class AuditKeys:
    """The HMAC key and (for writers) the checkpoint signing key."""

    hmac_key: bytes
    signing_key: Any = None  # Ed25519PrivateKey
    public_key: Any = None  # Ed25519PublicKey
    key_dir: Path | None = None

    @property
    def key_id(self) -> str:
        """Names the HMAC key without revealing it (recorded in the marker record)."""
        return hmac.new(self.hmac_key, b"ecluse-audit-key-id", hashlib.sha256).hexdigest()[:16]

    def mac(self, payload: bytes) -> str:
        return hmac.new(self.hmac_key, payload, hashlib.sha256).hexdigest()


def _create_exclusive(path: Path, data: bytes, mode: int) -> bool:
    """Write ``data`` to a new file; False when another process created it first."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # atomic, fails if the key appeared meanwhile
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)


def ensure_keys(key_dir: Path) -> AuditKeys:
    """Create the audit keys in ``key_dir`` when missing (mode 0600), then load them.

    Existing keys are never replaced. Safe against several processes starting
    at once: each key file is created atomically.
    """
    key_dir = Path(key_dir)
    key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    hmac_path = key_dir / HMAC_KEY_FILE
    if not hmac_path.exists():
        _create_exclusive(hmac_path, secrets.token_hex(32).encode() + b"\n", 0o600)
    sk_path, pk_path = key_dir / SIGNING_KEY_FILE, key_dir / PUBLIC_KEY_FILE
    if not sk_path.exists():
        ser = _serialization()
        sk = _ed25519().Ed25519PrivateKey.generate()
        pem = sk.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
        _create_exclusive(sk_path, pem, 0o600)
    if not pk_path.exists():
        sk = _load_signing_key(sk_path)
        ser = _serialization()
        pub = sk.public_key().public_bytes(
            ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo)
        _create_exclusive(pk_path, pub, 0o644)
    return load_keys(key_dir)


def load_keys(key_dir: Path, *, signing: bool = True) -> AuditKeys:
    """Load the keys of ``key_dir``; :class:`AuditKeyError` names what is wrong.

    ``signing=False`` (verification) needs the HMAC key and the public key only.
    """
    key_dir = Path(key_dir)
    hmac_path = key_dir / HMAC_KEY_FILE
    try:
        text = hmac_path.read_text().strip()
    except FileNotFoundError:
        raise AuditKeyError(
            f"audit HMAC key not found: {hmac_path} (create the keys with `ecluse audit init`; "
            "restore them from backup if this log already has keyed records)"
        ) from None
    except OSError as e:
        raise AuditKeyError(f"cannot read the audit HMAC key {hmac_path}: {e.strerror}") from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < 32:
        raise AuditKeyError(f"{hmac_path}: expected at least 32 bytes in hex")
    signing_key = _load_signing_key(key_dir / SIGNING_KEY_FILE) if signing else None
    public_key = (
        signing_key.public_key() if signing_key is not None
        else load_public_key(key_dir / PUBLIC_KEY_FILE)
    )
    return AuditKeys(key, signing_key, public_key, key_dir)


def _load_signing_key(path: Path) -> Any:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise AuditKeyError(f"audit checkpoint signing key not found: {path}") from None
    except OSError as e:
        raise AuditKeyError(f"cannot read the checkpoint signing key {path}: {e.strerror}") from None
    try:
        key = _serialization().load_pem_private_key(data, password=None)
    except ValueError as e:
        raise AuditKeyError(f"{path}: not a PEM private key ({e})") from None
    if not isinstance(key, _ed25519().Ed25519PrivateKey):
        raise AuditKeyError(f"{path}: expected an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Any:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise AuditKeyError(f"checkpoint public key not found: {path}") from None
    except OSError as e:
        raise AuditKeyError(f"cannot read the checkpoint public key {path}: {e.strerror}") from None
    try:
        key = _serialization().load_pem_public_key(data)
    except ValueError as e:
        raise AuditKeyError(f"{path}: not a PEM public key ({e})") from None
    if not isinstance(key, _ed25519().Ed25519PublicKey):
        raise AuditKeyError(f"{path}: expected an Ed25519 public key")
    return key


# ------------------------------------------------------------------ checkpoints


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement: log ``log`` had ``count`` records, the last hashing to ``head``.

    ``legacy`` is the number of records before the log was keyed (plain sha256
    chain of an earlier version); it is the same in every checkpoint of a log.
    """

    log: str
    count: int
    head: str
    legacy: int
    ts: str

    def payload(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    def signed_line(self, signing_key: Any) -> str:
        sig = base64.b64encode(signing_key.sign(self.payload())).decode()
        return f"{CHECKPOINT_TAG} " + json.dumps({**asdict(self), "sig": sig}, sort_keys=True)


@dataclass
class CheckpointRead:
    checkpoints: list[Checkpoint]
    problems: list[str]


def parse_checkpoints(lines: Iterable[str], public_key: Any, source: str = "") -> CheckpointRead:
    """Checkpoints found in ``lines`` (a checkpoint file, or a syslog file where
    other messages are interleaved); each signature is checked."""
    from cryptography.exceptions import InvalidSignature

    found: list[Checkpoint] = []
    problems: list[str] = []
    for lineno, line in enumerate(lines, 1):
        at = line.find(CHECKPOINT_TAG + " ")
        if at < 0:
            continue
        where = f"{source} line {lineno}" if source else f"line {lineno}"
        try:
            data = json.loads(line[at + len(CHECKPOINT_TAG) + 1:])
            sig = base64.b64decode(data.pop("sig"), validate=True)
            cp = Checkpoint(log=str(data["log"]), count=int(data["count"]),
                            head=str(data["head"]), legacy=int(data["legacy"]),
                            ts=str(data["ts"]))
            if set(data) != {"log", "count", "head", "legacy", "ts"}:
                raise ValueError("unexpected fields")
        except (ValueError, KeyError, TypeError) as e:
            problems.append(f"checkpoint at {where}: unreadable ({e})")
            continue
        try:
            public_key.verify(sig, cp.payload())
        except InvalidSignature:
            problems.append(f"checkpoint at {where}: bad signature (forged or altered)")
            continue
        found.append(cp)
    return CheckpointRead(found, problems)


def read_checkpoints(path: Path, public_key: Any) -> CheckpointRead:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return parse_checkpoints(fh, public_key, str(path))
    except FileNotFoundError:
        return CheckpointRead([], [f"checkpoint file {path} not found"])


# ------------------------------------------------------------------ sinks


class CheckpointSinkError(OSError):
    """A checkpoint could not be delivered: the audit record is not written."""


class CheckpointSink:
    """Where signed checkpoints go. Subclasses provide :meth:`write`, which
    delivers one line or raises :class:`CheckpointSinkError` (never drops
    silently), and :meth:`describe`."""

    def write(self, line: str) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the sink holds open (nothing by default)."""


def open_append(path: Path, folder_mode: int = 0o777) -> int:
    """``path`` opened to append (0600), its folder made (``folder_mode``) only when
    missing: one system call per record, not a ``mkdir`` each time (every writer of the
    platform writes its audit record while it holds its write lock)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
    try:
        return os.open(path, flags, 0o600)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True, mode=folder_mode)
        return os.open(path, flags, 0o600)


class FileCheckpointSink(CheckpointSink):
    """Appends one checkpoint per line to a file outside the state directory."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def write(self, line: str) -> None:
        try:
            fd = open_append(self.path, folder_mode=0o700)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                data = (line + "\n").encode()
                if os.write(fd, data) != len(data):
                    raise OSError(errno.EIO, "short write")
            finally:
                os.close(fd)
        except OSError as e:
            raise CheckpointSinkError(
                f"cannot write the audit checkpoint to {self.path}: {e.strerror or e}") from None

    def describe(self) -> str:
        return f"file {self.path}"


class SyslogCheckpointSink(CheckpointSink):
    """Sends each checkpoint as one syslog message (RFC 3164 framing).

    ``address`` is a Unix datagram socket path (``/dev/log``: the local
    rsyslog/journald, which forwards reliably off-host) or ``host:port``
    (UDP: fire-and-forget, a lost datagram is a missing checkpoint). A
    socket error raises :class:`CheckpointSinkError`: unlike the standard
    library's ``SysLogHandler`` nothing is swallowed.
    """

    def __init__(self, address: str = "/dev/log", facility: str = "authpriv",
                 ident: str = SYSLOG_IDENT):
        self.address = address
        self.priority = SYSLOG_FACILITIES[facility] * 8 + 5  # notice
        self.ident = ident
        self._sock: socket.socket | None = None

    def _target(self) -> tuple[int, Any]:
        if self.address.startswith("/"):
            return socket.AF_UNIX, self.address
        host, _, port = self.address.rpartition(":")
        if not host or not port.isdigit():
            raise CheckpointSinkError(
                f"audit.syslog_address: expected /path/to/socket or host:port, got {self.address!r}")
        return socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET, (
            host.strip("[]"), int(port))

    def write(self, line: str) -> None:
        message = f"<{self.priority}>{self.ident}[{os.getpid()}]: {line}".encode()
        family, target = self._target()
        for attempt in (1, 2):
            try:
                if self._sock is None:
                    self._sock = socket.socket(family, socket.SOCK_DGRAM)
                    self._sock.connect(target)
                self._sock.send(message)
                return
            except OSError as e:
                self.close()
                if attempt == 2:
                    raise CheckpointSinkError(
                        f"cannot send the audit checkpoint to syslog at {self.address}: "
                        f"{e.strerror or e}") from None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def describe(self) -> str:
        return f"syslog {self.address}"
