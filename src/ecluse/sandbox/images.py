"""Écluse images built FROM the debootstrap base, without any registry.

:func:`build_image` sends a build context of its own (only the files the image
needs, listed by :func:`workspace_context` and :func:`hub_context`), keyed by a hash of those files and
the image it is built FROM: ``ecluse/<name>:<key>`` is reused while it is in the engine,
else loaded from ``<cache_dir>/image-<name>-<key>.tar`` (a fresh engine, as in
each test run, does not rebuild), else built and saved there. The image is also
tagged ``ecluse/<name>:<version>``, the name the settings default to. The workspace
image is built FROM the base; the hub image FROM the workspace image (the hub's
dependencies are a superset of the workspace's, whose environment is resolved against
the hub's pins): the two share the environment's layer, and the hub's build installs
only what the workspace lacks.

The build reaches no network (``networkmode=none``) and runs on the engine's own
BuildKit through the Engine API (``version=2``; :func:`_buildkit`): the host's pip
downloads the wheels of both images' requirements once, for the base image's Python
(:data:`TARGET_PYTHON`, glibc :data:`TARGET_GLIBC`) whatever the host runs, with the
host's own index, cache and CA configuration, into ``<cache_dir>/wheels-<key>``
(:func:`wheelhouse`, keyed by the requirements files); the Écluse packages the image
installs (the workspace extension, Écluse itself for the hub) are built into wheels on
the host from the context's sources (:func:`local_wheels`). The context sends them as
``wheels/``, and the Dockerfile bind-mounts them into the one step that installs
with ``pip --no-index --find-links`` (``RUN --mount``: the wheels are in no layer, and
the environment is written once), running pip from its own wheel so that no pip is left
in the image.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
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
from .engine import Progress, _quiet, base_image, base_image_name, cache_dir, host_debian_mirror

REPO = Path(__file__).resolve().parents[3]
#: the Python and the C library of the base image (Debian bookworm): the wheels are for them
TARGET_PYTHON = "3.11"
TARGET_GLIBC = 36
#: the requirements files whose wheels make the one wheelhouse of both images (the hub's
#: pins, a superset, and the workspace's, resolved against them)
REQUIREMENTS = ("images/hub/requirements.txt", "images/workspace/requirements.txt")
#: each image's Écluse packages (built into wheels on the host): the package's directory
#: and the context files its wheel is built from
RECIPES = {
    "workspace": {"extensions/ecluse-workspace": ("pyproject.toml", "ecluse_workspace/")},
    "hub": {".": ("pyproject.toml", "README.md", "src/")},
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
    for name in REQUIREMENTS:  # the hub's pins: this environment is resolved against them
        files[name] = repo / name
    files["extensions/ecluse-workspace/pyproject.toml"] = ext / "pyproject.toml"
    files.update(_files_under(repo, "extensions/ecluse-workspace/ecluse_workspace"))
    return files


def hub_context(repo: Path = REPO) -> dict[str, Path]:
    """The hub image's inputs: its directory, Écluse's source, the proxy's node_modules
    (``npm ci`` from package-lock.json) and the host's ``node`` (the one the embedded
    stack runs the proxy with); the extension's Python package comes with the workspace
    image it is built FROM."""
    chp = repo / "node_modules/configurable-http-proxy/package.json"
    node = shutil.which("node")
    if not chp.exists() or not node:
        raise SandboxError(
            "configurable-http-proxy or node is missing (run `npm ci` in the repository, "
            "or make test-deps)",
            log_message=f"{chp}: {chp.exists()}, node: {node}")
    files = _files_under(repo, "images/hub")
    for name in ("pyproject.toml", "README.md", "package-lock.json", *REQUIREMENTS):
        files[name] = repo / name
    files.update(_files_under(repo, "src"))
    files.update(_files_under(repo, "node_modules"))
    files["node"] = Path(node).resolve()
    return files


def context_key(files: dict[str, Path], base: str) -> str:
    h = hashlib.sha256(json.dumps({"base": base, "v": 3}).encode())
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


def wheelhouse(requirements: list[Path], *, cache: Path | None = None,
               progress: Progress = _quiet) -> Path:
    """``<cache>/wheels-<key>``: wheels of every requirement of these files, resolved
    together, and of pip (the build runs pip from its wheel) for the base image's Python,
    downloaded once by the host's pip and reused while the requirements files are
    unchanged (see the module docs)."""
    args = _target_args()
    key = hashlib.sha256(json.dumps({"requirements": [r.read_text() for r in requirements],
                                     "args": args, "v": 2}).encode()).hexdigest()[:16]
    out = (cache or cache_dir()) / f"wheels-{key}"
    what = ", ".join(f"{r.parent.name}/{r.name}" for r in requirements)
    if out.is_dir():
        progress(f"wheels of {what}: cached ({out})")
        return out
    part = out.with_name(out.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    progress(f"wheels of {what}: downloading (the host's pip, for Python {TARGET_PYTHON})")
    _pip(["download", "--quiet", "--dest", str(part), *args,
          *(a for r in requirements for a in ("-r", str(r))), "pip"],
         f"downloaded the wheels of {what}", progress)
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


def _context_tar(files: dict[str, Path], wheels: list[Path], out: Any,
                 first: str | None = None) -> None:
    """The build context as a tar in ``out``. GNU format, ``first`` (the Dockerfile, a
    short name) first: BuildKit tells a context tar from a lone Dockerfile by reading one
    tar header from its first 512 bytes, which a PAX header (Python's default format, for
    every file with a fractional mtime) or a long name's extra header would overflow."""
    order = sorted(files.items(), key=lambda kv: (kv[0] != first, kv[0]))
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for arc, path in order:
            tar.add(str(path), arcname=arc, recursive=False)
        for path in sorted(wheels, key=lambda p: p.name):
            tar.add(str(path), arcname=f"wheels/{path.name}", recursive=False)
    out.seek(0)


def build_image(client: Any, name: str, files: dict[str, Path], dockerfile: str, *,
                progress: Progress = _quiet, cache: Path | None = None,
                mirror: str | None = None, base: str | None = None) -> str:
    """``ecluse/<name>:<key>`` built FROM ``base`` (default: the debootstrap base image;
    see the module docs). A build prepares its wheels (the host's pip: downloads, Écluse's
    own wheels) while the base is made (debootstrap: mostly waiting on the mirror and the
    disk)."""
    import docker.errors

    cache = cache or cache_dir()
    base_name = base or base_image_name(mirror or host_debian_mirror())
    key = context_key(files, base_name)
    repo = f"ecluse/{name}"
    tagged = f"{repo}:{key}"
    saved = cache / f"image-{name}-{key}.tar"
    try:
        client.images.get(tagged)
        progress(f"{name} image {tagged}: present")
    except docker.errors.ImageNotFound:
        if saved.exists():
            if base is None:  # the base's tag too (its layers come with the image)
                base_image(client, mirror=mirror, progress=progress, cache=cache)
            progress(f"{name} image {tagged}: loading from the cache ({saved})")
            t0 = time.monotonic()
            with open(saved, "rb") as fh:
                client.images.load(fh)
            progress(f"{name} image: loaded in {time.monotonic() - t0:.0f} s")
        else:
            with tempfile.TemporaryDirectory(prefix="ecluse-build-") as tmp, \
                    concurrent.futures.ThreadPoolExecutor(1) as pool:
                wheels = pool.submit(_wheels, name, files, Path(tmp), cache, progress)
                if base is None:
                    base_image(client, mirror=mirror, progress=progress, cache=cache)
                _build(client, tagged, files, dockerfile, base_name, wheels.result(),
                       progress)
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


def _wheels(name: str, files: dict[str, Path], dest: Path, cache: Path,
            progress: Progress) -> list[Path]:
    """Every wheel the build of ``name`` installs from: the shared wheelhouse and the
    image's Écluse packages, built into ``dest``."""
    house = wheelhouse([files[r] for r in REQUIREMENTS], cache=cache, progress=progress)
    local_wheels(files, RECIPES[name], dest, progress=progress)
    return list(house.iterdir()) + list(dest.iterdir())


def _build(client: Any, tagged: str, files: dict[str, Path], dockerfile: str,
           base: str, wheels: list[Path], progress: Progress) -> None:
    t0 = time.monotonic()
    progress(f"building {tagged} FROM {base} (BuildKit, no network)")
    with tempfile.TemporaryFile() as ctx:
        _context_tar(files, wheels, ctx, first=dockerfile)
        error, tail = _buildkit(client, ctx, dockerfile=dockerfile, tag=tagged,
                                buildargs={"BASE": base}, progress=progress)
    if error:
        raise SandboxError(f"the image {tagged} could not be built",
                           log_message=error + "\n" + "\n".join(tail))
    progress(f"built {tagged} in {time.monotonic() - t0:.0f} s")


def _buildkit(client: Any, context: Any, *, dockerfile: str, tag: str,
              buildargs: dict[str, str], progress: Progress,
              timeout: float = 3600) -> tuple[str | None, list[str]]:
    """Build with the engine's own BuildKit: ``POST /build?version=2`` with the context
    tar as the body (no client session, no ``buildx``: the Docker SDK's ``build`` speaks
    only to the classic builder, which has no ``RUN --mount``). Returns the error (None
    when built) and the last lines the steps printed; each step is reported as it ends,
    with its time, from BuildKit's status stream."""
    api = client.api
    params = {"t": tag, "dockerfile": dockerfile, "buildargs": json.dumps(buildargs),
              "networkmode": "none", "version": "2", "rm": "1", "forcerm": "1"}
    resp = api.post(f"{api.base_url}/v{api.api_version}/build", params=params, data=context,
                    headers={"Content-Type": "application/x-tar"}, stream=True,
                    timeout=timeout)
    if resp.status_code >= 400:
        return f"the engine refused the build ({resp.status_code}): {resp.text[:2000]}", []
    tail: list[str] = []
    error = None
    done: set[str] = set()
    with contextlib.closing(resp):
        for raw in resp.iter_lines():
            if not raw.strip():
                continue
            msg = json.loads(raw)
            if "error" in msg:
                error = str(msg["error"])
            if msg.get("id") == "moby.buildkit.trace" and isinstance(msg.get("aux"), str):
                for kind, what, extra in _trace(base64.b64decode(msg["aux"])):
                    if kind == "log":
                        tail = (tail + [ln for ln in what.splitlines() if ln.strip()])[-30:]
                    elif what not in done and not what.startswith("[internal]"):
                        done.add(what)
                        progress(f"  {what[:120]}: {extra}")
    return error, tail


def _trace(buf: bytes):
    """BuildKit's ``StatusResponse`` (protobuf): ``("step", name, "12 s" or "cached")``
    for each vertex that completed, ``("log", text, None)`` for each output chunk."""
    for field, value in _protobuf(buf):
        if field == 1 and isinstance(value, bytes):  # Vertex
            v = dict(_protobuf(value))
            if 6 in v:  # completed
                if v.get(4):
                    extra = "cached"
                else:
                    extra = f"{_seconds(v[6]) - _seconds(v.get(5, v[6])):.0f} s"
                name = bytes(v.get(3, b"?")).decode(errors="replace")
                yield "step", name, extra + (" (error)" if 7 in v else "")
        elif field == 3 and isinstance(value, bytes):  # VertexLog
            log_ = dict(_protobuf(value))
            yield "log", bytes(log_.get(4, b"")).decode(errors="replace"), None


def _seconds(ts: bytes) -> float:
    t = dict(_protobuf(ts))
    return t.get(1, 0) + t.get(2, 0) / 1e9


def _protobuf(buf: bytes):
    """The (field number, value) pairs of a protobuf message: varints as ints,
    length-delimited fields as bytes (enough for BuildKit's status stream)."""
    i = 0

    def varint() -> int:
        nonlocal i
        shift = result = 0
        while True:
            b = buf[i]
            i += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    while i < len(buf):
        key = varint()
        field, wire = key >> 3, key & 7
        if wire == 0:
            yield field, varint()
        elif wire == 2:
            n = varint()
            yield field, buf[i:i + n]
            i += n
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:  # groups: not in BuildKit's messages
            return


def _version() -> str:
    from importlib.metadata import version

    return version("ecluse")


def workspace_image(client: Any, **kw: Any) -> str:
    """The workspace image (images/workspace/Dockerfile), built or cached."""
    return build_image(client, "workspace", workspace_context(),
                       "images/workspace/Dockerfile", **kw)


def hub_image(client: Any, **kw: Any) -> str:
    """The hub image (images/hub/Dockerfile), built or cached FROM the workspace image
    (built or cached first)."""
    workspace = workspace_image(client, **kw)
    return build_image(client, "hub", hub_context(), "images/hub/Dockerfile",
                       base=workspace, **kw)
