"""The ``docker`` backend: each sandbox is a container of a Docker engine on this host.

Lifecycle through the Docker Engine API (the ``docker`` SDK, as DockerSpawner
uses it), behind the same :class:`~ecluse.sandbox.Sandbox` base as the
``local`` backend, so the spawner, batch runs and Dask clusters use it
unchanged. One sandbox is:

* its **own bridge network** ``ecluse-<id>``, whose host interface is the
  ``eclv<slot>`` of a /30 slot of ``SandboxSettings.subnet`` (allocated under
  the local backend's lock and registry, so both backends share the address
  space): ``.1`` is the host end and the container's gateway, ``.2`` the
  container. No masquerade, no other container on it; the engine runs with
  ``--iptables=false``. The firewall is the local backend's own
  ``table inet ecluse`` (:mod:`ecluse.sandbox.network`): from ``eclv*`` only new
  TCP connections to the host address on the sandbox's allowed ports (hub API,
  airlock, gateway) are accepted, everything else is dropped, and nothing is
  forwarded — not to another container, not off the host.
* a **container**: the user's uid:gid plus the project group, every capability
  dropped, ``no-new-privileges``, the engine's default seccomp profile, a
  read-only root filesystem with a private ``/tmp`` tmpfs, memory (no swap
  beyond it), CPU and PID limits from the project quota, ``/data/<dataset>``
  read-only, ``/project`` and ``/home/<user>`` read-write, generated
  ``passwd``/``group``/``resolv.conf`` (no name service), labels
  ``ecluse.*`` by which a restarted hub finds it again (:meth:`list`,
  :meth:`adopt`, :meth:`cleanup_orphans`).

:meth:`DockerSandbox.container_spec` gives the same controls as DockerSpawner
trait values, for a hub that runs DockerSpawner itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

from traitlets import Bool, Dict, Float, Unicode, default

from . import network
from .base import (
    ProjectPaths,
    Sandbox,
    SandboxError,
    SandboxSpec,
    UserIdentity,
    planned_mounts,
    sandbox_env,
)
from .local import (
    _flock,
    _registered,
    check_host_account,
    ensure_host_network,
    free_slot,
    prepare_project_dirs,
)
from .network import Subnet
from .seccomp import docker_profile

NANO = 1_000_000_000
LABEL = "ecluse.sandbox-id"
BACKEND_LABEL = "ecluse.backend"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class DockerSandbox(Sandbox):
    """Sandboxes as containers of a Docker engine on this host."""

    on_host = True

    image = Unicode(help="Workspace image (default: SandboxSettings.image).").tag(config=True)
    docker_url = Unicode(
        help="Docker Engine API URL (default: $DOCKER_HOST, else the system socket)."
    ).tag(config=True)
    runtime_dir = Unicode(
        "/run/ecluse", help="Registry and lock shared with the local backend (root only)."
    ).tag(config=True)
    network_prefix = Unicode(
        "ecluse-", help="Prefix of the per-sandbox network names.").tag(config=True)
    tmp_size = Unicode("1g", help="Size of the private /tmp (counts against memory).").tag(
        config=True)
    labels = Dict(help="Extra labels on containers and networks.").tag(config=True)
    init = Bool(True, help="Run the engine's init (tini) as PID 1 of each container.").tag(
        config=True)
    seccomp = Bool(
        True, help="The local backend's seccomp filter (ecluse.sandbox.seccomp) as the "
        "containers' profile, so both backends deny the same calls; False: the engine's "
        "default profile.").tag(config=True)
    api_timeout = Float(120.0, help="Seconds an Engine API call may take.").tag(config=True)

    @default("image")
    def _image_default(self) -> str:
        return self.settings.sandbox.image if self.settings else "ecluse/workspace:0.1.0"

    @default("docker_url")
    def _docker_url_default(self) -> str:
        if self.settings is not None and self.settings.sandbox.docker_url:
            return self.settings.sandbox.docker_url
        return os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._client: Any = None

    # -------------------------------------------------------------- helpers

    @property
    def client(self) -> Any:
        if self._client is None:
            import docker

            try:
                self._client = docker.DockerClient(base_url=self.docker_url,
                                                   timeout=int(self.api_timeout))
            except docker.errors.DockerException as e:
                raise SandboxError("the container engine is unavailable",
                                   log_message=f"Docker engine at {self.docker_url}: {e}") from e
        return self._client

    @property
    def subnet(self) -> Subnet:
        return Subnet(self.settings.sandbox.subnet)

    @property
    def _rt(self) -> Path:
        return Path(self.runtime_dir)

    def _dir(self, sandbox_id: str) -> Path:
        return self._rt / "sandboxes" / sandbox_id

    def network_name(self, spec: SandboxSpec) -> str:
        return f"{self.network_prefix}{spec.project.slug}-{spec.user.name}"

    def _labels(self, spec: SandboxSpec) -> dict[str, str]:
        return {"ecluse.project": spec.project.slug, "ecluse.user": spec.user.name,
                "ecluse.sandbox": spec.name or "workspace", **self.labels}

    def _seccomp_opt(self) -> list[str]:
        if not self.seccomp:
            return []  # the engine's default profile

        return ["seccomp=" + json.dumps(docker_profile(), separators=(",", ":"))]

    def host_address(self) -> str:
        return ensure_host_network(self.settings, self.runtime_dir)

    def prepare_project_dirs(self, project: Any, user: UserIdentity) -> ProjectPaths:
        return prepare_project_dirs(self.settings, project, user)

    # ------------------------------------------------------------ the spec

    def container_spec(self, spec: SandboxSpec) -> dict[str, Any]:
        """``{"spawner": DockerSpawner trait values, "network": network create kwargs}``."""
        q = spec.project.quota
        volumes = {
            str(m.source): {"bind": m.target, "mode": "ro" if m.read_only else "rw"}
            for m in planned_mounts(spec, self.settings.projects_root)
        }
        net = self.network_name(spec)
        groups = [str(spec.project.gid)] if spec.project.gid is not None else []
        spawner = {
            "image": self.image,
            "cmd": list(spec.command),
            "environment": sandbox_env(spec),
            "volumes": volumes,
            "network_name": net,
            "use_internal_ip": True,
            "port": spec.port or 8888,
            "mem_limit": q.memory,
            "cpu_limit": q.cpu,
            "remove": True,
            "extra_create_kwargs": {
                "user": f"{spec.user.uid}:{spec.user.gid}",
                "working_dir": spec.cwd,
                "hostname": spec.project.slug,
                "labels": self._labels(spec),
            },
            "extra_host_config": {
                "group_add": groups,
                "cap_drop": ["ALL"],
                "security_opt": ["no-new-privileges:true"] + self._seccomp_opt(),
                "privileged": False,
                "read_only": True,
                "tmpfs": {"/tmp": f"rw,nosuid,nodev,size={self.tmp_size}",
                          # the cgroup tree stays out of sight, as in a local sandbox
                          "/sys/fs/cgroup": "ro,nosuid,nodev,noexec,size=4k"},
                "mem_limit": q.memory,
                "memswap_limit": q.memory,  # no swap beyond the limit
                "nano_cpus": int(q.cpu * NANO),
                "pids_limit": q.pids,
                "network_mode": net,
                "ipc_mode": "private",
                "init": self.init,
                "dns": [],
            },
        }
        network_spec = {
            "name": net,
            "driver": "bridge",
            "internal": False,  # the gateway is the host end; table inet ecluse filters it
            "options": {
                "com.docker.network.bridge.enable_ip_masquerade": "false",
                "com.docker.network.bridge.enable_icc": "false",
            },
            "labels": self._labels(spec),
            "allowed_ports": sorted(set(spec.allowed_ports)),
        }
        return {"spawner": spawner, "network": network_spec}

    # --------------------------------------------------------------- launch

    async def launch(self, spec: SandboxSpec, *, one_shot: bool = False) -> dict[str, Any]:
        if os.geteuid() != 0:
            raise SandboxError("the docker sandbox backend must run as root")
        t0 = time.monotonic()
        await asyncio.to_thread(check_host_account, spec.user)
        await asyncio.to_thread(self.prepare_project_dirs, spec.project, spec.user)
        for ds in spec.project.datasets:
            if not Path(ds.path).exists():
                raise SandboxError(
                    f"dataset {ds.name} of project {spec.project.slug} is unavailable",
                    log_message=f"dataset {ds.name}: {ds.path} does not exist")
        for m in spec.extra_mounts:
            if not Path(m.source).exists():
                raise SandboxError(f"{m.target} is unavailable",
                                   log_message=f"extra mount source {m.source} does not exist")
        sandbox_id = "d" + secrets.token_hex(5)
        meta: dict[str, Any] = {
            "backend": "docker",
            "id": sandbox_id,
            "project": spec.project.slug,
            "user": spec.user.name,
            "uid": spec.user.uid,
            "name": spec.name,
            "one_shot": one_shot,
            "phase": "starting",
            "created": time.time(),
            "runtime_dir": str(self._rt),
            "docker_url": self.docker_url,
            "port": spec.port,
            "allowed_ports": sorted(set(spec.allowed_ports)),
            "network": f"{self.network_prefix}{sandbox_id}",
            "container": None,
        }
        try:
            await asyncio.to_thread(self._allocate, spec, meta)
            await asyncio.to_thread(self._create, spec, meta)
        except BaseException as e:
            self.log.error("sandbox %s for %s/%s failed to start: %s", sandbox_id,
                           spec.project.slug, spec.user.name, getattr(e, "log_message", e))
            with contextlib.suppress(Exception):
                await self.release(meta)
            if isinstance(e, (SandboxError, asyncio.CancelledError, KeyboardInterrupt)):
                raise
            raise SandboxError("the workspace could not be started",
                               log_message=f"{type(e).__name__}: {e}") from e
        meta["phase"] = "running"
        meta["start_seconds"] = round(time.monotonic() - t0, 4)
        await asyncio.to_thread(self._save_meta, meta)
        self.log.info("sandbox %s (container %s) started for %s in %s at %s (%.0f ms)",
                      sandbox_id, meta["container"][:12], spec.user.name, spec.project.slug,
                      meta["ip"], 1000 * meta["start_seconds"])
        return dict(meta)

    def _save_meta(self, meta: dict[str, Any]) -> None:
        d = self._dir(meta["id"])
        tmp = d / "meta.json.tmp"
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, d / "meta.json")

    def _allocate(self, spec: SandboxSpec, meta: dict[str, Any]) -> None:
        """A free /30 slot, registered, with its bridge network made (under the lock)."""
        import docker.types

        with _flock(self._rt):
            network.ensure_dummy(self.subnet)
            network.ensure_table(self.subnet)
            slot = free_slot(self._rt, self.subnet, self._dir)
            host_ip, ip = self.subnet.addresses(slot)
            bridge = network.veth_name(slot)
            meta.update(slot=slot, ip=ip, gateway=host_ip, veth=bridge)
            self._dir(meta["id"]).mkdir(mode=0o711)
            self._save_meta(meta)
            self._write_etc(spec, meta)
            cidr = f"{self.subnet.net.network_address + 4 * slot}/30"
            ipam = docker.types.IPAMConfig(pool_configs=[
                docker.types.IPAMPool(subnet=cidr, gateway=host_ip)])
            self.client.networks.create(
                meta["network"], driver="bridge", ipam=ipam, internal=False,
                check_duplicate=True, enable_ipv6=False,
                labels={**self._labels(spec), BACKEND_LABEL: "docker", LABEL: meta["id"]},
                options={
                    "com.docker.network.bridge.name": bridge,
                    "com.docker.network.bridge.enable_ip_masquerade": "false",
                    "com.docker.network.bridge.enable_icc": "false",
                    "com.docker.network.driver.mtu": "1500",
                })
            with contextlib.suppress(OSError):
                Path(f"/proc/sys/net/ipv6/conf/{bridge}/disable_ipv6").write_text("1")
            if spec.allowed_ports:
                elems = ", ".join(f'"{bridge}" . {int(p)}' for p in meta["allowed_ports"])
                network.sh("nft", "add", "element", "inet", network.TABLE, "allowed",
                           f"{{ {elems} }}")

    def _write_etc(self, spec: SandboxSpec, meta: dict[str, Any]) -> None:
        etc = self._dir(meta["id"]) / "etc"
        etc.mkdir(mode=0o755)
        u, p = spec.user, spec.project
        files = {
            "passwd": ("root:x:0:0:root:/root:/usr/sbin/nologin\n"
                       f"{u.name}:x:{u.uid}:{u.gid}:{u.name}:/home/{u.name}:/bin/bash\n"
                       "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"),
            "group": ("root:x:0:\n" + (f"{u.name}:x:{u.gid}:\n" if u.gid != p.gid else "")
                      + f"{p.slug}:x:{p.gid}:{u.name}\nnogroup:x:65534:\n"),
            "hosts": f"127.0.0.1\tlocalhost\n::1\tlocalhost\n{meta['ip']}\t{p.slug}\n",
            "nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files\n",
            "resolv.conf": "# no name service inside an Écluse workspace\n",
        }
        for name, text in files.items():
            (etc / name).write_text(text)
            (etc / name).chmod(0o644)

    def _create(self, spec: SandboxSpec, meta: dict[str, Any]) -> None:
        import docker.errors

        cs = self.container_spec(spec)["spawner"]
        host = dict(cs["extra_host_config"])
        host.pop("network_mode")
        host["dns"] = None
        volumes = self._pin_opened(dict(cs["volumes"]), meta)
        etc = self._dir(meta["id"]) / "etc"
        for name in sorted(os.listdir(etc)):
            volumes[str(etc / name)] = {"bind": f"/etc/{name}", "mode": "ro"}
        env = sandbox_env(spec, SYSTEM_PATH) | {"ECLUSE_SANDBOX_IP": meta["ip"]}
        env.update(spec.env)
        endpoint = self.client.api.create_networking_config({
            meta["network"]: self.client.api.create_endpoint_config(ipv4_address=meta["ip"])})
        host_config = self.client.api.create_host_config(
            binds=volumes, network_mode=meta["network"],
            **{k: v for k, v in host.items() if v is not None})
        ck = cs["extra_create_kwargs"]
        labels = {**ck["labels"], BACKEND_LABEL: "docker", LABEL: meta["id"],
                  "ecluse.one-shot": "1" if meta["one_shot"] else "0"}
        try:
            created = self.client.api.create_container(
                self.image, command=list(spec.command), user=ck["user"], environment=env,
                working_dir=spec.cwd, hostname=ck["hostname"], labels=labels,
                host_config=host_config, networking_config=endpoint,
                name=f"ecluse-{meta['id']}", stdin_open=False, tty=False,
                ports=[spec.port] if spec.port else None)
        except docker.errors.ImageNotFound as e:
            raise SandboxError("the workspace image is not available on this host",
                               log_message=f"image {self.image}: {e}") from e
        meta["container"] = created["Id"]
        self._save_meta(meta)
        self.client.api.start(created["Id"])

    def _pin_opened(self, volumes: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
        """Mount sources the launcher opened (``/proc/<launcher>/fd/<n>``: a caller's
        folder, opened without following a symlink) as paths the engine can bind.

        runc binds a source from inside the container's new mount namespace, where
        another process's fd names a mount of the host's namespace: the mount fails
        (EINVAL). Resolving the fd to its path would bind whatever that path names by
        then (the caller may have swapped a folder for a symbolic link). So the
        backend binds the opened folder itself, read-only, on a root-owned point
        under the sandbox's runtime folder (``mounts/<n>``), and the engine binds
        that; :meth:`_release_sync` unmounts it."""
        out: dict[str, Any] = {}
        for n, (source, bind) in enumerate(volumes.items()):
            if not _OPENED.fullmatch(source):
                out[source] = bind
                continue
            point = self._dir(meta["id"]) / "mounts" / str(n)
            point.mkdir(parents=True, mode=0o700)
            _bind_readonly(source, point)
            out[str(point)] = {**bind, "mode": "ro"}
        return out

    def _unpin(self, sid: str) -> bool:
        """Unmount what :meth:`_pin_opened` bound; False when one stays mounted."""
        import subprocess

        root = self._dir(sid) / "mounts"
        if not root.is_dir():
            return True
        ok = True
        for point in sorted(root.iterdir()):
            # os.path.ismount misses a bind of a folder of the same filesystem
            while str(point) in _mount_points():  # a point bound twice: each unmounted
                r = subprocess.run(["umount", str(point)], capture_output=True, text=True)
                if r.returncode != 0:
                    subprocess.run(["umount", "--lazy", str(point)], capture_output=True)
                if r.returncode != 0 and str(point) in _mount_points():
                    self.log.error("sandbox %s: %s is still mounted: %s", sid, point,
                                   r.stderr.strip())
                    ok = False
                    break
        return ok

    # ----------------------------------------------------------------- poll

    def _inspect(self, state: dict[str, Any]) -> dict[str, Any] | None:
        import docker.errors

        if not state.get("container"):
            return None
        try:
            return self.client.api.inspect_container(state["container"])
        except docker.errors.NotFound:
            return None

    def _status(self, state: dict[str, Any], info: dict[str, Any]) -> int | None:
        st = info["State"]
        if st.get("Running") or st.get("Status") in ("created", "restarting"):
            return None
        if st.get("OOMKilled"):
            state["oom_killed"] = True
            return 137
        return int(st.get("ExitCode", 1))

    async def poll(self, state: dict[str, Any]) -> int | None:
        if state.get("released"):
            return state.get("exit_code", 0)
        info = await asyncio.to_thread(self._inspect, state)
        if info is None:
            return state.get("exit_code", 0)  # removed by someone else
        status = self._status(state, info)
        if status is not None:
            state["exit_code"] = status
        return status

    async def wait(self, state: dict[str, Any], timeout: float | None = None) -> int | None:
        """The engine's own wait (no polling), up to ``timeout`` seconds."""
        import docker.errors
        import requests

        if not state.get("container") or state.get("released"):
            return await self.poll(state)

        def _wait() -> None:
            with contextlib.suppress(docker.errors.NotFound, requests.exceptions.ConnectionError,
                                     requests.exceptions.ReadTimeout):
                self.client.api.wait(state["container"],
                                     timeout=timeout if timeout is not None else None)

        await asyncio.to_thread(_wait)
        return await self.poll(state)

    # ----------------------------------------------------------------- stop

    async def terminate(self, state: dict[str, Any], grace: float | None = None) -> None:
        """SIGTERM to the command, ``grace`` seconds, then SIGKILL (the engine's stop)."""
        import docker.errors

        if grace is None:
            grace = self.settings.sandbox.stop_grace
        if not state.get("container"):
            return

        def _stop() -> None:
            info = self._inspect(state)
            if info is None or self._status(state, info) is not None:
                return
            with contextlib.suppress(docker.errors.NotFound):
                if grace > 0:
                    self.client.api.stop(state["container"], timeout=int(max(1, grace)))
                else:
                    self.client.api.kill(state["container"])
                    self.client.api.wait(state["container"], timeout=30)
            state["killed"] = True

        await asyncio.to_thread(_stop)

    async def release(self, state: dict[str, Any]) -> None:
        """Remove the container, its network, firewall elements and runtime files."""
        await asyncio.to_thread(self._release_sync, state)
        state["released"] = True
        self.log.info("sandbox %s removed (exit %s)", state["id"], state.get("exit_code"))

    def _release_sync(self, state: dict[str, Any]) -> None:
        import docker.errors

        info = self._inspect(state)
        if info is not None:
            status = self._status(state, info)
            if status is not None and "exit_code" not in state:
                state["exit_code"] = status
            if state.get("one_shot") and "logs" not in state:
                with contextlib.suppress(docker.errors.APIError):
                    state["logs"] = list(self._logs(state))
            with contextlib.suppress(docker.errors.NotFound):
                self.client.api.remove_container(state["container"], force=True, v=True)
        else:
            # a launch that failed before its container was known: find it by label
            for c in self.client.api.containers(all=True,
                                                filters={"label": f"{LABEL}={state['id']}"}):
                with contextlib.suppress(docker.errors.NotFound):
                    self.client.api.remove_container(c["Id"], force=True, v=True)
        if state.get("network"):
            with contextlib.suppress(docker.errors.NotFound):
                self.client.api.remove_network(state["network"])
        if state.get("veth") and state.get("allowed_ports"):
            network.remove_allowed(state["veth"])
        unpinned = self._unpin(state["id"])
        with _flock(self._rt):
            if unpinned:  # never a removal through a caller's folder still bound here
                shutil.rmtree(self._dir(state["id"]), ignore_errors=True)
            if not _registered(self._rt):
                network.delete_table()

    # ----------------------------------------------------------------- logs

    def _logs(self, state: dict[str, Any]) -> tuple[str, str]:
        cid = state["container"]
        if state.get("one_shot"):
            out = self.client.api.logs(cid, stdout=True, stderr=False)
            err = self.client.api.logs(cid, stdout=False, stderr=True)
        else:
            out, err = self.client.api.logs(cid, stdout=True, stderr=True), b""
        return (out[-self.max_log_bytes:].decode(errors="replace"),
                err[-self.max_log_bytes:].decode(errors="replace"))

    async def read_logs(self, state: dict[str, Any]) -> tuple[str, str]:
        import docker.errors

        if state.get("logs"):
            return tuple(state["logs"])  # type: ignore[return-value]
        if not state.get("container"):
            return "", ""
        try:
            return await asyncio.to_thread(self._logs, state)
        except docker.errors.NotFound:
            return "", ""

    # ------------------------------------------------------------ operations

    def list(self) -> list[dict[str, Any]]:
        """The engine's Écluse containers, as states (from the registry when there),
        with ``alive`` set. A restarted hub finds its sandboxes here by label."""
        out = []
        for c in self.client.api.containers(all=True,
                                            filters={"label": f"{BACKEND_LABEL}=docker"}):
            sid = c["Labels"].get(LABEL, "")
            try:
                meta = json.loads((self._dir(sid) / "meta.json").read_text())
            except (OSError, ValueError):
                meta = {"backend": "docker", "id": sid, "container": c["Id"],
                        "project": c["Labels"].get("ecluse.project"),
                        "user": c["Labels"].get("ecluse.user"),
                        "name": c["Labels"].get("ecluse.sandbox"),
                        "one_shot": c["Labels"].get("ecluse.one-shot") == "1",
                        "network": f"{self.network_prefix}{sid}", "phase": "unknown"}
            meta["alive"] = c["State"] in ("running", "created", "restarting")
            out.append(meta)
        return out

    def adopt(self, project: str, user: str, name: str = "workspace") -> dict[str, Any] | None:
        """The state of the running sandbox of ``user`` in ``project`` (after a hub
        restart without its saved state), or None."""
        for meta in self.list():
            if (meta.get("project"), meta.get("user"), meta.get("name") or "workspace") == (
                    project, user, name or "workspace") and meta["alive"]:
                return meta
        return None

    async def cleanup_orphans(self, *, min_age: float = 60.0) -> list[str]:
        """Remove stopped sandboxes, networks without their container and registry
        entries without a container. A sandbox younger than ``min_age`` is left."""
        removed = []
        now = time.time()
        known = set()
        for meta in await asyncio.to_thread(self.list):
            known.add(meta["id"])
            if meta.get("alive") or (meta.get("phase") == "starting"
                                     and now - meta.get("created", 0) < min_age):
                continue
            await self.release(meta)
            removed.append(meta["id"])
        await asyncio.to_thread(self._sweep, known, removed, now - min_age)
        return removed

    def _sweep(self, known: set[str], removed: list[str], before: float) -> None:
        import docker.errors

        for net in self.client.api.networks(filters={"label": f"{BACKEND_LABEL}=docker"}):
            sid = (net.get("Labels") or {}).get(LABEL, "")
            if sid not in known:
                meta = self._registered_meta(sid)
                if meta and meta.get("created", 0) > before:
                    continue
                with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                    self.client.api.remove_network(net["Id"])
                removed.append(sid)
        for sid in _registered(self._rt):
            meta = self._registered_meta(sid)
            if (meta and meta.get("backend") == "docker" and sid not in known
                    and meta.get("docker_url") == self.docker_url
                    and meta.get("created", 0) <= before):
                meta.setdefault("container", None)
                self._release_sync(meta)
                if sid not in removed:
                    removed.append(sid)

    def _registered_meta(self, sid: str) -> dict[str, Any] | None:
        try:
            return json.loads((self._dir(sid) / "meta.json").read_text())
        except (OSError, ValueError):
            return None


#: a mount source the launcher opened for its caller (ecluse.sandbox.launcher.Policy)
_OPENED = re.compile(r"/proc/[0-9]+/fd/[0-9]+")
_MS_RDONLY, _MS_REMOUNT, _MS_BIND = 0x1, 0x20, 0x1000


def _bind_readonly(source: str, target: Path) -> None:
    """``mount --bind`` of ``source`` (followed as the kernel does a ``/proc/<pid>/fd``
    link: to the opened folder itself, not a path) on ``target``, then read-only."""
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                           ctypes.c_ulong, ctypes.c_void_p]
    dst = os.fsencode(target)
    if libc.mount(os.fsencode(source), dst, None, _MS_BIND, None) != 0:
        err = ctypes.get_errno()
        raise SandboxError("the workspace could not be started",
                           log_message=f"bind {source} on {target}: {os.strerror(err)}")
    if libc.mount(None, dst, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY, None) != 0:
        err = ctypes.get_errno()
        libc.umount2(dst, 2)  # MNT_DETACH
        raise SandboxError("the workspace could not be started",
                           log_message=f"read-only {target}: {os.strerror(err)}")


def _mount_points() -> set[str]:
    """Where something is mounted in this mount namespace (``/proc/self/mountinfo``)."""
    points = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            raw = line.split(" ", 5)[4]
            points.add(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), raw))
    return points
