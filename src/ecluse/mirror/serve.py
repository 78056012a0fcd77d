"""``ecluse mirror serve``: the backend (a child process) and the front, until stopped.

The hub starts it as a managed service (:mod:`.hub`); the front listens on the
sandbox host address (``--listen`` overrides, for tests), waiting for that
address to exist, the backend on ``127.0.0.1:mirror.backend_port``. The
backend dies with the front (it is stopped on every way out).
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from aiohttp import web

from ..hubservice.instances import stop_my_previous
from ..sandbox import sandbox_host_address
from ..settings import settings_section
from ..settings.mirror import MirrorSettings
from .allowlist import mirror_key
from .backend import backend_env
from .front import Front

log = logging.getLogger(__name__)


def mirror_settings(settings: Any) -> MirrorSettings:
    return settings_section(settings, "mirror", MirrorSettings)


def _die_with_parent() -> None:
    """The backend gets SIGTERM when the front dies, however it dies (PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)


def start_backend(upstream: str, cache_dir: Path, port: int,
                  timeout: float = 60) -> subprocess.Popen:
    """proxpi on ``127.0.0.1:port``, answering its health check (or an error)."""
    cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXPI_")}
    env.update(backend_env(upstream, cache_dir))
    proc = subprocess.Popen([sys.executable, "-m", "ecluse.mirror.backend", str(port)],
                            env=env, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the mirror backend (proxpi) exited {proc.returncode} at "
                               f"start (port {port} in use?)")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc
        except OSError:
            if time.monotonic() > deadline:
                stop_backend(proc)
                raise RuntimeError(f"the mirror backend did not answer on 127.0.0.1:{port} "
                                   f"within {timeout:g} s") from None
            time.sleep(0.2)


def stop_backend(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _serve(front: Front, host: str, port: int, bind_timeout: float) -> None:
    runner = web.AppRunner(front.app(), access_log=None)
    await runner.setup()
    deadline = time.monotonic() + bind_timeout
    while True:
        try:
            await web.TCPSite(runner, host, port).start()
            break
        except OSError as e:
            # the host address appears when the sandbox layer sets up its network
            if e.errno != errno.EADDRNOTAVAIL or time.monotonic() > deadline:
                await runner.cleanup()
                raise
            await asyncio.sleep(1)
    log.info("package mirror front on http://%s:%d/", host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def listen_address(settings: Any) -> str:
    """The front's address: the sandbox host address (0.0.0.0 for a backend whose
    sandboxes are not on this host: there a network policy admits them)."""
    return sandbox_host_address(settings, ensure=False) or "0.0.0.0"


def serve(settings: Any, listen: str | None = None, bind_timeout: float = 120) -> int:
    conf = mirror_settings(settings)
    data_dir = conf.resolved_data_dir(settings.state_dir)
    key = mirror_key(data_dir)
    host, port = (listen.rsplit(":", 1) if listen else (listen_address(settings), conf.port))
    # what an earlier instance left holding the ports (a killed mirror's backend)
    stop_my_previous()
    proc = start_backend(conf.upstream, data_dir / "cache", conf.backend_port)
    try:
        front = Front(data_dir=data_dir, key=key,
                      backend=f"http://127.0.0.1:{conf.backend_port}",
                      projects=lambda: set(settings.projects), binary_only=conf.binary_only)
        asyncio.run(_serve(front, host, int(port), bind_timeout))
    finally:
        stop_backend(proc)
    return 0
