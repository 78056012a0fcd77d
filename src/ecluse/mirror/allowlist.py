"""The projects' allow-lists of the package mirror, closures and workspace tokens.

A project's list is one JSON file, ``<data_dir>/allow/<project>.json``, written
whole (a temporary file renamed) by ``ecluse packages``, read by the front:

``{"project": P, "packages": {NAME: {"requirement", "version", "by", "at",
"closure": {NAME: VERSION, ...}}}}``

Each allowed package carries its dependency closure, resolved against the
upstream index when staff allowed it (:func:`resolve_closure`: ``pip install
--dry-run --report``) and pinned: the front serves, for a name, the versions
the closures of the project's allowed packages name, nothing newer. Names are
compared normalised (PEP 503).

A workspace names its project by a token, :func:`project_token`: the project
and an HMAC of it under the mirror's key (``<data_dir>/key``); a workspace of
project A holds A's token only and cannot make B's.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..secrets import read_or_create

#: a project name as PEP 508 allows it
NAME_RE = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.I)
#: NAME or NAME==VERSION, as ``ecluse packages allow`` takes it
REQUIREMENT_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:==\s*([A-Za-z0-9.!+_-]+))?\s*$")
PROJECT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
TOKEN_MAC_HEX = 32


class AllowListError(ValueError):
    """A request ``ecluse packages`` refuses (bad name, unknown package)."""


class ResolveError(RuntimeError):
    """The closure of a requirement could not be resolved against the upstream index."""


def normalize(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_requirement(text: str) -> tuple[str, str | None]:
    """``NAME`` or ``NAME==VERSION`` → (normalised name, version or None)."""
    m = REQUIREMENT_RE.match(text)
    if not m or not NAME_RE.match(m.group(1)):
        raise AllowListError(
            f"{text!r} is not a package name or NAME==VERSION (other specifiers are "
            "refused: the closure is pinned at approval)")
    return normalize(m.group(1)), m.group(2)


# ------------------------------------------------------------------ tokens


def mirror_key(data_dir: Path) -> bytes:
    """The mirror's token key (``<data_dir>/key``, 0600), created when missing."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return bytes.fromhex(read_or_create(data_dir / "key", 32))


def project_token(key: bytes, project: str) -> str:
    """The token by which a workspace of ``project`` names its project to the mirror."""
    mac = hmac.new(key, b"ecluse-mirror\0" + project.encode(), hashlib.sha256)
    return f"{project}.{mac.hexdigest()[:TOKEN_MAC_HEX]}"


def token_project(key: bytes, token: str) -> str | None:
    """The project ``token`` was made for, or None when it is not one of ours."""
    project, _, mac = token.rpartition(".")
    if not project or not PROJECT_RE.match(project) or len(mac) != TOKEN_MAC_HEX:
        return None
    if hmac.compare_digest(project_token(key, project), token):
        return project
    return None


# --------------------------------------------------------------- the lists


@dataclass(frozen=True)
class Allowed:
    """One package a project's staff allowed, with its pinned closure."""

    name: str
    requirement: str
    version: str
    by: str
    at: str
    closure: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {"requirement": self.requirement, "version": self.version, "by": self.by,
                "at": self.at, "closure": dict(sorted(self.closure.items()))}


class AllowList:
    """One project's allow-list, in ``<data_dir>/allow/<project>.json``."""

    def __init__(self, data_dir: Path, project: str):
        if not PROJECT_RE.match(project):
            raise AllowListError(f"{project!r} is not a project slug")
        self.project = project
        self.path = Path(data_dir) / "allow" / f"{project}.json"

    def packages(self) -> dict[str, Allowed]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        return {name: Allowed(name=name, requirement=v["requirement"], version=v["version"],
                              by=v["by"], at=v["at"], closure=dict(v["closure"]))
                for name, v in data.get("packages", {}).items()}

    def _write(self, packages: dict[str, Allowed]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        data = {"project": self.project,
                "packages": {n: a.to_dict() for n, a in sorted(packages.items())}}
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".allow-", suffix=".json")
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.path)

    def add(self, allowed: Allowed) -> None:
        packages = self.packages()
        packages[allowed.name] = allowed
        self._write(packages)

    def revoke(self, name: str) -> Allowed:
        name = normalize(name)
        packages = self.packages()
        if name not in packages:
            raise AllowListError(
                f"{name} is not on project {self.project}'s allow-list (a dependency is "
                "revoked with the package that brought it)")
        gone = packages.pop(name)
        self._write(packages)
        return gone

    def pins(self) -> dict[str, set[str]]:
        """Normalised name → the versions the project's closures pin."""
        out: dict[str, set[str]] = {}
        for allowed in self.packages().values():
            for name, version in allowed.closure.items():
                out.setdefault(normalize(name), set()).add(version)
        return out


class AllowLists:
    """The front's view of every project's list: re-read when a file changes."""

    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir)
        self._cache: dict[str, tuple[tuple[int, int] | None, dict[str, set[str]]]] = {}

    def pins(self, project: str) -> dict[str, set[str]]:
        lst = AllowList(self.data_dir, project)
        try:
            st = lst.path.stat()
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_ino)
        except FileNotFoundError:
            stamp = None
        cached = self._cache.get(project)
        if cached and cached[0] == stamp:
            return cached[1]
        pins = lst.pins() if stamp else {}
        self._cache[project] = (stamp, pins)
        return pins


# --------------------------------------------------------------- closures


def resolve_closure(upstream: str, requirement: str, *, binary_only: bool = True,
                    python: str | None = None, timeout: float = 600) -> dict[str, str]:
    """The pinned dependency closure of ``requirement`` on ``upstream``: name → version.

    ``pip install --dry-run --report`` by ``python`` (default: this interpreter, the
    workspaces' Python on the local backend), isolated from every pip configuration
    and installed package, against ``upstream`` only.
    """
    cmd = [python or sys.executable, "-m", "pip", "install", "--dry-run", "--isolated",
           "--ignore-installed", "--no-cache-dir", "--disable-pip-version-check",
           "--quiet", "--index-url", upstream]
    parsed = urllib.parse.urlsplit(upstream)
    if parsed.scheme == "http" and parsed.hostname:
        cmd += ["--trusted-host", parsed.netloc]
    if binary_only:
        cmd += ["--only-binary", ":all:"]
    with tempfile.TemporaryDirectory(prefix="ecluse-resolve-") as tmp:
        report = Path(tmp) / "report.json"
        try:
            p = subprocess.run([*cmd, "--report", str(report), requirement],
                               capture_output=True, text=True, timeout=timeout,
                               env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                                    "HOME": tmp, "PIP_NO_INPUT": "1"})
        except subprocess.TimeoutExpired:
            raise ResolveError(f"resolving {requirement} on {upstream} took over "
                               f"{timeout:g} s") from None
        if p.returncode != 0:
            lines = [ln for ln in (p.stderr or p.stdout).strip().splitlines() if ln.strip()]
            why = " / ".join(lines[-3:]) or f"pip exited {p.returncode}"
            raise ResolveError(f"cannot resolve {requirement} on {upstream}: {why}")
        data = json.loads(report.read_text())
    closure = {normalize(item["metadata"]["name"]): str(item["metadata"]["version"])
               for item in data.get("install", [])}
    if not closure:
        raise ResolveError(f"resolving {requirement} on {upstream} gave nothing to install")
    return closure


def allow(data_dir: Path, project: str, requirement: str, *, upstream: str, actor: str,
          binary_only: bool = True, python: str | None = None) -> Allowed:
    """Resolve ``requirement``'s closure and put it on ``project``'s list."""
    lst = AllowList(data_dir, project)
    name, version = parse_requirement(requirement)
    closure = resolve_closure(upstream, f"{name}=={version}" if version else name,
                              binary_only=binary_only, python=python)
    if name not in closure:
        raise ResolveError(f"the closure of {requirement} does not name {name}")
    allowed = Allowed(name=name, requirement=requirement.strip(), version=closure[name],
                      by=actor, at=datetime.now(UTC).isoformat(timespec="seconds"),
                      closure=closure)
    lst.add(allowed)
    return allowed
