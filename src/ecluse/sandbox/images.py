"""Écluse images built FROM the debootstrap base, without any registry.

:func:`build_image` sends a build context of its own (only the files the image
needs, listed by :func:`workspace_context` and :func:`hub_context`), keyed by a hash of those files and
the base image: ``ecluse/<name>:<key>`` is reused while it is in the engine,
else loaded from ``<cache_dir>/image-<name>-<key>.tar`` (a fresh engine, as in
each test run, does not rebuild), else built and saved there. The image is also
tagged ``ecluse/<name>:<version>``, the name the settings default to.

The build itself reaches no network (``network_mode="none"``): the host's pip
downloads the wheels of the image's requirements once, for the base image's
Python (:data:`TARGET_PYTHON`, glibc :data:`TARGET_GLIBC`) whatever the host
runs, with the host's own index, cache and CA configuration, into
``<cache_dir>/wheels-<key>`` (:func:`wheelhouse`, keyed by the requirements
file); the Écluse packages the image installs (the workspace extension, Écluse
itself for the hub) are built into wheels on the host from the context's
sources (:func:`local_wheels`). The context sends them as ``wheels/``, and the
Dockerfile installs with ``pip --no-index --find-links``, running pip from its
own wheel so that no pip is left in the image.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from .base import SandboxError
from .engine import Progress, _quiet, base_image, cache_dir

REPO = Path(__file__).resolve().parents[3]
#: the Python and the C library of the base image (Debian bookworm): the wheels are for them
TARGET_PYTHON = "3.11"
TARGET_GLIBC = 36
#: the requirements file each image installs, and its Écluse packages (built into wheels
#: on the host): the package's directory and the context files its wheel is built from
RECIPES = {
    "workspace": ("images/workspace/requirements.txt", {
        "extensions/ecluse-workspace": ("pyproject.toml", "ecluse_workspace/")}),
    "hub": ("images/hub/requirements.txt", {".": ("pyproject.toml", "README.md", "src/")}),
}


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
    h = hashlib.sha256(json.dumps({"base": base, "v": 2}).encode())
    for arc in sorted(files):
        h.update(arc.encode() + b"\0" + files[arc].read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _target_args() -> list[str]:
    """pip's options for wheels of the base image's Python and C library (and the host's
    architecture: debootstrap made the base for it)."""
    arch = platform.machine()
    platforms = [f"manylinux_2_{v}_{arch}" for v in range(TARGET_GLIBC, 16, -1)]
    platforms += [f"manylinux2014_{arch}", f"linux_{arch}"]
    return ["--only-binary=:all:", "--python-version", TARGET_PYTHON, "--implementation", "cp",
            *(f"--platform={p}" for p in platforms)]


def _pip(args: list[str], what: str, progress: Progress) -> None:
    """The host's pip (this interpreter's), with the host's configuration; wheels it
    builds have fixed timestamps, so the same sources give the same bytes (and an engine
    that keeps its build cache reuses the install step)."""
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          env={**os.environ, "SOURCE_DATE_EPOCH": "315532800"})
    if proc.returncode != 0:
        raise SandboxError(f"{what} failed (the host's pip: {sys.executable} -m pip)",
                           log_message=" ".join(cmd) + "\n" + (proc.stdout + proc.stderr)[-4000:])
    progress(f"  {what}: {time.monotonic() - t0:.0f} s")


def wheelhouse(requirements: Path, *, cache: Path | None = None,
               progress: Progress = _quiet) -> Path:
    """``<cache>/wheels-<key>``: wheels of every requirement and of pip (the build stage
    runs pip from its wheel) for the base image's Python, downloaded once by the host's pip
    and reused while the requirements file is unchanged (see the module docs)."""
    args = _target_args()
    key = hashlib.sha256(json.dumps({"requirements": requirements.read_text(), "args": args,
                                     "v": 1}).encode()).hexdigest()[:16]
    out = (cache or cache_dir()) / f"wheels-{key}"
    if out.is_dir():
        progress(f"wheels of {requirements.parent.name}/{requirements.name}: cached ({out})")
        return out
    part = out.with_name(out.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    progress(f"wheels of {requirements.parent.name}/{requirements.name}: downloading "
             f"(the host's pip, for Python {TARGET_PYTHON})")
    _pip(["download", "--quiet", "--dest", str(part), *args, "-r", str(requirements), "pip"],
         f"downloaded {requirements.parent.name}'s wheels", progress)
    os.replace(part, out)
    return out


def local_wheels(files: dict[str, Path], packages: dict[str, tuple[str, ...]], dest: Path, *,
                 progress: Progress = _quiet) -> None:
    """The wheels of the Écluse packages (directory → the files or folders its wheel is
    built from, ``"."`` the repository), built on the host from those context files
    copied to a scratch directory (nothing is written into the source tree)."""
    for pkg, sources in packages.items():
        prefix = "" if pkg == "." else pkg.rstrip("/") + "/"
        with tempfile.TemporaryDirectory(prefix="ecluse-wheel-") as tmp:
            for arc, path in files.items():
                rel = arc[len(prefix):] if arc.startswith(prefix) else None
                if rel is not None and any(rel == x or (x.endswith("/") and rel.startswith(x))
                                           for x in sources):
                    target = Path(tmp) / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, target)
            _pip(["wheel", "--quiet", "--no-deps", "--wheel-dir", str(dest), tmp],
                 f"built the wheel of {pkg}", progress)


def _context_tar(files: dict[str, Path], wheels: list[Path], out: Any) -> None:
    with tarfile.open(fileobj=out, mode="w") as tar:
        for arc, path in sorted(files.items()):
            tar.add(str(path), arcname=arc, recursive=False)
        for path in sorted(wheels, key=lambda p: p.name):
            tar.add(str(path), arcname=f"wheels/{path.name}", recursive=False)
    out.seek(0)


def build_image(client: Any, name: str, files: dict[str, Path], dockerfile: str, *,
                progress: Progress = _quiet, cache: Path | None = None,
                mirror: str | None = None) -> str:
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
            _build(client, name, tagged, files, dockerfile, base, cache, progress)
            progress(f"{name} image: saving to the cache ({saved})")
            t0 = time.monotonic()
            part = saved.with_suffix(".part")
            with open(part, "wb") as fh:
                for chunk in client.images.get(tagged).save(named=True):
                    fh.write(chunk)
            os.replace(part, saved)
            progress(f"{name} image: saved in {time.monotonic() - t0:.0f} s")
    client.images.get(tagged).tag(repo, _version())
    return tagged


def _build(client: Any, name: str, tagged: str, files: dict[str, Path], dockerfile: str,
           base: str, cache: Path, progress: Progress) -> None:
    t0 = time.monotonic()
    requirements, packages = RECIPES[name]
    wheels = list(wheelhouse(files[requirements], cache=cache, progress=progress).iterdir())
    progress(f"building {tagged} FROM {base} (no network)")
    tail: list[str] = []
    error = None
    with tempfile.TemporaryDirectory(prefix="ecluse-build-") as tmp, \
            tempfile.TemporaryFile() as ctx:
        local_wheels(files, packages, Path(tmp), progress=progress)
        _context_tar(files, wheels + list(Path(tmp).iterdir()), ctx)
        for chunk in client.api.build(fileobj=ctx, custom_context=True, dockerfile=dockerfile,
                                      tag=tagged, buildargs={"BASE": base}, rm=True,
                                      forcerm=True, network_mode="none", decode=True):
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
