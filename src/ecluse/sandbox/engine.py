"""A Docker engine of our own, and the one base image every Écluse image is built from.

* :class:`Dockerd` starts a ``dockerd`` whose data root, exec root, pid file
  and socket all live in one directory, with ``--iptables=false
  --ip6tables=false --bridge=none --ip-forward=false --ip-masq=false``: it
  never touches the host's firewall, routing or a system Docker. Stopping it
  removes every container and network it holds, the daemon and (for a
  temporary engine) the directory. ``ecluse up --sandbox docker`` and the
  docker test suites use it when no engine is configured. A temporary engine's
  data root may be a tmpfs of its own (``tmpfs=True``, or
  ``ECLUSE_DOCKER_TMPFS=1`` as the tests set it): images load faster and go
  with the unmount instead of tens of thousands of unlinks.
* :func:`base_image` makes ``ecluse/base:bookworm-<key>``: a Debian bookworm
  root filesystem from ``debootstrap --variant=minbase`` against the Debian
  mirror the host already uses (no container registry is needed), imported
  with ``docker import``. The root filesystem is cached as a tarball under
  :func:`cache_dir`, keyed by its inputs (suite, variant, packages, mirror), so
  a second build only imports it; an engine that already holds the image
  reuses it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .base import SandboxError

SUITE = "bookworm"
#: packages of the base image on top of minbase (Python for workspaces and checks)
BASE_PACKAGES = ("python3", "ca-certificates", "tini")
BASE_REPO = "ecluse/base"
DEFAULT_MIRROR = "http://deb.debian.org/debian"

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def cache_dir() -> Path:
    """Where built root filesystems are kept: ``$ECLUSE_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/ecluse`` (``~/.cache/ecluse``)."""
    if os.environ.get("ECLUSE_CACHE_DIR"):
        return Path(os.environ["ECLUSE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "ecluse"


def host_debian_mirror(etc: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this host's APT uses (deb822 ``.sources`` or ``.list``)."""
    candidates: list[Path] = []
    for sub in ("sources.list.d",):
        d = etc / sub
        if d.is_dir():
            candidates += sorted(d.glob("*.sources")) + sorted(d.glob("*.list"))
    candidates.append(etc / "sources.list")
    for path in candidates:
        try:
            text = path.read_text()
        except OSError:
            continue
        if path.suffix == ".sources":
            for stanza in text.split("\n\n"):
                uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
                suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
                if uris and suites and SUITE in suites.group(1).split():
                    return uris.group(1).rstrip("/")
        else:
            for line in text.splitlines():
                f = line.split()
                if len(f) >= 3 and f[0] == "deb":
                    uri_i = next((i for i, x in enumerate(f[1:], 1) if not x.startswith("[")
                                  and not x.endswith("]") and "=" not in x), None)
                    if uri_i and len(f) > uri_i + 1 and f[uri_i + 1] == SUITE:
                        return f[uri_i].rstrip("/")
    return DEFAULT_MIRROR


def base_key(mirror: str, packages: tuple[str, ...] = BASE_PACKAGES) -> str:
    """Hash of everything that makes the base root filesystem."""
    blob = json.dumps({"suite": SUITE, "variant": "minbase", "packages": sorted(packages),
                       "mirror": mirror, "v": 1}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def base_rootfs(*, mirror: str | None = None, packages: tuple[str, ...] = BASE_PACKAGES,
                progress: Progress = _quiet, cache: Path | None = None) -> Path:
    """The base root filesystem as a tarball, built with debootstrap unless cached."""
    mirror = mirror or host_debian_mirror()
    key = base_key(mirror, packages)
    cache = cache or cache_dir()
    tarball = cache / f"rootfs-{SUITE}-{key}.tar"
    if tarball.exists():
        progress(f"base root filesystem: cached ({tarball})")
        return tarball
    if not shutil.which("debootstrap"):
        raise SandboxError("debootstrap is not installed (scripts/install-system-deps.sh)")
    cache.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ecluse-rootfs-", dir=cache) as tmp:
        root = Path(tmp) / "root"
        progress(f"base root filesystem: debootstrap {SUITE} from {mirror} "
                 f"(+{', '.join(packages)})...")
        cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(packages)}",
               SUITE, str(root), mirror]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        tail: list[str] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            tail = (tail + [line.rstrip()])[-20:]
            if line.startswith("I: "):
                progress("  " + line[3:].rstrip())
        if proc.wait() != 0:
            raise SandboxError("the base image could not be built (debootstrap failed)",
                               log_message="debootstrap failed:\n" + "\n".join(tail))
        # nothing of the build host or of APT's lists in the image
        for p in ("var/lib/apt/lists", "var/cache/apt/archives", "var/log"):
            for child in (root / p).glob("*"):
                if child.is_file():
                    child.unlink()
        part = tarball.with_suffix(".part")
        subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(part), "."],
                       check=True)
        os.replace(part, tarball)
    progress(f"base root filesystem: built in {time.monotonic() - t0:.0f} s")
    return tarball


def base_image_name(mirror: str) -> str:
    """``ecluse/base:bookworm-<key>``, the base image's name for ``mirror`` (nothing built)."""
    return f"{BASE_REPO}:{SUITE}-{base_key(mirror)}"


def base_image(client: Any, *, mirror: str | None = None, progress: Progress = _quiet,
               cache: Path | None = None) -> str:
    """``ecluse/base:bookworm-<key>`` in the engine of ``client`` (a docker SDK client)."""
    import docker.errors

    mirror = mirror or host_debian_mirror()
    name = base_image_name(mirror)
    tag = name.split(":", 1)[1]
    with contextlib.suppress(docker.errors.ImageNotFound):
        client.images.get(name)
        progress(f"base image {name}: present")
        return name
    tarball = base_rootfs(mirror=mirror, progress=progress, cache=cache)
    progress(f"base image {name}: importing")
    with open(tarball, "rb") as fh:
        client.api.import_image_from_data(
            fh, repository=BASE_REPO, tag=tag,
            changes=['ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
                     'ENV LANG=C.UTF-8', 'CMD ["/bin/bash"]'])
    client.images.get(name)
    return name


class Dockerd:
    """A ``dockerd`` of our own, everything under ``root`` (see the module docs)."""

    def __init__(self, root: str | os.PathLike, *, temporary: bool = True,
                 dockerd: str = "dockerd", start_timeout: float = 60.0,
                 tmpfs: bool | None = None):
        self.root = Path(root)
        self.temporary = temporary
        #: a temporary engine's data root in memory (a tmpfs of its own, unmounted at
        #: :meth:`stop`): loading images and removing them is then not disk-bound (the
        #: test suites, with ``ECLUSE_DOCKER_TMPFS=1``, where removing a data root holding
        #: an image of some 50,000 files took minutes on a busy disk)
        if tmpfs is None:
            tmpfs = os.environ.get("ECLUSE_DOCKER_TMPFS") == "1"
        self.tmpfs = tmpfs and temporary
        self.dockerd = dockerd
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        #: run in the daemon before exec (``ecluse up``: stop with the parent)
        self.preexec_fn: Callable[[], None] | None = None

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def argv(self) -> list[str]:
        args = [
            self.dockerd,
            "--data-root", str(self.root / "data"),
            "--exec-root", str(self.root / "exec"),
            "--pidfile", str(self.root / "dockerd.pid"),
            "--host", self.url,
            "--iptables=false", "--ip6tables=false", "--ip-forward=false",
            "--ip-masq=false", "--bridge=none",
            "--log-driver", "json-file", "--log-opt", "max-size=16m",
            "--config-file", str(self.root / "daemon.json"),
        ]
        init = shutil.which("tini-static") or shutil.which("docker-init")
        if init:
            args += ["--init-path", init]
        return args

    def start(self) -> Dockerd:
        if not shutil.which(self.dockerd):
            raise SandboxError("dockerd is not installed (Debian package docker.io; "
                               "scripts/install-system-deps.sh installs it)")
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        data = self.root / "data"
        if self.tmpfs and not os.path.ismount(data):
            data.mkdir(mode=0o710, exist_ok=True)
            proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0710",
                                   "ecluse-docker", str(data)], capture_output=True, text=True)
            if proc.returncode != 0:
                raise SandboxError("the Docker engine's in-memory data root could not be "
                                   "mounted (ECLUSE_DOCKER_TMPFS=1 needs root)",
                                   log_message=proc.stderr)
        # no registry mirrors, no proxies, no system configuration
        (self.root / "daemon.json").write_text("{}\n")
        log = open(self.root / "dockerd.log", "ab")
        env = {k: v for k, v in os.environ.items()
               if not k.lower().endswith("_proxy") and not k.startswith("DOCKER_")}
        self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=log, env=env,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     preexec_fn=self.preexec_fn)
        log.close()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = f"dockerd exited {self.proc.returncode}: " + self.log_tail()
                self.stop()
                raise SandboxError("the Docker engine did not start", log_message=log)
            if self.socket.exists() and self._ping():
                return self
            time.sleep(0.1)
        log = self.log_tail()
        self.stop()
        raise SandboxError("the Docker engine did not start in time", log_message=log)

    def _ping(self) -> bool:
        import docker

        try:
            with contextlib.closing(docker.DockerClient(base_url=self.url, timeout=5)) as c:
                return bool(c.ping())
        except Exception:
            return False

    def client(self, timeout: int = 120):
        import docker

        return docker.DockerClient(base_url=self.url, timeout=timeout)

    def log_tail(self, n: int = 4000) -> str:
        with contextlib.suppress(OSError):
            return (self.root / "dockerd.log").read_bytes()[-n:].decode(errors="replace")
        return ""

    def remove_everything(self) -> None:
        """Every container (running or not) and every network of this engine."""
        if not self.socket.exists():
            return
        with contextlib.suppress(Exception), contextlib.closing(self.client(timeout=60)) as c:
            for ctr in c.containers.list(all=True):
                with contextlib.suppress(Exception):
                    ctr.remove(force=True, v=True)
            for net in c.networks.list():
                if net.name not in ("none", "host", "bridge"):
                    with contextlib.suppress(Exception):
                        net.remove()

    def stop(self) -> None:
        """Remove containers and networks, stop the daemon; a temporary engine's
        directory is removed too (after unmounting whatever is left under it)."""
        if self.proc is not None and self.proc.poll() is None:
            self.remove_everything()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        # containerd-shim processes (own sessions) of containers that are left (the
        # folder's own paths only: /x/engine must not match /x/engine2's processes)
        for pid in _pids_mentioning(str(self.root) + "/"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for mnt in sorted(_mounts_under(self.root), key=len, reverse=True):
            subprocess.run(["umount", "--lazy", mnt], capture_output=True)
        if self.temporary:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Dockerd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _mounts_under(root: Path) -> list[str]:
    out = []
    prefix = str(root.resolve()) + "/"
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as fh:
        for line in fh:
            mp = line.split()[4].encode().decode("unicode_escape")
            if mp.startswith(prefix) or mp == prefix[:-1]:
                out.append(mp)
    return out


#: the engine's own programs (never anything else is killed by :meth:`Dockerd.stop`)
ENGINE_PROGRAMS = ("dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2",
                   "runc", "docker-proxy")


def _pids_mentioning(text: str) -> list[int]:
    """Engine processes (:data:`ENGINE_PROGRAMS`) whose command line mentions ``text``."""
    needle = text.encode()
    pids = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            with contextlib.suppress(OSError):
                exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
                if (exe in ENGINE_PROGRAMS
                        and needle in Path(f"/proc/{pid}/cmdline").read_bytes()):
                    pids.append(int(pid))
    return pids
