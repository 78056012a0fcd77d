"""Écluse workspace extension: export guard, export API, JupyterLab UI.

Installed into the workspace Python environment. The server extension is
enabled, and the guard configured, by the read-only Jupyter configuration
the spawner mounts at ``/etc/jupyter`` (``ecluse.hub.workspace``).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

LAB_EXTENSION = "@ecluse/workspace"


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "ecluse_workspace"}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": LAB_EXTENSION}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    from jupyter_server.utils import url_path_join
    from tornado.routing import HostMatches, Rule

    from .check import CheckHandler
    from .datapanel import DatasetsHandler
    from .export import ConfigHandler, ExportHandler, ExportSettings, RequestsHandler
    from .guard import (
        EcluseAuthorizer,
        GuardPolicy,
        RefusedHandler,
        install_route_guard,
        refused_routes,
    )

    web_app = serverapp.web_app
    if not isinstance(web_app.settings.get("authorizer"), EcluseAuthorizer):
        # fail closed: whatever the configuration said, the guard authorizes
        serverapp.log.warning("export guard: authorizer_class was not EcluseAuthorizer; "
                              "installing it")
        web_app.settings["authorizer"] = EcluseAuthorizer(
            parent=serverapp, identity_provider=serverapp.identity_provider)
    web_app.settings["ecluse_export"] = ExportSettings(parent=serverapp)
    base = web_app.settings.get("base_url", "/")
    handlers: list[tuple[str, type]] = [
        (url_path_join(base, "ecluse/export"), ExportHandler),
        (url_path_join(base, "ecluse/check"), CheckHandler),
        (url_path_join(base, "ecluse/requests"), RequestsHandler),
        (url_path_join(base, "ecluse/config"), ConfigHandler),
        (url_path_join(base, "ecluse/datasets"), DatasetsHandler),
    ]
    policy = GuardPolicy(parent=serverapp)
    handlers += [(route, RefusedHandler) for route in refused_routes(base, policy.proxy_ports)]
    # first of all routes: before the server's own handlers and before other
    # extensions' (jupyter-server-proxy), whatever the loading order
    from tornado.web import _ApplicationRouter

    web_app.default_router.rules.insert(
        0, Rule(HostMatches(".*$"), _ApplicationRouter(web_app, handlers)))
    # default deny: the route allow-list (routes.py), before everything above
    install_route_guard(web_app, serverapp.log)
    _seed_starter_notebooks(serverapp.log)
    serverapp.log.info("Écluse workspace extension: route allow-list, export guard and "
                       "export API loaded")


def _seed_starter_notebooks(log: Any) -> None:
    """The starter notebooks on a first start (:mod:`.starter`), in a thread: the
    server does not wait for them, and a failure only logs."""
    import os
    import threading

    home = os.environ.get("HOME", "")
    if not home or not os.path.isdir(home):
        return

    def seed() -> None:
        from .starter import seed_home

        try:
            written = seed_home(home)
            if written:
                log.info("starter notebooks written: %s", ", ".join(written))
        except Exception as e:  # noqa: BLE001 — examples must never stop a workspace
            log.warning("starter notebooks not written: %s", e)

    threading.Thread(target=seed, name="ecluse-starter", daemon=True).start()
