"""The ``local`` backend: bubblewrap + a network namespace + cgroups.

One sandbox is::

    /bin/sh (root, host)          writes its PID into the sandbox cgroup(s), then execs
    nsenter --net=/run/netns/ecluse-<id>                          joins the sandbox netns
    bwrap --unshare-pid,ipc,uts,cgroup --new-session ...          new mount tree, PID 1
      setpriv --reuid U --regid G --groups P --no-new-privs ...   drops to the user
        <command>                                                 PID 2 in the sandbox

bubblewrap runs as root *without* a user namespace: it builds the mount
tree (binding host paths that the user could not even traverse, such as an
interpreter under ``/root``), applies the seccomp filter and keeps only
``CAP_SETUID``/``CAP_SETGID``/``CAP_SETPCAP`` for ``setpriv``, which sets the
user's real uid, gid and project group, clears every capability set and sets
``no_new_privs`` before it execs the command. The user's code never runs
with any privilege, and no unprivileged user namespaces are needed on the
host.

State lives in ``<runtime_dir>/sandboxes/<id>/`` (``meta.json``, bubblewrap's
JSON status, logs, generated ``/etc`` files). Names and /30 slots are
allocated under ``<runtime_dir>/lock`` (``flock``), so concurrent starts —
from one hub or several processes — never collide. A sandbox is alive while
its cgroup has processes: that survives hub restarts and cannot be fooled by
a reused PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import stat
import sys
import time
from pathlib import Path, PurePosixPath
from typing import Any

from traitlets import Bool, Float, List, Unicode

from ..settings.airlock import airlock_settings
from . import network
from .base import (
    Mount,
    ProjectPaths,
    Sandbox,
    SandboxError,
    SandboxSpec,
    UserIdentity,
    planned_mounts,
    sandbox_env,
)
from .cgroups import CGROUP_FS, CHECKS_PARENT, Cgroups, Limits, detect, list_ids
from .network import Subnet
from .quota import ensure_project_volume
from .seccomp import build

#: /etc entries bound read-only into every sandbox (when they exist on the host).
#: passwd, group, hosts, hostname, nsswitch.conf and resolv.conf are generated.
DEFAULT_ETC = [
    "alternatives", "bash.bashrc", "ca-certificates", "debian_version", "fonts",
    "gai.conf", "host.conf", "inputrc", "ld.so.cache", "ld.so.conf", "ld.so.conf.d",
    "locale.alias", "localtime", "magic", "magic.mime", "mime.types", "os-release",
    "profile", "protocols", "python3", "python3.11", "services", "ssl/certs",
    "ssl/openssl.cnf", "terminfo", "timezone", "xdg",
]

LAUNCH_SCRIPT = (
    'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; '
    'n=$((n-1)); done; exec "$@"'
)
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def ensure_host_network(settings: Any, runtime_dir: str | os.PathLike = "/run/ecluse") -> str:
    """Create the ``ecluse0`` interface and the nftables table; return the host address.

    The hub API and the airlock listen on this address so that sandboxes can
    reach them (on the ports each sandbox is allowed).
    """
    subnet = Subnet(settings.sandbox.subnet)
    with _flock(Path(runtime_dir)):
        addr = network.ensure_dummy(subnet)
        network.ensure_table(subnet)
    return addr


def teardown_host_network(runtime_dir: str | os.PathLike = "/run/ecluse", *,
                          force: bool = False, cgroup_parent: str = "ecluse") -> bool:
    """Remove the table, ``ecluse0`` and the (empty) parent cgroups if no sandbox is
    registered (or ``force``). Returns False when sandboxes are registered."""
    rt = Path(runtime_dir)
    with _flock(rt):
        if not force and _registered(rt):
            return False
        network.delete_table()
        addr = network.dummy_address()
        if not force and addr and network.address_in_use(addr):
            # a hub or service (another deployment or test session) still listens
            # on the host address: taking it away would break it
            return False
        network.delete_dummy()
        if addr:
            network.delete_unreachable_route_for(addr)
        _remove_cgroup_parents(cgroup_parent)
        _remove_cgroup_parents(CHECKS_PARENT)
        logs = rt / "logs"
        if os.path.isdir(logs):
            for sid in os.listdir(logs):
                _remove_log_fs(rt, sid)
        if os.path.ismount(logs):
            network.sh("umount", str(logs), check=False)
    return True


#: size of <runtime_dir>/logs, which holds the mount points of the sandboxes' own log
#: file systems (and the output of sandboxes started by a version before them)
LOG_PARENT_SIZE = "256m"


def _ensure_log_fs(runtime_dir: Path, sandbox_id: str, size: str) -> None:
    """Mount the sandbox's own size-limited tmpfs for its output (call under the lock).

    One tmpfs per sandbox: a sandbox that fills its log space loses its own
    later output, never another sandbox's, and never fills /run or a disk.
    """
    logs = runtime_dir / "logs"
    logs.mkdir(mode=0o700, exist_ok=True)
    if not os.path.ismount(logs):
        network.sh("mount", "-t", "tmpfs", "-o",
                   f"size={LOG_PARENT_SIZE},mode=0700,nosuid,nodev,noexec", "ecluse-logs",
                   str(logs))
    own = logs / sandbox_id
    own.mkdir(mode=0o700, exist_ok=True)
    if not os.path.ismount(own):
        network.sh("mount", "-t", "tmpfs", "-o",
                   f"size={size},mode=0700,nosuid,nodev,noexec", f"ecluse-log-{sandbox_id}",
                   str(own))


def _remove_log_fs(runtime_dir: Path, sandbox_id: str) -> None:
    own = runtime_dir / "logs" / sandbox_id
    if os.path.ismount(own):
        network.sh("umount", "--lazy", str(own), check=False)
    with contextlib.suppress(OSError):
        own.rmdir()
    for stream in ("output", "stdout", "stderr"):  # before per-sandbox log space
        with contextlib.suppress(OSError):
            (runtime_dir / "logs" / f"{sandbox_id}.{stream}").unlink()


def check_host_account(user: UserIdentity, passwd: str | os.PathLike = "/etc/passwd") -> None:
    """Refuse a sandbox user whose uid is a host account's (files, signals, quotas
    of the two would mix).

    A local account (``/etc/passwd``) with that uid is always a collision; an
    account the name service (NSS: LDAP through sssd…) knows is one unless it
    is the same user under the same name.
    """
    local = None
    with contextlib.suppress(OSError):
        for line in Path(passwd).read_text(errors="replace").splitlines():
            fields = line.split(":")
            if len(fields) > 2 and fields[2].strip() == str(user.uid):
                local = fields[0]
                break
    if local is None:
        import pwd

        try:
            entry = pwd.getpwuid(user.uid)
        except KeyError:
            return
        if entry.pw_name == user.name:
            return
        local = entry.pw_name
    raise SandboxError(
        f"your account's user id ({user.uid}) is also the id of an account of this server, "
        "so no workspace can be started for it: ask the directory administrators to give "
        f"{user.name} a uidNumber that no local account uses",
        log_message=f"user {user.name}: uid {user.uid} collides with the host account "
        f"{local!r} (/etc/passwd or NSS); refusing to start a sandbox",
    )


def prepare_project_dirs(settings: Any, project: Any, user: UserIdentity) -> ProjectPaths:
    """The project's shared folder (root:project 2770) and the user's home (user 0700),
    on this host (the local and docker backends)."""
    if project.gid is None:
        raise SandboxError(
            f"project {project.slug} has no group id yet",
            log_message=f"project {project.slug}: gid (LDAP gidNumber) is not set",
        )
    root = Path(settings.projects_root).resolve()
    pdir = root / project.slug
    shared, homes, home = pdir / "shared", pdir / "home", pdir / "home" / user.name
    root.mkdir(mode=0o755, parents=True, exist_ok=True)
    ensure_project_volume(root, project.slug, project.quota.disk,
                          settings.sandbox.project_volumes)  # disk quota
    for d, mode in ((root, 0o755), (pdir, 0o755), (homes, 0o711)):
        d.mkdir(mode=mode, parents=True, exist_ok=True)
        _own(d, 0, 0, mode)
    shared.mkdir(exist_ok=True)
    _own(shared, 0, project.gid, 0o2770)
    prepare_inbox(pdir, project.gid, inbox_owner(settings))
    home.mkdir(exist_ok=True)
    _own(home, user.uid, user.gid, 0o700)
    return ProjectPaths(shared=shared, home=home)


def inbox_owner(settings: Any) -> int:
    """Who writes the projects' inboxes: the airlock's own user (``airlock.service_user``)
    when it runs as one, so that it delivers approved imports itself; else root."""
    import pwd

    user = airlock_settings(settings).service_user
    if not user:
        return 0
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:  # not made yet: root delivers (ecluse airlock import deliver)
        return 0


def prepare_inbox(pdir: Path, gid: int, owner: int = 0) -> None:
    """The project's inbox (``<pdir>/inbox``, ``owner``:project 2750: approved imports,
    written by the airlock only; files made in it take the project's group) and its mount
    point ``shared/inbox`` (root 0755, empty; the inbox is mounted read-only over it). A
    member's own ``inbox`` entry in the shared folder that is not such a folder is moved
    aside (``inbox.moved-<n>``), never deleted and never followed (a link there would
    redirect the mount)."""
    inbox = pdir / "inbox"
    inbox.mkdir(mode=0o750, exist_ok=True)
    _own(inbox, owner, gid, 0o2750)
    point = pdir / "shared" / "inbox"
    try:
        st = os.lstat(point)
    except FileNotFoundError:
        st = None
    if st is not None and not (stat.S_ISDIR(st.st_mode) and st.st_uid == 0):
        n = 1
        while os.path.lexists(f"{point}.moved-{n}"):
            n += 1
        os.rename(point, f"{point}.moved-{n}")
        st = None
    if st is None:
        try:
            os.mkdir(point, 0o755)
        except FileExistsError:
            # another sandbox of the project (two batch runs at once) made it at the same
            # moment: then it is root's folder; anything else made in between is refused
            st = os.lstat(point)
            if not (stat.S_ISDIR(st.st_mode) and st.st_uid == 0):
                raise
    _own(point, 0, 0, 0o755)


def _remove_cgroup_parents(parent: str) -> None:
    try:
        version = detect()
    except OSError:
        return
    bases = ([CGROUP_FS / c / parent for c in Cgroups.V1_CONTROLLERS] if version == 1
             else [CGROUP_FS / parent])
    for b in bases:
        with contextlib.suppress(OSError):
            b.rmdir()  # only when empty


@contextlib.contextmanager
def _flock(runtime_dir: Path):
    runtime_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    (runtime_dir / "sandboxes").mkdir(mode=0o711, exist_ok=True)
    fd = os.open(runtime_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _registered(runtime_dir: Path) -> list[str]:
    try:
        return sorted(os.listdir(runtime_dir / "sandboxes"))
    except FileNotFoundError:
        return []


def _python_dirs(env: Path) -> list[Path]:
    """The environment and the base interpreter prefix it needs."""
    env = Path(env)
    dirs = [env]
    cfg = env / "pyvenv.cfg"
    if cfg.exists():
        for line in cfg.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home":
                home = Path(value.strip())
                base = home.parent if home.name == "bin" else home
                dirs.append(base.resolve())
    # editable installs (``pip install -e``, a development checkout) put their
    # source directories in ``__editable__*.pth`` files: mount them read-only
    # too, or the environment's own packages would not import in a sandbox
    for pth in sorted(env.glob("lib/python3*/site-packages/__editable__*.pth")):
        for line in pth.read_text().splitlines():
            line = line.strip()
            if line.startswith("/") and Path(line).is_dir():
                dirs.append(Path(line).resolve())
    return [d for i, d in enumerate(dirs) if d not in dirs[:i]]


def free_slot(rt: Path, subnet: Subnet, dir_of: Any) -> int:
    """The first /30 slot no registered sandbox (of any backend) and no interface uses;
    call under the runtime folder's lock. ``dir_of(sid)``: a sandbox's folder."""
    used = set()
    for sid in _registered(rt):
        with contextlib.suppress(OSError, ValueError, KeyError):
            used.add(json.loads((dir_of(sid) / "meta.json").read_text())["slot"])
    existing = set(network.list_veths())
    for slot in range(1, subnet.slots):
        if slot not in used and network.veth_name(slot) not in existing:
            return slot
    raise SandboxError("no free sandbox address",
                       log_message=f"all slots of {subnet.net} in use")


def _refuse_hidden_python(mounts: list[Mount], pdirs: list[Path]) -> None:
    """A mount over the Python environment would start nothing (``exec: not found``).

    Say so before launching: a checkout or environment under ``/check``,
    ``/project`` or a user's ``/home/<user>`` is hidden by the sandbox's own mounts.
    """
    for m in mounts:
        target = PurePosixPath(m.target)
        if os.path.realpath(m.source) == os.path.realpath(m.target):
            continue  # a folder bound at its own path hides nothing (a source checkout)
        for pdir in pdirs:
            p = PurePosixPath(pdir)
            if p == target or target in p.parents:
                raise SandboxError(
                    f"the sandbox mount {m.target} would hide its Python environment; "
                    "the platform's operators must install it elsewhere",
                    log_message=f"the sandbox mount {m.target} would hide the Python "
                    f"environment directory {pdir}; install the environment outside "
                    f"{m.target} (sandbox.python_env)")


_ROOT_UNSAFE_PREFIXES = ("LD_", "GCONV_", "MALLOC_", "GLIBC_")
_ROOT_UNSAFE = {"LOCPATH", "NLSPATH", "HOSTALIASES", "RESOLV_HOST_CONF", "LOCALDOMAIN",
                "RES_OPTIONS", "TZDIR", "IFS", "ENV", "BASH_ENV", "CDPATH", "SHELLOPTS",
                "PS4", "PATH"}


def _root_safe(key: str) -> bool:
    """May ``key`` be in the environment of the root-run launcher (sh, nsenter, bwrap)?"""
    return key not in _ROOT_UNSAFE and not key.startswith(_ROOT_UNSAFE_PREFIXES)


def _proc_start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[19])
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return None


def _nspid(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("NSpid:"):
                    return [int(x) for x in line.split()[1:]]
    except (FileNotFoundError, ProcessLookupError):
        pass
    return []


class LocalSandbox(Sandbox):
    """Sandboxes on this host with bubblewrap, network namespaces and cgroups."""

    on_host = True
    host_python = True

    runtime_dir = Unicode(
        "/run/ecluse", help="Runtime state: lock, registry of sandboxes, logs (root only)."
    ).tag(config=True)
    bwrap = Unicode("/usr/bin/bwrap", help="The bubblewrap executable.").tag(config=True)
    setpriv = Unicode("/usr/bin/setpriv", help="util-linux setpriv, run inside.").tag(config=True)
    nsenter = Unicode("/usr/bin/nsenter", help="util-linux nsenter.").tag(config=True)
    cgroup_parent = Unicode("ecluse", help="Parent cgroup of all sandboxes.").tag(config=True)
    cgroup_parent_weight = Float(
        None, allow_none=True,
        help="CPU weight of the parent cgroup, in busy processes' worth (None: one per "
        "core). The airlock's check sandboxes weigh a fraction of one (check_cpu_weight).",
    ).tag(config=True)
    etc_entries = List(
        Unicode(), default_value=DEFAULT_ETC,
        help="Host /etc entries bound read-only (never shadow, ldap, ssh, pam or secrets).",
    ).tag(config=True)
    seccomp = Bool(True, help="Apply the seccomp filter of ecluse.sandbox.seccomp.").tag(
        config=True)
    oom_kills_sandbox = Bool(
        True, help="When the kernel kills a process for exceeding the memory limit, stop the "
        "whole sandbox (cgroup v2 does this itself with memory.oom.group).",
    ).tag(config=True)
    log_space = Unicode(
        "64m", help="Size of each sandbox's own tmpfs for its output "
        "(<runtime_dir>/logs/<id>/): a sandbox that fills it loses its own later output only; "
        "sandbox output can never fill the host's /run or disk.").tag(config=True)
    setup_timeout = Float(
        20.0, help="Seconds bubblewrap may take to set a sandbox up.").tag(config=True)

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._children: dict[str, asyncio.subprocess.Process] = {}

    # -------------------------------------------------------------- helpers

    @property
    def subnet(self) -> Subnet:
        return Subnet(self.settings.sandbox.subnet)

    @property
    def _rt(self) -> Path:
        return Path(self.runtime_dir)

    def _dir(self, sandbox_id: str) -> Path:
        return self._rt / "sandboxes" / sandbox_id

    def _log(self, sandbox_id: str, stream: str) -> Path:
        return self._rt / "logs" / sandbox_id / stream

    def host_address(self) -> str:
        return ensure_host_network(self.settings, self.runtime_dir)

    def prepare_project_dirs(self, project: Any, user: UserIdentity) -> ProjectPaths:
        return prepare_project_dirs(self.settings, project, user)

    # --------------------------------------------------------------- launch

    async def launch(self, spec: SandboxSpec, *, one_shot: bool = False) -> dict[str, Any]:
        if os.geteuid() != 0:
            raise SandboxError("the local sandbox backend must run as root")
        t0 = time.monotonic()
        await asyncio.to_thread(check_host_account, spec.user)
        sandbox_id = "s" + secrets.token_hex(5)
        paths = await asyncio.to_thread(self.prepare_project_dirs, spec.project, spec.user)
        for ds in spec.project.datasets:
            if not Path(ds.path).exists():
                raise SandboxError(
                    f"dataset {ds.name} of project {spec.project.slug} is unavailable",
                    log_message=f"dataset {ds.name}: {ds.path} does not exist")
        for m in spec.extra_mounts:
            if not Path(m.source).exists():
                raise SandboxError(f"{m.target} is unavailable",
                                   log_message=f"extra mount source {m.source} does not exist")
        cg = Cgroups(sandbox_id, parent=self.cgroup_parent,
                     parent_weight=self.cgroup_parent_weight)
        meta: dict[str, Any] = {
            "backend": "local",
            "id": sandbox_id,
            "project": spec.project.slug,
            "user": spec.user.name,
            "uid": spec.user.uid,
            "name": spec.name,
            "one_shot": one_shot,
            "phase": "starting",
            "created": time.time(),
            "cgroup": cg.to_state(),
            "runtime_dir": str(self._rt),
            "port": spec.port,
            "allowed_ports": sorted(set(spec.allowed_ports)),
        }
        slot = await asyncio.to_thread(self._allocate, meta)
        host_ip, ip = self.subnet.addresses(slot)
        meta.update(slot=slot, ip=ip, gateway=host_ip, veth=network.veth_name(slot),
                    netns=network.netns_name(sandbox_id))
        try:
            await asyncio.to_thread(self._prepare, spec, meta, cg)
            await self._exec(spec, meta, cg, paths, one_shot)
        except BaseException as e:
            self.log.error("sandbox %s for %s/%s failed to start: %s", sandbox_id,
                           spec.project.slug, spec.user.name, getattr(e, "log_message", e))
            with contextlib.suppress(Exception):
                await self.terminate(meta, grace=0)
            with contextlib.suppress(Exception):
                await self.release(meta)
            if isinstance(e, (SandboxError, asyncio.CancelledError, KeyboardInterrupt)):
                raise
            raise SandboxError("the workspace could not be started",
                               log_message=f"{type(e).__name__}: {e}") from e
        meta["phase"] = "running"
        meta["start_seconds"] = round(time.monotonic() - t0, 4)
        await asyncio.to_thread(self._save_meta, meta)
        self.log.info("sandbox %s started for %s in %s at %s (%.0f ms)", sandbox_id,
                      spec.user.name, spec.project.slug, ip, 1000 * meta["start_seconds"])
        return dict(meta)

    def _allocate(self, meta: dict[str, Any]) -> int:
        with _flock(self._rt):
            network.ensure_dummy(self.subnet)
            network.ensure_table(self.subnet)
            slot = free_slot(self._rt, self.subnet, self._dir)
            meta["slot"] = slot
            d = self._dir(meta["id"])
            d.mkdir(mode=0o711)
            self._save_meta(meta)
            _ensure_log_fs(self._rt, meta["id"], self.log_space)
            return slot

    def _save_meta(self, meta: dict[str, Any]) -> None:
        d = self._dir(meta["id"])
        tmp = d / "meta.json.tmp"
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, d / "meta.json")

    def _prepare(self, spec: SandboxSpec, meta: dict[str, Any], cg: Cgroups) -> None:
        """Blocking part of a start: /etc files, cgroup, network (run in a thread)."""
        d = self._dir(meta["id"])
        etc = d / "etc"
        etc.mkdir(mode=0o755)
        u, p = spec.user, spec.project
        files = {
            "passwd": (
                "root:x:0:0:root:/root:/usr/sbin/nologin\n"
                f"{u.name}:x:{u.uid}:{u.gid}:{u.name}:/home/{u.name}:/bin/bash\n"
                "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
            ),
            "group": (
                "root:x:0:\n"
                + (f"{u.name}:x:{u.gid}:\n" if u.gid != p.gid else "")
                + f"{p.slug}:x:{p.gid}:{u.name}\n"
                "nogroup:x:65534:\n"
            ),
            "hosts": f"127.0.0.1\tlocalhost\n::1\tlocalhost\n{meta['ip']}\t{p.slug}\n",
            "hostname": f"{p.slug}\n",
            "nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files\n",
            "resolv.conf": "# no name service inside an Écluse workspace\n",
        }
        for name, text in files.items():
            f = etc / name
            f.write_text(text)
            f.chmod(0o644)
        if self.seccomp:
            (d / "seccomp.bpf").write_bytes(build())
        limits = Limits(memory=p.quota.memory, cpu=p.quota.cpu, pids=p.quota.pids)
        cg.create(limits)
        network.create_link(meta["id"], meta["slot"], self.subnet, spec.allowed_ports)

    def _bwrap_args(self, spec: SandboxSpec, meta: dict[str, Any], paths: ProjectPaths,
                    one_shot: bool, status_fd: int, seccomp_fd: int | None) -> list[str]:
        d = self._dir(meta["id"])
        args = [
            self.bwrap,
            "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--hostname", spec.project.slug,
            "--new-session",
            "--cap-drop", "ALL",
            "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP",
        ]
        made: set[str] = {"/"}

        def mkdirs(target: str) -> None:
            parts = Path(target).parts[1:-1]
            cur = ""
            for part in parts:
                cur += "/" + part
                if cur not in made:
                    args.extend(["--perms", "0755", "--dir", cur])
                    made.add(cur)

        def bind(src: str | Path, target: str, rw: bool = False) -> None:
            mkdirs(target)
            args.extend(["--bind" if rw else "--ro-bind", str(src), target])
            made.add(target)

        # system directories
        for name in ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            host = Path("/") / name
            if host.is_symlink():
                args.extend(["--symlink", os.readlink(host), f"/{name}"])
            elif host.is_dir():
                bind(host, f"/{name}")
        args.extend(["--proc", "/proc", "--dev", "/dev"])
        args.extend(["--perms", "1777", "--tmpfs", "/tmp"])
        args.extend(["--perms", "1777", "--tmpfs", "/dev/shm"])  # POSIX semaphores (Dask)
        args.extend(["--perms", "0755", "--dir", "/etc"])
        made.add("/etc")
        for entry in self.etc_entries:
            host = Path("/etc") / entry
            if host.is_symlink():
                mkdirs(f"/etc/{entry}")
                args.extend(["--symlink", os.readlink(host), f"/etc/{entry}"])
            elif host.exists():
                bind(host, f"/etc/{entry}")
        for f in sorted(os.listdir(d / "etc")):
            bind(d / "etc" / f, f"/etc/{f}")
        # the workspace Python environment, at its own path
        env = Path(self.settings.sandbox.python_env or sys.prefix)
        pdirs = _python_dirs(env)
        for pdir in pdirs:
            bind(pdir, str(pdir))
        # the project: /data/<dataset> (ro), /project and /home/<user> (rw), extras
        args.extend(["--perms", "0755", "--dir", "/data", "--perms", "0755", "--dir", "/home"])
        made.update({"/data", "/home"})
        mounts = planned_mounts(spec, Path(self.settings.projects_root).resolve())
        _refuse_hidden_python(mounts, pdirs)
        for m in mounts:
            bind(m.source, m.target, rw=not m.read_only)
        # process
        env_vars = sandbox_env(spec, f"{env}/bin:{SYSTEM_PATH}")
        env_vars.setdefault("ECLUSE_SANDBOX_IP", meta["ip"])
        # The environment reaches the command through bwrap's own environment (set by
        # _exec), never through argv: /proc/<pid>/cmdline is world-readable on the
        # host and the environment holds the hub API token. Variables the root-run
        # launcher must not honour (LD_PRELOAD...) are set by bwrap for the child only.
        args.extend(["--chdir", "/"])
        for k, v in env_vars.items():
            if not _root_safe(k):
                args.extend(["--setenv", k, v])
        meta["_env"] = {k: v for k, v in env_vars.items() if _root_safe(k)}
        args.extend(["--json-status-fd", str(status_fd)])
        if seccomp_fd is not None:
            args.extend(["--seccomp", str(seccomp_fd)])
        if one_shot:
            args.append("--die-with-parent")
        groups = sorted({spec.project.gid})
        args.extend([
            "--", self.setpriv,
            f"--reuid={spec.user.uid}", f"--regid={spec.user.gid}",
            "--groups=" + ",".join(str(g) for g in groups),
            "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs",
            # change directory as the user (root without capabilities may not enter a home)
            "--", "/bin/sh", "-c", 'cd -- "$0" || exit 126; exec "$@"', spec.cwd,
            *spec.command,
        ])
        return args

    async def _exec(self, spec: SandboxSpec, meta: dict[str, Any], cg: Cgroups,
                    paths: ProjectPaths, one_shot: bool) -> None:
        d = self._dir(meta["id"])
        status_path = d / "status.json"
        opened: list[int] = []

        def _open(path: Path, flags: int, mode: int = 0o600) -> int:
            fd = os.open(path, flags | os.O_CLOEXEC, mode)
            opened.append(fd)
            return fd

        try:
            status_fd = _open(status_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            seccomp_fd = _open(d / "seccomp.bpf", os.O_RDONLY) if self.seccomp else None
            if one_shot:
                out_fd = _open(self._log(meta["id"], "stdout"),
                               os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                err_fd = _open(self._log(meta["id"], "stderr"),
                               os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            else:
                out_fd = err_fd = _open(self._log(meta["id"], "output"),
                                        os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            argv = [
                "/bin/sh", "-c", LAUNCH_SCRIPT, "ecluse-sandbox",
                str(len(cg.procs_files)), *cg.procs_files,
                self.nsenter, f"--net={network.netns_path(meta['id'])}", "--",
                *self._bwrap_args(spec, meta, paths, one_shot, status_fd, seccomp_fd),
            ]
            pass_fds = tuple(fd for fd in (status_fd, seccomp_fd) if fd is not None)
            launcher_env = meta.pop("_env")
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out_fd, stderr=err_fd,
                pass_fds=pass_fds, start_new_session=True, env=launcher_env,
            )
        finally:
            for fd in opened:
                os.close(fd)
        self._children[meta["id"]] = proc
        meta["pid"] = proc.pid
        meta["pid_start"] = _proc_start_time(proc.pid)
        # wait until bubblewrap has built the sandbox (or failed to)
        deadline = time.monotonic() + self.setup_timeout
        delay = 0.002
        while True:
            text = status_path.read_text() if status_path.exists() else ""
            if '"child-pid"' in text:
                return
            if proc.returncode is not None:
                log = await self._tail(self._log(meta["id"], "stderr" if one_shot else "output"))
                raise SandboxError(
                    "the workspace could not be started",
                    log_message=f"sandbox {meta['id']}: bwrap exited {proc.returncode}: {log}")
            if time.monotonic() > deadline:
                raise SandboxError("the workspace took too long to start",
                                   log_message=f"sandbox {meta['id']}: no bwrap status")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(proc.wait()), delay)
            delay = min(delay * 2, 0.05)

    async def _tail(self, path: Path, limit: int = 4000) -> str:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return ""
        return data[-limit:].decode(errors="replace").strip()

    # ----------------------------------------------------------------- poll

    def _cgroups(self, state: dict[str, Any]) -> Cgroups:
        return Cgroups.from_state(state["id"], state["cgroup"])

    def _exit_status(self, state: dict[str, Any], cg: Cgroups) -> int:
        """Exit status of a sandbox whose processes are all gone."""
        if cg.oom_kills() > 0:
            state["oom_killed"] = True
            return 137
        status = self._dir(state["id"]) / "status.json"
        try:
            for line in status.read_text().splitlines():
                line = line.strip()
                if '"exit-code"' in line:
                    return int(json.loads(line)["exit-code"])
        except (FileNotFoundError, ValueError, KeyError):
            pass
        proc = self._children.get(state["id"])
        if proc is not None and proc.returncode is not None:
            return proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
        return state.get("exit_code", 137 if state.get("killed") else 1)

    async def poll(self, state: dict[str, Any]) -> int | None:
        if state.get("released"):
            return state.get("exit_code", 0)
        cg = self._cgroups(state)
        pids = cg.pids()
        if pids:
            if self.oom_kills_sandbox and cg.oom_kills() > 0:
                self.log.warning("sandbox %s exceeded its memory limit: stopping it",
                                 state["id"])
                state["oom_killed"] = True
                await asyncio.to_thread(cg.kill_all)
                await self._reap(state)
                return 137
            return None
        if not self._dir(state["id"]).exists() and not cg.exists():
            return state.get("exit_code", 0)  # released by someone else
        await self._reap(state)
        status = self._exit_status(state, cg)
        state["exit_code"] = status
        return status

    async def wait(self, state: dict[str, Any], timeout: float | None = None) -> int | None:
        proc = self._children.get(state["id"])
        if proc is None:
            return await super().wait(state, timeout)
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), timeout)
        except TimeoutError:
            return await self.poll(state)
        return await super().wait(state, 5.0)  # until the cgroup empties

    async def _reap(self, state: dict[str, Any]) -> None:
        proc = self._children.get(state["id"])
        if proc is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(proc.wait()), 5)

    # ----------------------------------------------------------------- stop

    def kill_running(self) -> list[str]:
        """Kill every process of the sandboxes this instance started and still waits
        for (from any thread): each waiting ``run`` then sees its sandbox end and
        releases it as usual. For a service stopping (the root airlock's checks):
        nothing is left registered behind it. Returns the ids."""
        ids = list(self._children)
        for sid in ids:
            with contextlib.suppress(OSError):
                Cgroups(sid, parent=self.cgroup_parent).kill_all()
        return ids

    async def terminate(self, state: dict[str, Any], grace: float | None = None) -> None:
        """SIGTERM the command (PID 2 inside), wait ``grace``, then kill everything."""
        if grace is None:
            grace = self.settings.sandbox.stop_grace
        cg = self._cgroups(state)
        pids = cg.pids()
        if not pids:
            await self._reap(state)
            return
        main = [p for p in pids if len(_nspid(p)) > 1 and _nspid(p)[-1] == 2]
        targets = main or [p for p in pids if len(_nspid(p)) > 1 and _nspid(p)[-1] != 1]
        if grace > 0 and targets:
            for pid in targets:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            delay = 0.01
            while cg.pids() and time.monotonic() < deadline:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.1)
        if cg.pids():
            state["killed"] = True
            ok = await asyncio.to_thread(cg.kill_all)
            if not ok:
                raise SandboxError("the workspace could not be stopped",
                                   log_message=f"sandbox {state['id']}: processes survive "
                                   "SIGKILL")
        await self._reap(state)

    async def release(self, state: dict[str, Any]) -> None:
        """Remove the cgroup, veth, namespace, firewall elements and runtime files."""
        if "exit_code" not in state:
            cg = self._cgroups(state)
            if not cg.pids():
                state["exit_code"] = self._exit_status(state, cg)
        await asyncio.to_thread(self._release_sync, state)
        self._children.pop(state["id"], None)
        state["released"] = True
        self.log.info("sandbox %s removed (exit %s)", state["id"], state.get("exit_code"))

    def _release_sync(self, state: dict[str, Any]) -> None:
        cg = self._cgroups(state)
        if cg.pids() and not cg.kill_all():
            raise SandboxError("the workspace could not be stopped",
                               log_message=f"sandbox {state['id']}: processes survive SIGKILL")
        cg.remove()
        network.delete_link(state["id"], state.get("slot"), state.get("allowed_ports"))
        with _flock(self._rt):
            _remove_log_fs(self._rt, state["id"])
            shutil.rmtree(self._dir(state["id"]), ignore_errors=True)
            if not _registered(self._rt):
                network.delete_table()

    async def read_logs(self, state: dict[str, Any]) -> tuple[str, str]:
        def read(name: str) -> str:
            try:
                with open(self._log(state["id"], name), "rb") as fh:
                    fh.seek(0, os.SEEK_END)
                    size = fh.tell()
                    fh.seek(max(0, size - self.max_log_bytes))
                    return fh.read().decode(errors="replace")
            except FileNotFoundError:
                return ""

        if state.get("one_shot"):
            return await asyncio.to_thread(read, "stdout"), await asyncio.to_thread(
                read, "stderr")
        return await asyncio.to_thread(read, "output"), ""

    # ------------------------------------------------------------ operations

    def list(self) -> list[dict[str, Any]]:
        """The registered sandboxes (meta data), with ``alive`` set."""
        out = []
        for sid in _registered(self._rt):
            try:
                meta = json.loads((self._dir(sid) / "meta.json").read_text())
            except (OSError, ValueError):
                meta = {"id": sid, "phase": "unknown"}
            if meta.get("backend", "local") != "local":
                continue  # another backend's sandbox (docker): its slot, not ours to remove
            if "cgroup" in meta:
                meta["alive"] = bool(self._cgroups(meta).pids())
            out.append(meta)
        return out

    async def cleanup_orphans(self, *, min_age: float = 60.0) -> list[str]:
        """Remove sandboxes whose processes are gone, and stray namespaces, veths, cgroups.

        A sandbox still starting (younger than ``min_age`` seconds) is left alone.
        Returns the ids removed.
        """
        removed = []
        now = time.time()
        registered = set()
        for meta in self.list():
            registered.add(meta["id"])
            if meta.get("alive"):
                continue
            if meta.get("phase") == "starting" and now - meta.get("created", 0) < min_age:
                continue
            if "cgroup" not in meta:
                meta["cgroup"] = Cgroups(meta["id"], parent=self.cgroup_parent).to_state()
            await self.release(meta)
            removed.append(meta["id"])
        await asyncio.to_thread(self._sweep, registered, removed)
        return removed

    def _sweep(self, registered: set[str], removed: list[str]) -> None:
        """Resources named like ours that no registered sandbox owns."""
        with _flock(self._rt):
            live = set(_registered(self._rt))
            slots = set()
            for sid in live:
                with contextlib.suppress(OSError, ValueError, KeyError):
                    slots.add(json.loads((self._dir(sid) / "meta.json").read_text())["slot"])
            for ns in network.list_netns():
                sid = ns[len(network.NETNS_PREFIX):]
                if sid not in live:
                    network.delete_link(sid, None)
                    removed.append(sid)
            for veth in network.list_veths():
                slot = int(veth[len(network.VETH_PREFIX):] or -1)
                if slot not in slots:
                    network.remove_allowed(veth)
                    network.sh("ip", "link", "del", veth, check=False)
            for iface, _port in network.allowed_elements():
                slot = int(iface[len(network.VETH_PREFIX):] or -1)
                if slot not in slots:
                    network.remove_allowed(iface)
            # the check sandboxes' parent too: one registry holds both kinds
            for parent in dict.fromkeys((self.cgroup_parent, CHECKS_PARENT)):
                for sid in list_ids(parent):
                    if sid not in live:
                        cg = Cgroups(sid, parent=parent)
                        cg.kill_all()
                        cg.remove()
                        removed.append(sid)
            logs = self._rt / "logs"
            for name in os.listdir(logs) if logs.is_dir() else []:
                if (logs / name).is_dir() and name not in live:
                    _remove_log_fs(self._rt, name)
            if not live:
                network.delete_table()


def check_sandboxes(settings: Any) -> LocalSandbox:
    """The local backend of the airlock's one-shot check sandboxes: the checker is the
    airlock's own code (this installation's Python), and the sandboxes share the
    :data:`~ecluse.sandbox.cgroups.CHECKS_PARENT` cgroup, which weighs
    ``airlock.check_cpu_weight`` busy processes: checks run in the background and, on
    a busy host, yield the CPU to the API and the workspaces (issue 21 item 1)."""
    sandbox = settings.sandbox.model_copy(update={"python_env": Path(sys.prefix)})
    return LocalSandbox(settings=settings.model_copy(update={"sandbox": sandbox}),
                        cgroup_parent=CHECKS_PARENT,
                        cgroup_parent_weight=airlock_settings(settings).check_cpu_weight)


def _own(path: Path, uid: int, gid: int, mode: int) -> None:
    st = os.lstat(path)
    import stat as _stat

    if not _stat.S_ISDIR(st.st_mode):
        raise SandboxError("the project folders are damaged",
                           log_message=f"{path} is not a directory (symlink?)")
    if (st.st_uid, st.st_gid) != (uid, gid):
        os.chown(path, uid, gid, follow_symlinks=False)
    if _stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)
