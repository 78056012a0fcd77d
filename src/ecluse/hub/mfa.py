"""The second factor of the hub's sign-in: TOTP (RFC 6238) and recovery codes.

:class:`TotpStore` keeps, per user, the TOTP secret (encrypted with Fernet
under a key kept in a file, ``mfa.key_file``, outside the hub database and
outside this store), the last time step accepted (so a code is never accepted
twice: RFC 6238 §5.2) and the SHA-256 of unused recovery codes (each works
once). The store is an SQLite file in the state directory (``mfa.sqlite``).

The authenticator (:mod:`ecluse.hub.auth`) asks :meth:`TotpStore.verify`
after the directory accepted the password; enrolment, reset by staff and the
demo users' enrolment go through :meth:`TotpStore.enrol` and
:meth:`TotpStore.reset`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyotp
from cryptography.fernet import Fernet, InvalidToken

from ..secrets import hub_secrets
from ..sqlite import run_pragma

#: seconds of one TOTP time step, and digits of a code (what every authenticator app uses)
STEP = 30
DIGITS = 6
RECOVERY_CODES = 10
#: how far outside the accepted window a code is still recognised, to audit it as
#: "expired-code" rather than "wrong-code" (it is refused all the same)
EXPIRED_SCAN = 20


class MfaError(Exception):
    """A second factor refused; ``reason`` goes to the audit log, never to the user."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(detail or reason)
        self.reason = reason


@dataclass(frozen=True)
class Accepted:
    """A second factor accepted: ``kind`` is ``totp`` or ``recovery-code``."""

    kind: str
    recovery_codes_left: int | None = None


def new_secret() -> str:
    """A fresh base32 TOTP secret (160 bits, as RFC 4226 recommends)."""
    return pyotp.random_base32(32)


def new_recovery_codes(n: int = RECOVERY_CODES) -> list[str]:
    """``n`` single-use codes such as ``k7q2m-x9tpa`` (50 bits each)."""
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
    codes = []
    for _ in range(n):
        raw = "".join(secrets.choice(alphabet) for _ in range(10))
        codes.append(f"{raw[:5]}-{raw[5:]}")
    return codes


def _normal_recovery(code: str) -> str:
    return code.strip().lower().replace("-", "").replace(" ", "")


def _hash_recovery(code: str) -> str:
    return hashlib.sha256(_normal_recovery(code).encode()).hexdigest()


def code_at(secret: str, counter: int) -> str:
    """The TOTP code of time step ``counter``."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP).generate_otp(counter)


def counter_at(when: float) -> int:
    return int(when // STEP)


def match_counter(secret: str, code: str, now: float, window: int) -> int:
    """The time step of ``code`` within ``window`` steps of ``now``, or :class:`MfaError`
    (``expired-code`` when it belongs to an earlier step, else ``wrong-code``)."""
    current = counter_at(now)
    code = code.strip()
    for counter in range(current - window, current + window + 1):
        if hmac.compare_digest(code_at(secret, counter), code):
            return counter
    for counter in range(current - EXPIRED_SCAN, current - window):
        if hmac.compare_digest(code_at(secret, counter), code):
            raise MfaError("expired-code")
    raise MfaError("wrong-code")


def provisioning_uri(secret: str, username: str, issuer: str) -> str:
    """The ``otpauth://`` URI an authenticator app reads from the QR code."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP).provisioning_uri(
        name=username, issuer_name=issuer)


def qr_svg(data: str) -> str:
    """An inline SVG QR code of ``data`` (no image file, no request off the hub)."""
    import segno

    return segno.make(data, error="m").svg_inline(scale=5, dark="#000", light="#fff")


def fernet_key(key_file: Path) -> bytes:
    """The Fernet key of a 32-byte hex secret file (``secrets.read_or_create``)."""
    raw = bytes.fromhex(Path(key_file).read_text().strip())
    if len(raw) != 32:
        raise ValueError(f"{key_file}: expected 32 bytes of hex, got {len(raw)} bytes")
    return base64.urlsafe_b64encode(raw)


class TotpStore:
    """Encrypted TOTP secrets, last accepted steps and recovery codes of the hub's users."""

    def __init__(self, path: Path, key: bytes, *, valid_window: int = 1,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.fernet = Fernet(key)
        self.valid_window = valid_window
        self.clock = clock
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.executescript(
                """
                CREATE TABLE IF NOT EXISTS totp (
                    username TEXT PRIMARY KEY,
                    secret BLOB NOT NULL,
                    last_counter INTEGER NOT NULL,
                    enrolled_at REAL NOT NULL
                );
                CREATE TABLE IF NOT EXISTS recovery (
                    username TEXT NOT NULL,
                    code_hash TEXT NOT NULL,
                    PRIMARY KEY (username, code_hash)
                );
                """
            )
        os.chmod(self.path, 0o600)

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> TotpStore:
        key_file = settings.mfa.key_file
        if key_file is None:
            # the hub's secrets, moved to its own folder first (hub.service_user)
            key_file = Path(settings.hub_secrets_dir) / "totp_key"
            hub_secrets(settings)
        kwargs.setdefault("valid_window", settings.mfa.valid_window)
        return cls(settings.hub_dir / "mfa.sqlite", fernet_key(key_file), **kwargs)

    def _db(self) -> _Locked:
        """The store's one connection, for one thread at a time (opened at first use:
        closing the last connection of a WAL database checkpoints it, slow per call)."""
        if self._conn is None:
            with self._lock:
                if self._conn is None:
                    db = sqlite3.connect(self.path, timeout=10, isolation_level=None,
                                         check_same_thread=False)
                    run_pragma(db, "journal_mode=WAL", 10)
                    # WAL + NORMAL: a commit does not wait for fsync (a power cut may lose
                    # the last accepted step; that code's window has passed by reboot)
                    db.execute("PRAGMA synchronous=NORMAL")
                    self._conn = db
        return _Locked(self._conn, self._lock)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # ------------------------------------------------------------ queries

    def enrolled(self, username: str) -> bool:
        with self._db() as db:
            row = db.execute("SELECT 1 FROM totp WHERE username = ?", (username,)).fetchone()
        return row is not None

    def users(self) -> list[str]:
        with self._db() as db:
            return [r[0] for r in db.execute("SELECT username FROM totp ORDER BY username")]

    def recovery_codes_left(self, username: str) -> int:
        with self._db() as db:
            return db.execute("SELECT count(*) FROM recovery WHERE username = ?",
                              (username,)).fetchone()[0]

    # ------------------------------------------------------------ changes

    def enrol(self, username: str, secret: str, recovery_codes: list[str] = (),
              counter: int = -1) -> None:
        """Store ``secret`` (replacing any earlier one) and its recovery codes.

        ``counter``: the step of the code that confirmed the enrolment (not
        accepted again)."""
        pyotp.TOTP(secret).byte_secret()  # refuses a secret that is not base32
        token = self.fernet.encrypt(secret.encode())
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM recovery WHERE username = ?", (username,))
            db.execute(
                "INSERT OR REPLACE INTO totp (username, secret, last_counter, enrolled_at)"
                " VALUES (?, ?, ?, ?)", (username, token, counter, self.clock()))
            db.executemany("INSERT OR IGNORE INTO recovery VALUES (?, ?)",
                           [(username, _hash_recovery(c)) for c in recovery_codes])
            db.execute("COMMIT")

    def reset(self, username: str) -> bool:
        """Forget the user's second factor (they enrol again at their next sign-in)."""
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            n = db.execute("DELETE FROM totp WHERE username = ?", (username,)).rowcount
            db.execute("DELETE FROM recovery WHERE username = ?", (username,))
            db.execute("COMMIT")
        return n > 0

    def secret(self, username: str) -> str:
        """The decrypted secret (``ecluse dev totp``); :class:`MfaError` if not enrolled."""
        with self._db() as db:
            row = db.execute("SELECT secret FROM totp WHERE username = ?",
                             (username,)).fetchone()
        if row is None:
            raise MfaError("not-enrolled", f"{username} has no second factor enrolled")
        try:
            return self.fernet.decrypt(row[0]).decode()
        except InvalidToken:
            raise MfaError("undecryptable-secret",
                           f"the TOTP secret of {username} does not decrypt with "
                           "mfa.key_file (wrong or replaced key)") from None

    def verify(self, username: str, code: str) -> Accepted:
        """Accept ``code`` (a TOTP code of the window, never one accepted before, or an
        unused recovery code) or raise :class:`MfaError` with the reason."""
        secret = self.secret(username)
        code = (code or "").strip().replace(" ", "")
        if not code:
            raise MfaError("missing-code")
        if code.isdigit() and len(code) == DIGITS:
            return self._verify_totp(username, secret, code)
        return self._use_recovery(username, code)

    def _verify_totp(self, username: str, secret: str, code: str) -> Accepted:
        matched = match_counter(secret, code, self.clock(), self.valid_window)
        with self._db() as db:
            # one statement: two sign-ins racing with the same code, one wins
            n = db.execute(
                "UPDATE totp SET last_counter = ? WHERE username = ? AND last_counter < ?",
                (matched, username, matched)).rowcount
        if n != 1:
            raise MfaError("replayed-code")
        return Accepted("totp")

    def _use_recovery(self, username: str, code: str) -> Accepted:
        with self._db() as db:
            n = db.execute("DELETE FROM recovery WHERE username = ? AND code_hash = ?",
                           (username, _hash_recovery(code))).rowcount
        if n != 1:
            raise MfaError("wrong-recovery-code")
        return Accepted("recovery-code", self.recovery_codes_left(username))


class _Locked:
    """The connection used as ``with``: under the store's lock; a transaction left open
    by an error is rolled back."""

    def __init__(self, db: sqlite3.Connection, lock: threading.Lock) -> None:
        self.db = db
        self.lock = lock

    def __enter__(self) -> sqlite3.Connection:
        self.lock.acquire()
        return self.db

    def __exit__(self, *exc: Any) -> None:
        try:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
        finally:
            self.lock.release()
