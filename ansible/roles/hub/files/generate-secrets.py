"""Generate the hub's secrets on the first deploy (run with the hub's virtualenv).

Usage: generate-secrets.py STATE_DIR ENV_FILE

The secrets are created by :func:`ecluse.secrets.ensure_secrets` in
``STATE_DIR/secrets/`` (mode 0600, read by the hub config) and copied into
``ENV_FILE`` (mode 0640) for the services that take them from their
environment. The Ansible task runs this only when ENV_FILE does not exist:
secrets are never regenerated, so sessions and encrypted auth state survive
re-deploys.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ecluse.secrets import ensure_secrets

ENV_NAMES = {
    "crypt_key": "JUPYTERHUB_CRYPT_KEY",
    "cookie_secret": "JPY_COOKIE_SECRET",
    "proxy_token": "CONFIGPROXY_AUTH_TOKEN",
}


def main(state_dir: str, env_file: str) -> int:
    state = Path(state_dir)
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    values = ensure_secrets(state)
    lines = ["# Generated on the first deploy by the Écluse hub role. Do not commit.\n"]
    # only the secrets the hub and its services take from their environment; the
    # others (the TOTP key) stay files in STATE_DIR/secrets/ (mode 0600)
    lines += [f"{ENV_NAMES[name]}={value}\n" for name, value in values.items()
              if name in ENV_NAMES]
    target = Path(env_file)
    tmp = target.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w") as fh:
        fh.writelines(lines)
    os.replace(tmp, target)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
