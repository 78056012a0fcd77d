"""Secrets generated at install time into the state directory (mode 0600).

Nothing secret is ever read from the repository. Each secret is created once
and reused by later runs, so a second ``ecluse up`` keeps sessions, the
encrypted auth_state and the proxy routes valid.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

SECRETS = {
    # name: (bytes of entropy, purpose)
    "cookie_secret": (32, "JupyterHub cookie signing (JUPYTERHUB_COOKIE_SECRET)"),
    "crypt_key": (32, "auth_state encryption (JUPYTERHUB_CRYPT_KEY)"),
    "proxy_token": (32, "hub ↔ configurable-http-proxy API (CONFIGPROXY_AUTH_TOKEN)"),
    "totp_key": (32, "encryption of the TOTP secrets in mfa.sqlite (default mfa.key_file)"),
}


def secrets_dir(state_dir: Path, folder: Path | None = None) -> Path:
    """``<state>/secrets`` (or ``folder``), created 0700."""
    d = Path(folder) if folder is not None else Path(state_dir) / "secrets"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(d, 0o700)
    return d


def read_or_create(path: Path, nbytes: int = 32) -> str:
    """Return the hex secret in ``path``, creating it (0600, exclusive) if missing."""
    try:
        value = path.read_text().strip()
        if value:
            mode = path.stat().st_mode & 0o777
            if mode & 0o077:
                os.chmod(path, 0o600)
            return value
    except FileNotFoundError:
        pass
    value = secrets.token_hex(nbytes)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    os.replace(tmp, path)
    return value


def ensure_secrets(state_dir: Path, folder: Path | None = None) -> dict[str, str]:
    """The hub's secrets in ``<state>/secrets`` (or ``folder``: the hub's own,
    ``settings.hub_secrets_dir``), each created once. Given a ``folder``, a secret still
    in ``<state>/secrets`` (an earlier layout, read by root) is moved there first."""
    d = secrets_dir(state_dir, folder)
    if folder is not None:
        old = Path(state_dir) / "secrets"
        for name in SECRETS:
            if not (d / name).exists() and os.access(old / name, os.R_OK):
                os.replace(old / name, d / name)
    return {name: read_or_create(d / name, n) for name, (n, _) in SECRETS.items()}


def hub_secrets(settings: object) -> dict[str, str]:
    """The hub's secrets where the hub keeps them (``settings.hub_secrets_dir``)."""
    state = Path(settings.state_dir)  # type: ignore[attr-defined]
    folder = Path(settings.hub_secrets_dir)  # type: ignore[attr-defined]
    return ensure_secrets(state, None if folder == state / "secrets" else folder)


def service_token(state_dir: Path, service: str) -> str:
    """The API token of the external hub service ``service`` (``hub.service_user``: the
    supervisor starts it, the hub knows it by this token), in ``<state>/secrets``."""
    return read_or_create(secrets_dir(state_dir) / f"service-token-{service}", 32)
