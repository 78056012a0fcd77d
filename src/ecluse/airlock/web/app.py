"""The airlock's tornado application and how it runs as a hub-managed service.

JupyterHub starts ``ecluse airlock serve`` with the ``JUPYTERHUB_SERVICE_*``,
``JUPYTERHUB_API_*`` and ``JUPYTERHUB_CLIENT_ID`` environment of a managed
service; :func:`serve` reads them through :class:`HubOAuth` and listens on the
service URL's host and port (loopback by default).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from jinja2 import Environment, FileSystemLoader, select_autoescape
from jupyterhub.services.auth import HubOAuth
from jupyterhub.utils import url_path_join
from tornado import web
from tornado.httpserver import HTTPServer

from ..service import AirlockService
from .api import api_handlers
from .base import GroupResolver
from .ui import NotFoundPage, ui_handlers

log = logging.getLogger("ecluse.airlock.web")
HERE = Path(__file__).resolve().parent.parent


def _cookie_secret(directory: Path) -> bytes:
    """A per-deployment secret for the OAuth cookie, kept across restarts (0600)."""
    path = directory / "cookie_secret"
    try:
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        pass
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    value = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value.hex())
    return value


def make_app(
    service: AirlockService,
    *,
    hub_auth: HubOAuth,
    prefix: str | None = None,
    cookie_secret: bytes | None = None,
) -> web.Application:
    prefix = prefix or hub_auth.base_url or "/services/airlock/"
    if not prefix.endswith("/"):
        prefix += "/"
    pool = ThreadPoolExecutor(service.settings.workers, thread_name_prefix="airlock")
    jinja = Environment(
        loader=FileSystemLoader(str(HERE / "templates")),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    static_prefix = url_path_join(prefix, "static/")
    handlers: list[Any] = [*api_handlers(prefix), *ui_handlers(prefix)]
    handlers.append((prefix.rstrip("/") + r"/(.*)", NotFoundPage))
    app = web.Application(
        handlers,
        airlock_service=service,
        airlock_prefix=prefix,
        airlock_pool=pool,
        hub_auth=hub_auth,
        group_resolver=GroupResolver(hub_auth, service.settings.group_cache_seconds),
        jinja_env=jinja,
        hub_home=url_path_join(hub_auth.hub_prefix or "/hub/", "home"),
        login_url=hub_auth.login_url,
        cookie_secret=cookie_secret or secrets.token_bytes(32),
        xsrf_cookies=True,
        static_path=str(HERE / "static"),
        static_url_prefix=static_prefix,
        default_handler_class=NotFoundPage,
    )
    return app


def hub_oauth_from_env() -> HubOAuth:
    """HubOAuth configured from the managed-service environment (fails loudly)."""
    missing = [
        k for k in ("JUPYTERHUB_API_TOKEN", "JUPYTERHUB_API_URL", "JUPYTERHUB_SERVICE_PREFIX")
        if not os.environ.get(k)
    ]
    if missing:
        raise RuntimeError(
            "ecluse airlock serve runs as a JupyterHub-managed service: missing "
            + ", ".join(missing)
        )
    return HubOAuth(cache_max_age=60)


def bind_address(default_ip: str, default_port: int) -> tuple[str, int]:
    url = os.environ.get("JUPYTERHUB_SERVICE_URL")
    if url:
        parsed = urlparse(url)
        return parsed.hostname or default_ip, parsed.port or default_port
    return default_ip, default_port


async def serve(service: AirlockService, *, ip: str, port: int, state_dir: Path) -> None:
    """Run until SIGTERM/SIGINT."""
    hub_auth = hub_oauth_from_env()
    app = make_app(
        service, hub_auth=hub_auth, cookie_secret=_cookie_secret(service.staging.root)
    )
    server = HTTPServer(app, xheaders=True, max_body_size=service.settings.max_file_bytes)
    server.listen(port, address=ip)
    log.info("airlock listening on http://%s:%s%s", ip, port, app.settings["airlock_prefix"])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.stop()
    await server.close_all_connections()
    app.settings["airlock_pool"].shutdown(wait=False)
    service.close()
    log.info("airlock stopped")
