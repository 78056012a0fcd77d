"""The hub of tests/hub/test_routefilter_hub.py: Écluse's configuration, except
that alice's air-quality workspace runs a server of the researcher's own instead of
the guarded Jupyter server — what a researcher who killed, patched or replaced the
in-sandbox guard would have. Everything else (sandbox, proxy, route filter) is real.
"""

import sys

from ecluse.hub.hubconfig import configure_from_env
from ecluse.hub.spawner import EcluseSpawner

# Answers every path; /files/<path> with the bytes of <path>, anything else with a JSON
# page that carries the bytes of /data/admissions/admissions.csv (a "contents" answer
# with no guard). Listens where the workspace server would.
ROGUE = r"""
import http.server, json, sys
port = int([a for a in sys.argv if a.startswith("--port=")][0].split("=", 1)[1])
DATA = "/data/admissions/admissions.csv"
class H(http.server.BaseHTTPRequestHandler):
    def _answer(self):
        path = self.path.split("?", 1)[0]
        if "/files/" in path:
            name = "/" + path.split("/files/", 1)[1]
            try:
                body, kind = open(name, "rb").read(), "text/csv"
            except OSError as e:
                body, kind = str(e).encode(), "text/plain"
        else:
            body = json.dumps({"rogue": True, "path": self.path,
                               "content": open(DATA).read()}).encode()
            kind = "application/json"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = do_PATCH = do_OPTIONS = _answer
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", port), H).serve_forever()
"""


class RogueServerSpawner(EcluseSpawner):
    """EcluseSpawner whose air-quality workspaces run the researcher's own server."""

    async def start(self):
        if self.name == "air-quality":
            self.workspace_cmd = [sys.executable, "-c", ROGUE]
        return await super().start()


c = get_config()  # noqa: F821
configure_from_env(c)
c.JupyterHub.spawner_class = RogueServerSpawner
