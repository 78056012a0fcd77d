"""The route allow-list (``ecluse_workspace.routes``): every route the workspace registers
is allowed or refused on purpose, and unknown ones are refused.

``test_every_registered_route_is_allowed_or_refused`` starts the workspace's
Jupyter server (in a subprocess, with the configuration the spawner mounts,
every server extension of the workspace environment — the same packages as
``images/workspace/requirements.txt`` — and jupyterhub-singleuser's extension)
and walks its router: a handler class that is in neither table below fails
the test, so an extension added to the environment is refused (at run time,
by the guard's default deny) and flagged here until someone decides.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[2]
BASE = "/user/alice/cardio-los/"
UUID = "0b6e9f1c-1f2b-4c1e-9a3e-1234567890ab"

#: every handler class of the workspace server that the allow-list lets through,
#: with a path that reaches it (relative to the base URL) and the method
ALLOWED_SAMPLES: dict[str, tuple[str, str]] = {
    "jupyter_server.base.handlers.MainHandler": ("GET", ""),
    "jupyterlab_server.handlers.LabHandler": ("GET", "lab/tree/home/alice/nb.ipynb"),
    "jupyter_server.base.handlers.FileFindHandler": ("GET", "static/lab/main.js"),
    "jupyterlab_server.themes_handler.ThemesHandler":
        ("GET", "lab/api/themes/@jupyterlab/theme-light-extension/index.css"),
    "jupyterlab_server.translations_handler.TranslationsHandler":
        ("GET", "lab/api/translations/en"),
    "jupyterlab_server.listings_handler.ListingsHandler":
        ("GET", "lab/api/listings/@jupyterlab/extensionmanager-extension/listings.json"),
    "jupyterlab_server.licenses_handler.LicensesHandler": ("GET", "lab/api/licenses/"),
    "jupyterlab.handlers.plugin_manager_handler.PluginHandler": ("GET", "lab/api/plugins"),
    "jupyterlab.handlers.build_handler.BuildHandler": ("GET", "lab/api/build"),
    "jupyterlab_server.settings_handler.SettingsHandler":
        ("GET", "lab/api/settings/@jupyterlab/apputils-extension:themes"),
    "jupyterlab_server.workspaces_handler.WorkspacesHandler":
        ("GET", "lab/api/workspaces/default"),
    "jupyter_server.base.handlers.APIVersionHandler": ("GET", "api"),
    "jupyter_server.services.api.handlers.APIStatusHandler": ("GET", "api/status"),
    "jupyter_server.services.api.handlers.IdentityHandler": ("GET", "api/me"),
    "jupyter_server.services.api.handlers.PathResolverHandler": ("GET", "api/resolvePath"),
    "jupyter_server.services.contents.handlers.ContentsHandler":
        ("GET", "api/contents/home/alice/nb.ipynb"),
    "jupyter_server.services.contents.handlers.CheckpointsHandler":
        ("POST", "api/contents/home/alice/nb.ipynb/checkpoints"),
    "jupyter_server.services.contents.handlers.ModifyCheckpointsHandler":
        ("POST", "api/contents/home/alice/nb.ipynb/checkpoints/checkpoint"),
    "jupyter_server.services.contents.handlers.TrustNotebooksHandler":
        ("POST", "api/contents/home/alice/nb.ipynb/trust"),
    "jupyter_server.services.sessions.handlers.SessionRootHandler": ("GET", "api/sessions"),
    "jupyter_server.services.sessions.handlers.SessionHandler": ("GET", f"api/sessions/{UUID}"),
    "jupyter_server.services.kernels.handlers.MainKernelHandler": ("POST", "api/kernels"),
    "jupyter_server.services.kernels.handlers.KernelHandler": ("DELETE", f"api/kernels/{UUID}"),
    "jupyter_server.services.kernels.handlers.KernelActionHandler":
        ("POST", f"api/kernels/{UUID}/restart"),
    "jupyter_server.services.kernels.websocket.KernelWebsocketHandler":
        ("GET", f"api/kernels/{UUID}/channels"),
    "jupyter_server.services.kernelspecs.handlers.MainKernelSpecHandler": ("GET", "api/kernelspecs"),
    "jupyter_server.services.kernelspecs.handlers.KernelSpecHandler":
        ("GET", "api/kernelspecs/python3"),
    "jupyter_server.kernelspecs.handlers.KernelSpecResourceHandler":
        ("GET", "kernelspecs/python3/logo-64x64.png"),
    "jupyter_server_terminals.api_handlers.TerminalRootHandler": ("POST", "api/terminals"),
    "jupyter_server_terminals.api_handlers.TerminalHandler": ("DELETE", "api/terminals/1"),
    "jupyter_server_terminals.handlers.TermSocket": ("GET", "terminals/websocket/1"),
    "jupyter_server.services.config.handlers.ConfigHandler": ("GET", "api/config/notebook"),
    "jupyter_server.services.events.handlers.SubscribeWebsocket":
        ("GET", "api/events/subscribe"),
    "jupyter_server.services.shutdown.ShutdownHandler": ("POST", "api/shutdown"),
    "jupyterhub.singleuser.extension.JupyterHubOAuthCallbackHandler": ("GET", "oauth_callback"),
    "jupyterhub.singleuser.extension.JupyterHubLogoutHandler": ("GET", "logout"),
    "jupyter_server.auth.login.LoginFormHandler": ("GET", "login"),
    "jupyter_server.auth.logout.LogoutHandler": ("GET", "logout"),
    "ecluse_workspace.export.ExportHandler": ("POST", "ecluse/export"),
    "ecluse_workspace.check.CheckHandler": ("POST", "ecluse/check"),
    "ecluse_workspace.export.RequestsHandler": ("GET", "ecluse/requests"),
    "ecluse_workspace.export.ConfigHandler": ("GET", "ecluse/config"),
    "ecluse_workspace.datapanel.DatasetsHandler": ("GET", "ecluse/datasets"),
    "dask_labextension.clusterhandler.DaskClusterHandler": ("GET", f"dask/clusters/{UUID}"),
    # neutral: errors and redirects
    "jupyter_server.base.handlers.Template404": ("GET", "api/contents/"),
    "jupyter_server.base.handlers.TrailingSlashHandler": ("GET", "lab/"),
    "jupyter_server.base.handlers.RedirectWithParams": ("GET", ""),
    "jupyterlab_server.handlers.NotFoundHandler": ("GET", "lab/"),
}

#: every handler class refused on purpose, with a path that reaches it
REFUSED_SAMPLES: dict[str, tuple[str, str]] = {
    "jupyter_server.base.handlers.AuthenticatedFileHandler": ("GET", "files/project/secret.csv"),
    "jupyter_server.files.handlers.FilesHandler": ("GET", "files/project/secret.csv"),
    "jupyter_server.view.handlers.ViewHandler": ("GET", "view/project/secret.csv"),
    "jupyter_server.nbconvert.handlers.NbconvertFileHandler":
        ("GET", "nbconvert/html/home/alice/nb.ipynb"),
    "jupyter_server.nbconvert.handlers.NbconvertPostHandler": ("POST", "nbconvert/html"),
    "jupyter_server.services.nbconvert.handlers.NbconvertRootHandler": ("GET", "api/nbconvert"),
    "jupyter_server.services.contents.handlers.NotebooksRedirectHandler":
        ("GET", "api/notebooks/x.ipynb"),
    "jupyter_server.services.api.handlers.APISpecHandler": ("GET", "api/spec.yaml"),
    "jupyter_server.services.events.handlers.EventHandler": ("POST", "api/events"),
    "jupyter_server.services.security.handlers.CSPReportHandler":
        ("POST", "api/security/csp-report"),
    "jupyter_server.base.handlers.PrometheusMetricsHandler": ("GET", "metrics"),
    "jupyter_server.base.handlers.PublicStaticFileHandler": ("GET", "favicon.ico"),
    "jupyter_server_proxy.handlers.LocalProxyHandler": ("GET", "proxy/9000/secret.csv"),
    "jupyter_server_proxy.handlers.RemoteProxyHandler": ("GET", "proxy/localhost:9000/x"),
    "jupyter_server_proxy.api.IconHandler": ("GET", "server-proxy/icon/x"),
    "jupyter_server_proxy.api.ServersInfoHandler": ("GET", "server-proxy/servers-info"),
    "dask_labextension.dashboardhandler.DaskDashboardHandler":
        ("GET", f"dask/dashboard/{UUID}/status"),
    "dask_labextension.dashboardhandler.DaskDashboardCheckHandler":
        ("GET", "dask/dashboard-check/http%3A%2F%2F127.0.0.1%3A9000%2F"),
    "jupyterlab.handlers.extension_manager_handler.ExtensionHandler":
        ("GET", "lab/api/extensions"),
    "jupyterlab.handlers.announcements.NewsHandler": ("GET", "lab/api/news"),
    "jupyterlab.handlers.announcements.CheckForUpdateHandler": ("GET", "lab/api/update"),
}

#: the guard's own handlers (they refuse)
OWN = re.compile(r"^ecluse_workspace\.guard\.")

ENUMERATE = r"""
import json, os, sys
from jupyter_server.serverapp import ServerApp
from tornado.routing import PathMatches

app = ServerApp()
app.initialize(argv=[
    "--ServerApp.base_url=" + sys.argv[1], "--ServerApp.open_browser=False",
    "--ServerApp.port=0",
    # what jupyterhub-singleuser's extension sets (it needs a live hub to load)
    "--ServerApp.identity_provider_class="
    "jupyterhub.singleuser.extension.JupyterHubIdentityProvider",
])
found = []
def walk(router):
    for rule in router.rules:
        if hasattr(rule.target, "rules"):
            walk(rule.target)
        elif isinstance(rule.target, type):
            regex = getattr(rule.matcher, "regex", None)
            found.append([regex.pattern if regex is not None else "",
                          rule.target.__module__ + "." + rule.target.__qualname__])
walk(app.web_app.default_router)
print(json.dumps({"routes": found, "extensions": sorted(app.extension_manager.extensions),
                  "loaded": sorted(k for k, v in app.extension_manager.extensions.items()
                                   if v.enabled)}))
"""


@pytest.fixture(scope="module")
def registered(workspace_extension, tmp_path_factory) -> dict:
    """Routes of the workspace server as the spawner configures it (in a subprocess)."""
    from ecluse.hub import workspace

    # the configuration folder the spawner mounts at /etc/jupyter (default settings)
    conf = workspace.config_dir(SimpleNamespace(state_dir=tmp_path_factory.mktemp("state")))
    home = tmp_path_factory.mktemp("home")
    # the workspace's configuration, plus jupyterhub-singleuser's extension (what
    # ecluse-singleuser adds on the command line)
    extra = tmp_path_factory.mktemp("singleuser")
    (extra / "jupyter_server_config.json").write_text(json.dumps(
        {"ServerApp": {"jpserver_extensions": {"jupyterhub.singleuser.extension": True}}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "JPY"))}
    env.update({
        "JUPYTER_CONFIG_DIR": str(conf), "JUPYTER_CONFIG_PATH": f"{conf}:{extra}",
        "JUPYTER_DATA_DIR": str(conf / "data"), "HOME": str(home),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "JUPYTER_PREFER_ENV_PATH": "0",
        "JUPYTERHUB_API_TOKEN": "x" * 32, "JUPYTERHUB_CLIENT_ID": "jupyterhub-user-alice-cl",
        "JUPYTERHUB_API_URL": "http://127.0.0.1:1/hub/api", "JUPYTERHUB_BASE_URL": "/",
        "JUPYTERHUB_HOST": "", "JUPYTERHUB_SERVICE_PREFIX": BASE, "JUPYTERHUB_USER": "alice",
        "JUPYTERHUB_OAUTH_CALLBACK_URL": BASE + "oauth_callback",
        "PYTHONWARNINGS": "ignore",
    })
    out = subprocess.run([sys.executable, "-c", ENUMERATE, BASE, str(home)], env=env,
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _requirements() -> set[str]:
    names = set()
    for line in (REPO / "images" / "workspace" / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            names.add(re.split(r"[\[=<>]", line)[0].lower().replace("-", "_"))
    return names


def test_the_enumerated_server_loads_the_workspace_extensions(registered):
    loaded = set(registered["loaded"])
    # the server extensions of images/workspace/requirements.txt (and their dependencies)
    assert {"jupyterlab", "dask_labextension", "jupyter_server_proxy",
            "jupyter_server_terminals", "ecluse_workspace",
            "jupyterhub.singleuser.extension"} <= loaded, loaded
    assert "jupyter_lsp" not in loaded  # disabled by the workspace configuration
    assert {"jupyterlab", "dask_labextension", "jupyterhub"} <= _requirements()


def test_every_registered_route_is_allowed_or_refused(registered, workspace_extension):
    from ecluse_workspace import guard, routes

    patterns: dict[str, list[str]] = {}
    for pattern, cls in registered["routes"]:
        if not OWN.match(cls):
            patterns.setdefault(cls, []).append(pattern)
    unknown, wrong = [], []
    for cls, regexes in patterns.items():
        if cls in ALLOWED_SAMPLES:
            method, sample = ALLOWED_SAMPLES[cls]
            route = routes.match(method, sample)
            if route is None or not (cls in guard.ROUTE_HANDLERS.get(route.name, ())
                                     or cls in guard._NEUTRAL_HANDLERS):
                wrong.append((cls, sample, "allowed sample is refused"))
        elif cls in REFUSED_SAMPLES:
            method, sample = REFUSED_SAMPLES[cls]
            if routes.match(method, sample) is not None:
                wrong.append((cls, sample, "refused sample is allowed"))
            if not any(re.fullmatch(r.pattern, sample) for r in routes.REFUSED):
                wrong.append((cls, sample, "not refused on purpose (no REFUSED entry)"))
        else:
            unknown.append((cls, regexes))
            continue
        # the sample reaches this handler in the real router
        url = BASE + sample
        if not any(re.match(p, url) or re.match(p, "/" + sample) for p in regexes if p):
            wrong.append((cls, sample, f"sample reaches none of {regexes}"))
    assert not unknown, (
        f"routes neither allowed nor refused in ecluse_workspace.routes: {unknown}")
    assert not wrong, wrong


def test_every_allowed_handler_is_registered(registered):
    """No stale entries: each allowed class exists in the server (or is a known alias)."""
    present = {cls for _, cls in registered["routes"]}
    aliases = {"jupyter_server.auth.logout.LogoutHandler",
               "jupyter_server.base.handlers.RedirectWithParams",
               "jupyterlab_server.handlers.NotFoundHandler",
               "jupyter_server.auth.login.LoginFormHandler"}
    missing = set(ALLOWED_SAMPLES) - present - aliases
    assert not missing, missing


@pytest.mark.parametrize(("method", "path", "name"), [
    ("GET", "api/contents/home/alice/notes.md", "api-contents"),
    ("GET", "api/contents", "api-contents"),
    ("PUT", "api/contents/project/a.py", "api-contents"),
    ("GET", "lab", "lab-page"),
    ("GET", "lab/tree/project/x.ipynb", "lab-page"),
    ("GET", "lab/workspaces/auto-b/tree/x", "lab-page"),
    ("GET", "lab/api/settings", "lab-settings"),
    ("GET", "lab/api/settings/@jupyterlab/apputils-extension:themes", "lab-settings"),
    ("PUT", "lab/api/workspaces/default", "lab-workspaces"),
    ("GET", f"api/kernels/{UUID}/channels", "api-kernels"),
    ("GET", "ecluse/requests", "ecluse-requests"),
    ("POST", "ecluse/export", "ecluse-export"),
    ("POST", "ecluse/check", "ecluse-check"),
    ("GET", "dask/clusters", "dask-clusters"),
    ("GET", "lab/", "trailing-slash"),
])
def test_match_allows(workspace_extension, method, path, name):
    from ecluse_workspace import routes

    route = routes.match(method, path)
    assert route is not None and route.name == name and route.reason


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "dask/dashboard-check/http://127.0.0.1:9000/"),
    ("GET", f"dask/dashboard/{UUID}/status"),
    ("GET", "proxy/8787/status"),
    ("GET", "files/project/secret.csv"),
    ("GET", "api/contents/../../etc/passwd"),
    ("GET", "api/contents/project/./secret.csv"),
    ("GET", "api/contents/project%2Fsecret.csv"),
    ("GET", "api/contents//project"),
    ("GET", "/api/contents"),
    ("GET", "api/contents/a\x00b"),
    ("GET", "api/contents\\x"),
    ("OPTIONS", "api/contents"),
    ("TRACE", "api"),
    ("get", "api"),
    ("DELETE", "api/kernelspecs/python3"),
    ("POST", "lab/api/plugins"),
    ("POST", "lab/api/build"),
    ("GET", "lab/api/extensions"),
    ("GET", "some/new/extension/route"),
    ("GET", "api/contents/x/../../.."),
    ("GET", "kernelspecs/python3/kernel.json"),
    ("HEAD", "api/contents/project/secret.csv"),
])
def test_match_refuses(workspace_extension, method, path):
    from ecluse_workspace import routes

    assert routes.match(method, path) is None
    assert routes.refusal(method, path)


def test_routes_module_is_dependency_free(workspace_extension):
    """The host-side filter imports it without Jupyter: no import but the standard library."""
    from ecluse_workspace import routes

    src = Path(routes.__file__).read_text()
    imports = set(re.findall(r"^(?:from|import) ([\w.]+)", src, re.M))
    assert imports <= {"__future__", "re", "dataclasses"}, imports
    for r in routes.ROUTES:
        assert isinstance(r.methods, frozenset) and r.reason and re.compile(r.pattern)
