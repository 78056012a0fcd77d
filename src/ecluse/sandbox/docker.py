"""The ``docker`` backend: the sandbox specification as a DockerSpawner container spec.

No Docker client is imported: :meth:`DockerSandbox.container_spec` is a pure
function of the :class:`~ecluse.sandbox.SandboxSpec`, producing

* ``spawner`` — values for DockerSpawner traits (``image``, ``cmd``,
  ``environment``, ``volumes``, ``network_name``, ``mem_limit``,
  ``cpu_limit``, ``extra_create_kwargs``, ``extra_host_config``, ...);
* ``network`` — the ``docker network create`` arguments of the sandbox's own
  **internal** network (no route out of the host, no masquerading), to
  which the hub and airlock containers are connected (``connect``).

Controls, matching the local backend: the user's uid:gid with the project
group added, every capability dropped, ``no-new-privileges``, the default
seccomp profile, a read-only root filesystem with a private ``/tmp``,
memory (+swap), CPU and PID limits from the project quota, datasets
read-only, ``/project`` and ``/home/<user>`` read-write.

Starting and stopping containers is DockerSpawner's job; the lifecycle
methods of this class raise :class:`NotImplementedError`.
"""

from __future__ import annotations

from typing import Any

from traitlets import Dict, List, Unicode, default

from .base import Sandbox, SandboxSpec, planned_mounts, sandbox_env

NANO = 1_000_000_000


class DockerSandbox(Sandbox):
    """Translate a sandbox specification into DockerSpawner configuration."""

    image = Unicode(help="Workspace image (default: SandboxSettings.image).").tag(config=True)
    network_prefix = Unicode(
        "ecluse-", help="Prefix of the per-sandbox internal network names.").tag(config=True)
    service_containers = List(
        Unicode(), default_value=["ecluse-hub", "ecluse-airlock"],
        help="Containers connected to every sandbox network (hub API, airlock).",
    ).tag(config=True)
    tmp_size = Unicode("1g", help="Size of the private /tmp (counts against memory).").tag(
        config=True)
    labels = Dict(help="Extra labels on containers and networks.").tag(config=True)

    @default("image")
    def _image_default(self) -> str:
        return self.settings.sandbox.image if self.settings else "ecluse/workspace:0.1.0"

    def network_name(self, spec: SandboxSpec) -> str:
        return f"{self.network_prefix}{spec.project.slug}-{spec.user.name}"

    def _labels(self, spec: SandboxSpec) -> dict[str, str]:
        return {"ecluse.project": spec.project.slug, "ecluse.user": spec.user.name,
                "ecluse.sandbox": spec.name or "workspace", **self.labels}

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
                "security_opt": ["no-new-privileges:true"],
                "privileged": False,
                "read_only": True,
                "tmpfs": {"/tmp": f"rw,nosuid,nodev,size={self.tmp_size}"},
                "mem_limit": q.memory,
                "memswap_limit": q.memory,  # no swap beyond the limit
                "nano_cpus": int(q.cpu * NANO),
                "pids_limit": q.pids,
                "network_mode": net,
                "ipc_mode": "private",
                "init": True,
                "dns": [],
            },
        }
        network = {
            "name": net,
            "driver": "bridge",
            "internal": True,  # no route to the outside world
            "options": {
                "com.docker.network.bridge.enable_ip_masquerade": "false",
            },
            "labels": self._labels(spec),
            "connect": list(self.service_containers),
            "allowed_ports": sorted(set(spec.allowed_ports)),
        }
        return {"spawner": spawner, "network": network}

    def host_address(self) -> str:
        # sandboxes reach the hub by its container name on their internal network
        return self.service_containers[0] if self.service_containers else ""

    async def launch(self, spec: SandboxSpec, *, one_shot: bool = False) -> dict[str, Any]:
        raise NotImplementedError(
            "the docker backend only describes containers: configure DockerSpawner with "
            "DockerSandbox.container_spec(spec)")
