"""The airlock's tornado application and how it runs as a hub-managed service.

JupyterHub starts ``ecluse airlock serve`` with the ``JUPYTERHUB_SERVICE_*``,
``JUPYTERHUB_API_*`` and ``JUPYTERHUB_CLIENT_ID`` environment of a managed
service; :func:`serve` reads them through :class:`HubOAuth` and listens on the
service URL's host and port (loopback by default).
"""

from __future__ import annotations

import gc
import logging
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from jupyterhub.services.auth import HubOAuth
from jupyterhub.utils import url_path_join
from tornado import web
from tornado.ioloop import IOLoop, PeriodicCallback

from ...hubservice import web as hubweb
from ...hubservice.instances import record_removed
from ...hubservice.web import bind_address
from ...i18n import EcluseI18n
from ..service import AirlockService
from .api import api_handlers
from .ingress import ingress_ui_routes
from .review import setup_jinja
from .ui import TEMPLATE_GLOBALS, NotFoundPage, ui_handlers

__all__ = ["bind_address", "hub_oauth_from_env", "make_app", "serve"]

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


def template_environment() -> Environment:
    """The pages' Jinja environment: the airlock's templates, French and English per page
    (:mod:`ecluse.i18n`) and the globals every page uses."""
    jinja = Environment(
        loader=FileSystemLoader(str(HERE / "templates")),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[EcluseI18n],
    )
    jinja.globals.update(TEMPLATE_GLOBALS)
    setup_jinja(jinja)  # the review page's functions (the translations are EcluseI18n's)
    return jinja


def make_app(
    service: AirlockService,
    *,
    hub_auth: HubOAuth,
    prefix: str | None = None,
    cookie_secret: bytes | None = None,
) -> web.Application:
    prefix = hubweb.service_prefix(hub_auth, prefix, "/services/airlock/")
    jinja = template_environment()
    static_prefix = url_path_join(prefix, "static/")
    handlers: list[Any] = [*api_handlers(prefix), *ui_handlers(prefix),
                           *ingress_ui_routes(prefix)]
    handlers.append((prefix.rstrip("/") + r"/(.*)", NotFoundPage))
    app = web.Application(
        handlers,
        **hubweb.handler_settings(
            service, hub_auth, workers=service.settings.workers,
            group_cache_seconds=service.settings.group_cache_seconds,
            thread_name_prefix="airlock",
        ),
        airlock_prefix=prefix,
        jinja_env=jinja,
        hub_home=url_path_join(hub_auth.hub_prefix or "/hub/", "home"),
        login_url=hub_auth.login_url,
        cookie_secret=cookie_secret or secrets.token_bytes(32),
        xsrf_cookies=True,
        static_path=str(HERE / "static"),
        static_url_prefix=static_prefix,
        default_handler_class=NotFoundPage,
        # calls that run disclosure checks (an upload, an accepted proposal, a submit's
        # differencing) wait for a check sandbox: in threads of their own, so that they
        # never take every worker of the pool and hold up reads (issue 21 item 1)
        # reads (GET) in threads of their own: writers queue on the database's write lock
        # (one at a time), and a list never waits behind them for a thread
        read_pool=ThreadPoolExecutor(
            max(2, service.settings.workers), thread_name_prefix="airlock-reads"),
        check_pool=ThreadPoolExecutor(
            max(2, service.settings.workers), thread_name_prefix="airlock-checks"),
    )
    return app


def hub_oauth_from_env() -> HubOAuth:
    """HubOAuth configured from the managed-service environment (fails loudly)."""
    return hubweb.hub_oauth_from_env("ecluse airlock serve")


def start_purge_task(service: AirlockService, pool: Any) -> PeriodicCallback | None:
    """Purge withdrawn/rejected requests' staged files now and every
    ``purge_interval_seconds`` (0: never), in the service's thread pool."""
    interval = service.settings.purge_interval_seconds
    if not interval:
        return None

    async def purge() -> None:
        try:
            done = await IOLoop.current().run_in_executor(pool, service.purge)
            if done:
                log.info("purged the staged files of %d request(s)", len(done))
        except Exception:  # keep serving; the next round retries
            log.exception("airlock purge failed")

    IOLoop.current().add_callback(purge)
    task = PeriodicCallback(purge, interval * 1000)
    task.start()
    return task


async def serve(service: AirlockService, *, ip: str, port: int, state_dir: Path) -> None:
    """Run until SIGTERM/SIGINT."""
    hub_auth = hub_oauth_from_env()
    app = make_app(
        service, hub_auth=hub_auth, cookie_secret=_cookie_secret(service.staging.root)
    )
    server = hubweb.listen(app, ip=ip, port=port,
                               max_body_size=service.settings.max_file_bytes)
    # no upload is under way: what the temporary folder holds, a killed instance left
    record_removed(service.audit, "airlock", "temporary files", service.staging.sweep())
    log.info("airlock listening on http://%s:%s%s", ip, port, app.settings["airlock_prefix"])
    # what start-up built (the readers, the ORM, the templates) lives as long as the
    # service: out of the collector's sight, a full collection takes a few milliseconds
    # instead of stopping every thread for 40-85 ms under load (issue 21 item 1: p99)
    gc.collect()
    gc.freeze()
    purger = start_purge_task(service, app.settings["pool"])
    IOLoop.current().run_in_executor(app.settings["pool"], service.render_missing_previews)
    # files an earlier instance stored but had not checked yet (background checks)
    service.requeue_checks()
    await hubweb.until_stopped()
    if purger is not None:
        purger.stop()
    server.stop()
    await server.close_all_connections()
    app.settings["pool"].shutdown(wait=False)
    app.settings["check_pool"].shutdown(wait=False)
    app.settings["read_pool"].shutdown(wait=False)
    service.close()
    log.info("airlock stopped")
