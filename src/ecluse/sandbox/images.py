"""Écluse images built FROM the debootstrap base, without any registry.

:func:`build_image` sends a build context of its own (only the files the image
needs, listed by :func:`workspace_context` and :func:`hub_context`), keyed by a hash of those files and
the base image: ``ecluse/<name>:<key>`` is reused while it is in the engine,
else loaded from ``<cache_dir>/image-<name>-<key>.tar`` (a fresh engine, as in
each test run, does not rebuild), else built — the build stage reaches the
package index on the host's network with the host's CA bundle
(``build-ca.crt``, build stage only) — and saved there. The image is also
tagged ``ecluse/<name>:<version>``, the name the settings default to.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tarfile
import time
from pathlib import Path
from typing import Any

from .base import SandboxError
from .engine import Progress, _quiet, base_image, cache_dir

REPO = Path(__file__).resolve().parents[3]
#: the CA bundle the build stage trusts for TLS to the package index (PIP_CERT)
HOST_CA = "/etc/ssl/certs/ca-certificates.crt"


def _files_under(root: Path, rel: str) -> dict[str, Path]:
    out = {}
    for p in sorted((root / rel).rglob("*")):
        if (p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
                and not any(part.endswith(".egg-info") for part in p.parts)):
            out[str(p.relative_to(root))] = p
    return out


def workspace_context(repo: Path = REPO) -> dict[str, Path]:
    """The workspace image's inputs: its directory, the extension's Python package with
    the prebuilt JupyterLab assets (extensions/build.sh), its pyproject."""
    ext = repo / "extensions/ecluse-workspace"
    if not (ext / "ecluse_workspace/labextension/package.json").exists():
        raise SandboxError(
            "the workspace extension is not built (run extensions/build.sh, "
            "or make test-deps)",
            log_message=f"missing {ext}/ecluse_workspace/labextension/package.json")
    files = _files_under(repo, "images/workspace")
    files["extensions/ecluse-workspace/pyproject.toml"] = ext / "pyproject.toml"
    files.update(_files_under(repo, "extensions/ecluse-workspace/ecluse_workspace"))
    return files


def hub_context(repo: Path = REPO) -> dict[str, Path]:
    """The hub image's inputs: its directory, Écluse's source, the extension's Python
    package, the proxy's node_modules (``npm ci`` from package-lock.json) and the host's
    ``node`` (the one the embedded stack runs the proxy with)."""
    chp = repo / "node_modules/configurable-http-proxy/package.json"
    node = shutil.which("node")
    if not chp.exists() or not node:
        raise SandboxError(
            "configurable-http-proxy or node is missing (run `npm ci` in the repository, "
            "or make test-deps)",
            log_message=f"{chp}: {chp.exists()}, node: {node}")
    files = _files_under(repo, "images/hub")
    for name in ("pyproject.toml", "README.md", "package-lock.json"):
        files[name] = repo / name
    files.update(_files_under(repo, "src"))
    files.update(_files_under(repo, "extensions/ecluse-workspace/ecluse_workspace"))
    files.update(_files_under(repo, "node_modules"))
    files["node"] = Path(node).resolve()
    return files


def context_key(files: dict[str, Path], base: str) -> str:
    h = hashlib.sha256(json.dumps({"base": base, "v": 1}).encode())
    for arc in sorted(files):
        h.update(arc.encode() + b"\0" + files[arc].read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _context_tar(files: dict[str, Path], ca: str) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for arc, path in sorted(files.items()):
            tar.add(str(path), arcname=arc, recursive=False)
        tar.add(ca, arcname="build-ca.crt")
    buf.seek(0)
    return buf


def build_image(client: Any, name: str, files: dict[str, Path], dockerfile: str, *,
                progress: Progress = _quiet, cache: Path | None = None,
                mirror: str | None = None, ca: str = HOST_CA) -> str:
    """``ecluse/<name>:<key>`` built FROM the base image (see the module docs)."""
    import docker.errors

    base = base_image(client, mirror=mirror, progress=progress, cache=cache)
    key = context_key(files, base)
    repo = f"ecluse/{name}"
    tagged = f"{repo}:{key}"
    cache = cache or cache_dir()
    saved = cache / f"image-{name}-{key}.tar"
    try:
        client.images.get(tagged)
        progress(f"{name} image {tagged}: present")
    except docker.errors.ImageNotFound:
        if saved.exists():
            progress(f"{name} image {tagged}: loading from the cache ({saved})")
            t0 = time.monotonic()
            with open(saved, "rb") as fh:
                client.images.load(fh)
            progress(f"{name} image: loaded in {time.monotonic() - t0:.0f} s")
        else:
            _build(client, tagged, files, dockerfile, base, ca, progress)
            cache.mkdir(parents=True, exist_ok=True)
            progress(f"{name} image: saving to the cache ({saved})")
            part = saved.with_suffix(".part")
            with open(part, "wb") as fh:
                for chunk in client.images.get(tagged).save(named=True):
                    fh.write(chunk)
            os.replace(part, saved)
    client.images.get(tagged).tag(repo, _version())
    return tagged


def _build(client: Any, tagged: str, files: dict[str, Path], dockerfile: str, base: str,
           ca: str, progress: Progress) -> None:
    t0 = time.monotonic()
    progress(f"building {tagged} FROM {base}")
    tail: list[str] = []
    error = None
    with contextlib.closing(_context_tar(files, ca)) as ctx:
        for chunk in client.api.build(fileobj=ctx, custom_context=True, dockerfile=dockerfile,
                                      tag=tagged, buildargs={"BASE": base}, rm=True,
                                      forcerm=True, network_mode="host", decode=True):
            if "error" in chunk:
                error = chunk["error"]
            for line in str(chunk.get("stream", "")).splitlines():
                if line.strip():
                    tail = (tail + [line])[-30:]
                    if line.startswith("Step "):
                        progress(f"  {line}")
    if error:
        raise SandboxError(f"the image {tagged} could not be built",
                           log_message=error + "\n" + "\n".join(tail))
    progress(f"built {tagged} in {time.monotonic() - t0:.0f} s")


def _version() -> str:
    from importlib.metadata import version

    return version("ecluse")


def workspace_image(client: Any, **kw: Any) -> str:
    """The workspace image (images/workspace/Dockerfile), built or cached."""
    return build_image(client, "workspace", workspace_context(),
                       "images/workspace/Dockerfile", **kw)


def hub_image(client: Any, **kw: Any) -> str:
    """The hub image (images/hub/Dockerfile), built or cached."""
    return build_image(client, "hub", hub_context(), "images/hub/Dockerfile", **kw)
