"""A small REST client of the batch service (what ``ecluse batch`` uses).

Tokens: ``--token``, else ``$JUPYTERHUB_API_TOKEN``. URL: ``--url``, else
``$ECLUSE_BATCH_URL``, else the service's own address from the settings
(``http://<batch.ip>:<batch.port>/services/batch/``, i.e. on the hub host).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import requests

from ..settings.batch import batch_settings
from .errors import BatchError


class ApiError(BatchError):
    """An error answer of the service, re-raised on the client side."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def resolve_value(text: str) -> Any:
    """``-p NAME VALUE``: int, float, bool, None, else the string (papermill's rules)."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


class BatchClient:
    def __init__(self, url: str, token: str, *, timeout: float = 60.0) -> None:
        self.base = url.rstrip("/") + "/api/v1"
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"token {token}"

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        kw.setdefault("timeout", self.timeout)
        try:
            r = self.session.request(method, self.base + path, **kw)
        except requests.RequestException as e:
            raise ApiError(0, f"cannot reach the batch service at {self.base}: {e}") from None
        try:
            data = r.json()
        except ValueError:
            data = None
        if r.status_code >= 400:
            message = (data or {}).get("error", {}).get("message") if isinstance(data, dict) \
                else None
            raise ApiError(r.status_code, message or f"HTTP {r.status_code}")
        return data

    def me(self) -> dict[str, Any]:
        return self._call("GET", "/me")

    def submit(self, project: str, notebook: Path, parameters: dict[str, Any],
               as_user: str | None = None, timeout: float | None = None) -> dict[str, Any]:
        content = json.loads(Path(notebook).read_text(encoding="utf-8"))
        body = {"project": project, "notebook": {"name": Path(notebook).name, "content": content},
                "parameters": parameters, "as_user": as_user, "timeout": timeout}
        return self._call("POST", "/runs", json=body)

    def list(self, project: str | None = None, status: str | None = None,
             limit: int = 100) -> list[dict[str, Any]]:
        params = {k: v for k, v in {"project": project, "status": status, "limit": limit}.items()
                  if v is not None}
        return self._call("GET", "/runs", params=params)["runs"]

    def show(self, run_id: str) -> dict[str, Any]:
        return self._call("GET", f"/runs/{run_id}")

    def logs(self, run_id: str) -> str:
        return self._call("GET", f"/runs/{run_id}/logs")["log"]

    def files(self, run_id: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/runs/{run_id}/files")["files"]

    def share(self, run_id: str) -> dict[str, Any]:
        return self._call("POST", f"/runs/{run_id}/share")

    def cancel(self, run_id: str) -> dict[str, Any]:
        return self._call("POST", f"/runs/{run_id}/cancel", timeout=self.timeout + 60)

    def export(self, run_id: str, title: str, justification: str | None = None,
               files: list[str] | None = None, submit: bool = True,
               about: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
        body = {"title": title, "justification": justification, "files": files or None,
                "submit": submit, "about": about or None}
        return self._call("POST", f"/runs/{run_id}/export", json=body, timeout=600)

    def wait(self, run_id: str, on_update: Any = None, interval: float = 0.5) -> dict[str, Any]:
        """Poll until the run is final; ``on_update(run)`` after every answer."""
        while True:
            run = self.show(run_id)
            if on_update is not None:
                on_update(run)
            if run["final"]:
                return run
            time.sleep(interval)


def default_url(settings: Any | None) -> str:
    if os.environ.get("ECLUSE_BATCH_URL"):
        return os.environ["ECLUSE_BATCH_URL"]

    conf = batch_settings(settings)
    return f"http://{conf.ip}:{conf.port}/services/batch/"
