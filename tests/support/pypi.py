"""A local upstream package index for the mirror's tests: never the internet.

:class:`LocalIndex` builds pure-Python wheels in a folder (:func:`make_wheel`),
lays them out as a PEP 503 simple index (``/simple/<name>/`` pages linking
``/files/<wheel>#sha256=...``) and serves it on loopback, recording the path of
every request it receives (``paths``), so a test can prove a name was never asked.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import threading
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def make_wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
    """A pure-Python wheel ``name-version-py3-none-any.whl``: a module ``name`` whose
    ``VERSION`` is ``version``, depending on ``requires``."""
    dist = re.sub(r"[-.]+", "_", name)
    info = f"{dist}-{version}.dist-info"
    files = {
        f"{dist}/__init__.py": f"VERSION = {version!r}\n",
        f"{info}/METADATA": (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                             + "".join(f"Requires-Dist: {r}\n" for r in requires)),
        f"{info}/WHEEL": ("Wheel-Version: 1.0\nGenerator: ecluse-tests\n"
                          "Root-Is-Purelib: true\nTag: py3-none-any\n"),
    }
    record = []
    for path, text in files.items():
        data = text.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = "\n".join(record) + "\n"
    out = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return out


class _Recording(SimpleHTTPRequestHandler):
    def __init__(self, *args, paths: list[str], **kw):
        self._paths = paths
        super().__init__(*args, **kw)

    def do_GET(self):  # noqa: N802 - http.server's name
        self._paths.append(self.path)
        super().do_GET()

    def log_message(self, format, *args):  # quiet
        pass


class LocalIndex:
    """A simple index of wheels in ``root``, served on 127.0.0.1 while started."""

    def __init__(self, root: Path):
        self.root = Path(root)
        (self.root / "files").mkdir(parents=True, exist_ok=True)
        self.paths: list[str] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def add(self, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
        wheel = make_wheel(self.root / "files", name, version, requires)
        self._write_pages()
        return wheel

    def _write_pages(self) -> None:
        by_name: dict[str, list[Path]] = {}
        for wheel in sorted((self.root / "files").glob("*.whl")):
            by_name.setdefault(_normalize(wheel.name.split("-")[0]), []).append(wheel)
        simple = self.root / "simple"
        simple.mkdir(exist_ok=True)
        (simple / "index.html").write_text("<!DOCTYPE html><html><body>\n" + "".join(
            f'<a href="{n}/">{n}</a>\n' for n in sorted(by_name)) + "</body></html>\n")
        for name, wheels in by_name.items():
            (simple / name).mkdir(exist_ok=True)
            links = "".join(
                f'<a href="../../files/{html.escape(w.name)}#sha256='
                f'{hashlib.sha256(w.read_bytes()).hexdigest()}">{html.escape(w.name)}</a>\n'
                for w in wheels)
            (simple / name / "index.html").write_text(
                f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/simple/"

    def start(self) -> LocalIndex:
        handler = partial(_Recording, paths=self.paths, directory=str(self.root))
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(10)
            self._server = None

    def asked_about(self, name: str) -> list[str]:
        """The recorded paths that name ``name`` (normalised or as written)."""
        needles = {name.lower(), _normalize(name), re.sub(r"[-.]+", "_", name).lower()}
        return [p for p in self.paths if any(n in p.lower() for n in needles)]
