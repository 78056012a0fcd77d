"""dask-gateway on ``ecluse.sandbox``: one sandbox per cluster, in the cluster's project.

* :class:`SandboxBackend` — a dask-gateway ``DBBackendBase`` backend. A
  cluster is **one** sandbox of its project (``SandboxSpec`` with the
  project's mounts, quota and network rules) running the cluster supervisor
  (:mod:`ecluse.dask.supervisor`), which runs the scheduler and, on the
  gateway's request, each worker as processes. Sandboxes cannot reach each
  other, so a cluster's scheduler and workers share one sandbox; they reach
  only the gateway API listener on the sandbox host address (the scheduler's
  heartbeat and API calls, ``api_url``); the gateway reaches into the sandbox
  (scheduler, dashboard, supervisor control port). The project's cgroup bounds the whole
  cluster: its memory, CPU and process limits are the project quota.
* :func:`project_options` — the cluster option ``project``, checked against
  the user's hub groups and the project the token acts for (a clear error
  otherwise) and turned into per-project limits (:func:`cluster_limits`);
  without it, the token's project. At start the backend asks the directory
  again (fail closed, :class:`ecluse.directory.MembershipResolver`) for the
  user's uid/gid and membership.
* :class:`ProjectTokenAuthenticator` — dask-gateway's JupyterHub
  authenticator that also keeps the projects the token acts for
  (:func:`ecluse.hub.roles.credential_projects`): a workspace's token, its own
  project; a request naming another project is refused with 403, audited.
* :func:`gateway_config` — the traitlets ``Config`` of the whole gateway
  from Écluse settings (the JupyterHub service that runs it, with its
  authenticating front as the service's public URL, and what workspaces need
  to use it: :mod:`ecluse.dask.hub`).

Listeners (docs/dask.md): the gateway proxy's HTTP listener (API and
dashboards, which dask-gateway does not authenticate) on ``127.0.0.1:
<dask.proxy_http_port>`` only; its scheduler listener (TLS, SNI-routed) on
``<sandbox host address>:<dask.proxy_port>``; the front's API listener on
``<sandbox host address>:<dask.api_port>`` (the API only, dashboards refused);
the front's public listener on ``127.0.0.1:<dask.front_port>`` (the hub's
route: dashboards for their owner).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from aiohttp import web as aioweb
from dask_gateway_server.auth import JupyterHubAuthenticator, User, unauthorized
from dask_gateway_server.backends.base import ClusterConfig, PublicException
from dask_gateway_server.backends.db_base import DBBackendBase, JobStatus
from dask_gateway_server.options import Options, String
from traitlets import Any as AnyTrait
from traitlets import Bool, Float, Integer, Unicode, default
from traitlets.config import Config

from .. import sandbox as sandboxes
from ..auditevents import AuditEvent
from ..config import load_settings
from ..directory import DirectoryError, DirectoryUnavailable, MembershipResolver
from ..directory import NotAMember as NotInDirectory
from ..hub.roles import credential_projects
from ..hubservice.instances import stop_my_previous
from ..sandbox import SandboxSpec, UserIdentity, sandbox_for
from ..sandbox.remote import audit_for
from ..settings.dask import DaskSettings
from .front import ApiFront, Front, backend_owner, serve, serve_api
from .hub import SERVICE_NAME
from .kube import cluster_pod_options, hard_limits
from .sizing import sizing

TLS_DIR = "/tmp/dask-gateway"
SUPERVISOR_SOURCE = (Path(__file__).parent / "supervisor.py").read_text()


def python_env(settings: Any) -> Path:
    """The Python environment cluster sandboxes run (this host's, or the workspace
    image's: :func:`ecluse.sandbox.sandbox_python_env`)."""
    return sandboxes.sandbox_python_env(settings)


# ------------------------------------------------------------------ options


def cluster_limits(project: Any) -> dict[str, Any]:
    """Per-project ``ClusterConfig`` values from the quota (the cgroup is the hard limit).

    Workers and memory are :func:`~ecluse.dask.sizing.sizing`'s; ``cores`` count
    threads: the CPU quota (CFS) of the sandbox bounds their real CPU time.
    """
    s = sizing(project)
    return {
        "worker_cores": s.threads_per_worker,
        "worker_threads": s.threads_per_worker,
        "worker_memory": s.worker_memory,
        "scheduler_cores": 1,
        "scheduler_memory": s.scheduler_memory,
        "cluster_max_workers": s.workers,
        "cluster_max_cores": 1 + s.workers * s.threads_per_worker,
        "cluster_max_memory": s.scheduler_memory + s.workers * s.worker_memory,
    }


class NotAMember(PublicException, ValueError):
    """The user asked for a cluster of a project they do not belong to (shown to them)."""


class ProjectUser(User):
    """A gateway user with the projects their credential acts for (``None``: unrestricted,
    a test double or a stock authenticator)."""

    def __init__(self, name: str, groups: Any = (), admin: bool = False,
                 projects: frozenset[str] | None = None) -> None:
        super().__init__(name, groups=groups, admin=admin)
        self.projects = projects


class ProjectTokenAuthenticator(JupyterHubAuthenticator):
    """JupyterHub tokens, with the project the token acts for (its project scope)."""

    async def authenticate(self, request: Any) -> ProjectUser:
        token = self.get_token(request)
        if token is None:
            raise unauthorized("jupyterhub")
        resp = await self.session.get(f"{self.jupyterhub_api_url}/user",
                                      headers={"Authorization": f"token {token}"},
                                      ssl=self.ssl_context)
        if resp.status >= 400:
            if resp.status in (401, 403, 404):
                raise unauthorized("jupyterhub")
            raise aioweb.HTTPBadGateway(reason="Upstream failure verifying the hub token")
        data = await resp.json()
        if data.get("kind") != "user":
            raise unauthorized("jupyterhub")
        scopes = set(data.get("scopes") or [])
        if not {"access:services",
                f"access:services!service={self.jupyterhub_service_name}"} & scopes:
            raise unauthorized("jupyterhub")
        return ProjectUser(data["name"], groups=data.get("groups") or [],
                           admin=data.get("admin", False),
                           projects=credential_projects(scopes, token=True))


def _acts_for(user: Any) -> frozenset[str] | None:
    return getattr(user, "projects", None)


def project_options(settings: Any) -> Options:
    """The cluster options: ``project`` (default: the one the token acts for), validated
    against hub groups."""

    def handler(options: Any, user: Any) -> dict[str, Any]:
        slug = str(options.project or "").strip() or _default_project(user)
        if not slug:
            raise ValueError(
                "Choose a project: Gateway().new_cluster(project='<project>') "
                "(your projects: " + ", ".join(sorted(_user_projects(settings, user))) + ")")
        if slug not in settings.projects:
            raise ValueError(f"There is no project named {slug!r}.")
        if slug not in _user_projects(settings, user):
            raise NotAMember(f"You are not a member of project {slug!r}: no Dask cluster "
                             "can be started for it.")
        limits = cluster_limits(settings.projects[slug])
        limits["environment"] = {"ECLUSE_PROJECT": slug}
        return limits

    return Options(String("project", default="", label="Project"), handler=handler)


#: per-cluster placement of a project on production backends
PLACEMENT = {
    "kubernetes": lambda slug: {"namespace": f"ecluse-{slug}"},  # KubeClusterConfig
    "slurm": lambda slug: {"account": f"ecluse-{slug}", "qos": f"ecluse-{slug}"},
}


def production_options(settings: Any, backend: str) -> Options:
    """:func:`project_options` plus the project's namespace (Kubernetes) or Slurm
    account and QOS, named ``ecluse-<slug>`` (see config/dask-gateway-*.yaml)."""
    base = project_options(settings)
    place = PLACEMENT[backend]

    def handler(options: Any, user: Any) -> dict[str, Any]:
        out = base.handler(options, user)  # the project checks, then its limits
        slug = str(options.project).strip() or _default_project(user)
        out.update(place(slug))
        if backend == "kubernetes":
            out.update(cluster_pod_options(settings.projects[slug]))
            out.update(hard_limits(out))
        return out

    return Options(*base.fields, handler=handler)


def configure_production(c: Any, backend: str, config_file: str | None = None) -> None:
    """For a dask-gateway config file / Helm ``extraConfig``: project option, membership
    and per-project limits and placement on the stock Kubernetes or Slurm backend."""
    settings = load_settings(config_file)
    c.Backend.cluster_options = production_options(settings, backend)
    c.DaskGateway.authenticator_class = "ecluse.dask.gateway.ProjectTokenAuthenticator"
    c.JupyterHubAuthenticator.jupyterhub_service_name = SERVICE_NAME


def _group_projects(settings: Any, user: Any) -> set[str]:
    """The projects among the user's hub groups."""
    return {g for g in (getattr(user, "groups", None) or []) if g in settings.projects}


def _user_projects(settings: Any, user: Any) -> set[str]:
    """Projects the user may start clusters for: hub groups, narrowed to the token's."""
    groups = _group_projects(settings, user)
    bound = _acts_for(user)
    return groups if bound is None else groups & bound


def _default_project(user: Any) -> str:
    bound = _acts_for(user)
    return next(iter(bound)) if bound and len(bound) == 1 else ""


# ------------------------------------------------------------------ backend


class SandboxClusterConfig(ClusterConfig):
    """Cluster configuration of the sandbox backend (``dask scheduler`` / ``dask worker``)."""

    @default("scheduler_cmd")
    def _default_scheduler_cmd(self) -> list[str]:
        return [str(Path(sys.prefix) / "bin" / "dask"), "scheduler"]

    @default("worker_cmd")
    def _default_worker_cmd(self) -> list[str]:
        return [str(Path(sys.prefix) / "bin" / "dask"), "worker"]


class SandboxBackend(DBBackendBase):
    """Dask clusters in project sandboxes (``ecluse.sandbox``: local, docker, kubernetes).

    Set ``settings`` (loaded :class:`ecluse.config.Settings`) or ``config_file``.
    """

    settings = AnyTrait(help="Écluse settings (default: loaded from config_file).")
    config_file = Unicode(
        "", help="Écluse deployment config (default: $ECLUSE_CONFIG or config/ecluse.yaml)."
    ).tag(config=True)
    control_port = Integer(8789, help="Supervisor control port inside sandboxes.").tag(
        config=True)
    stop_grace = Float(3.0, help="Seconds between SIGTERM and SIGKILL of a cluster.").tag(
        config=True)
    verify_membership_in_directory = Bool(
        True, help="Ask LDAP again at each cluster start (fail closed).").tag(config=True)
    sandbox_backend = AnyTrait(help="The ecluse.sandbox backend (default: from settings).")
    membership_cache_seconds = Float(
        60, help="How long a directory answer about a cluster owner's membership is reused "
        "by the periodic check (cluster_status_period); at most 60.").tag(config=True)

    @default("cluster_config_class")
    def _default_cluster_config_class(self) -> type:
        return SandboxClusterConfig

    @default("settings")
    def _default_settings(self) -> Any:
        return load_settings(self.config_file or None)

    @default("sandbox_backend")
    def _default_sandbox_backend(self) -> Any:
        return sandbox_for(self.settings, "dask")

    @default("cluster_options")
    def _default_cluster_options(self) -> Options:
        return project_options(self.settings)

    # ----------------------------------------------------------- identity

    async def resolve_identity(self, username: str, project: Any) -> tuple[Any, Any]:
        """``(UserIdentity, project with its gid)`` from the directory; raises if not a member."""
        ldap = self.settings.ldap
        loop = asyncio.get_running_loop()
        try:
            m = await asyncio.wait_for(
                loop.run_in_executor(None, MembershipResolver(self.settings).require,
                                     username, project.slug),
                ldap.connect_timeout * 2 + ldap.receive_timeout * 4)
        except NotInDirectory as e:
            raise NotAMember(str(e)) from None
        return (UserIdentity(username, m.user.uid_number, m.user.gid_number),
                project.model_copy(update={"gid": m.project_gid}))

    # ----------------------------------------------------------- commands

    def get_tls_paths(self, cluster: Any) -> tuple[str, str]:
        return f"{TLS_DIR}/dask.crt", f"{TLS_DIR}/dask.pem"

    def get_env(self, cluster: Any) -> dict[str, str]:
        env = super().get_env(cluster)
        env["DASK_TEMPORARY_DIRECTORY"] = "/tmp/dask-gateway/spill"
        return env

    def get_worker_command(self, cluster: Any, worker_name: str,
                           scheduler_address: str | None = None) -> list[str]:
        # worker dashboards are not proxied by the gateway: skip importing bokeh
        cmd = super().get_worker_command(cluster, worker_name, scheduler_address)
        i = cmd.index("--dashboard-address")
        return [*cmd[:i], "--no-dashboard", *cmd[i + 2:]]

    def _allowed_ports(self) -> list[int]:
        """The ports a cluster sandbox may reach on the host address: the API listener
        of ``api_url`` (heartbeats) only — not the scheduler proxy, not a dashboard."""
        from urllib.parse import urlsplit

        port = urlsplit(self.api_url).port
        return [port] if port else []

    async def _control(self, cluster: Any, msg: dict[str, Any]) -> dict[str, Any]:
        state = cluster.state["sandbox"]
        msg = {"token": cluster.state["control_token"], **msg}
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(state["ip"], self.control_port), 10)
        try:
            writer.write((json.dumps(msg) + "\n").encode())
            await writer.drain()
            reply = json.loads(await asyncio.wait_for(reader.readline(), 30))
        finally:
            writer.close()
        if "error" in reply:
            raise RuntimeError(f"cluster supervisor: {reply['error']}")
        return reply

    # ----------------------------------------------------------- lifecycle

    _audit: Any = None

    def _record_denied(self, user: Any, slug: str, reason: str) -> None:
        if self._audit is None:
            self._audit = audit_for(self.settings, "dask")
        self._audit.record(AuditEvent.DASK_DENIED, actor=user.name, project=slug or None,
                           outcome="denied", reason=reason,
                           token_projects=sorted(_acts_for(user) or []))

    async def start_cluster(self, user: Any, cluster_options: dict[str, Any]) -> str:
        # validated here too (process_cluster_options runs the handler): a cluster is
        # never recorded for a project the user's hub groups do not include
        slug = str((cluster_options or {}).get("project") or "") or _default_project(user)
        bound = _acts_for(user)
        if slug in self.settings.projects and slug not in _group_projects(self.settings, user):
            self._record_denied(user, slug, "not-a-member")
            raise NotAMember(f"You are not a member of project {slug!r}: no Dask cluster "
                             "can be started for it.")
        if bound is not None and slug in self.settings.projects and slug not in bound:
            # a member, but with a token of another project (or of none): 403, audited
            self._record_denied(user, slug, "token-project")
            acts = ("project " + ", ".join(sorted(bound))) if bound else "no project"
            raise aioweb.HTTPForbidden(reason=(
                f"This token acts for {acts}: no Dask cluster can be started for project "
                f"{slug!r} with it."))
        if slug:  # recorded with the cluster: do_start_cluster reads it
            cluster_options = {**(cluster_options or {}), "project": slug}
        return await super().start_cluster(user, cluster_options)

    async def do_start_cluster(self, cluster: Any):
        slug = cluster.options.get("project")
        project = self.settings.projects[slug]
        user, project = await self.resolve_identity(cluster.username, project)
        token = secrets.token_urlsafe(32)
        env = self.get_scheduler_env(cluster)
        env.update({
            "ECLUSE_DASK_CONTROL_TOKEN": token,
            "ECLUSE_DASK_TLS_CERT": cluster.tls_cert.decode(),
            "ECLUSE_DASK_TLS_KEY": cluster.tls_key.decode(),
            "ECLUSE_DASK_CLUSTER": cluster.name,
        })
        python = str(python_env(self.settings) / "bin" / "python")
        spec = SandboxSpec(
            project=project, user=user,
            command=[python, "-c", SUPERVISOR_SOURCE, str(self.control_port), "--",
                     *self.get_scheduler_command(cluster)],
            env=env, port=self.control_port, allowed_ports=self._allowed_ports(),
            name=f"dask-{cluster.name}"[:60],
        )
        state = await self.sandbox_backend.start(spec)
        self.log.info("Cluster %s of %s/%s in sandbox %s", cluster.name, cluster.username,
                      slug, state.get("id"))
        yield {"sandbox": state, "control_token": token, "project": slug}

    async def do_stop_cluster(self, cluster: Any) -> None:
        state = cluster.state.get("sandbox")
        if state:
            if cluster.status != JobStatus.RUNNING or self.log.isEnabledFor(10):
                await self._log_tail(cluster, state)
            await self.sandbox_backend.stop(state, grace=self.stop_grace)

    async def _log_tail(self, cluster: Any, state: dict[str, Any]) -> None:
        try:
            out, err = await self.sandbox_backend.read_logs(state)
        except Exception:  # noqa: BLE001 - logs are best effort
            return
        self.log.info("Cluster %s output (tail):\n%s", cluster.name, (out + err)[-3000:])

    async def do_check_clusters(self, clusters: list[Any]) -> list[bool]:
        """Alive, and its owner still a member of its project: a cluster whose owner
        *positively* left the project is reported failed (the gateway stops it),
        audited; when the directory cannot be reached, nothing is stopped."""
        out = []
        for c in clusters:
            state = c.state.get("sandbox")
            alive = bool(state) and await self.sandbox_backend.poll(state) is None
            if alive and self.verify_membership_in_directory:
                alive = await self._still_member(c)
            out.append(alive)
        return out

    _resolver: Any = None

    async def _still_member(self, cluster: Any) -> bool:
        slug = (cluster.state or {}).get("project") or (cluster.options or {}).get("project")
        if not slug:
            return True
        if self._resolver is None:
            self._resolver = MembershipResolver(self.settings,
                                                cache_seconds=self.membership_cache_seconds)
        try:
            await asyncio.get_running_loop().run_in_executor(
                None, self._resolver.require, cluster.username, slug)
        except DirectoryUnavailable:
            return True  # nothing known: nothing stopped
        except DirectoryError as e:
            self.log.warning("Cluster %s: %s left project %s (%s): stopping it",
                             cluster.name, cluster.username, slug, e.reason)
            if self._audit is None:
                self._audit = audit_for(self.settings, "dask")
            self._audit.record(AuditEvent.DASK_REVOKED, actor=cluster.username, project=slug,
                               outcome="success", cluster=cluster.name, reason=e.reason)
            return False
        return True

    async def do_start_worker(self, worker: Any):
        cluster = worker.cluster
        await self._control(cluster, {
            "op": "start", "name": worker.name,
            "cmd": self.get_worker_command(cluster, worker.name),
            "env": self.get_worker_env(cluster),
        })
        yield {"started": True}

    async def do_stop_worker(self, worker: Any) -> None:
        try:
            await self._control(worker.cluster, {"op": "stop", "name": worker.name})
        except (OSError, RuntimeError, TimeoutError, KeyError):
            pass  # the cluster (and so the worker) is already gone

    async def do_check_workers(self, workers: list[Any]) -> list[bool]:
        by_cluster: dict[str, list[Any]] = {}
        for w in workers:
            by_cluster.setdefault(w.cluster.name, []).append(w)
        alive: dict[tuple[str, str], bool] = {}
        for ws in by_cluster.values():
            try:
                reply = await self._control(ws[0].cluster,
                                            {"op": "status", "names": [w.name for w in ws]})
                for w in ws:
                    alive[(w.cluster.name, w.name)] = bool(reply["alive"].get(w.name))
            except (OSError, RuntimeError, TimeoutError, KeyError, ValueError):
                for w in ws:
                    alive[(w.cluster.name, w.name)] = False
        return [alive[(w.cluster.name, w.name)] for w in workers]


# ------------------------------------------------------------------ wiring


def host_address(settings: Any, *, ensure: bool = True) -> str:
    """Where the gateway proxy listens: the sandbox host address (local and docker
    backends, :func:`ecluse.sandbox.sandbox_host_address`), else every address.

    ``ensure``: create the host interface if missing (the gateway binds to it).
    """
    return sandboxes.sandbox_host_address(settings, ensure=ensure, caller="dask") or "0.0.0.0"


def gateway_config(settings: Any, *, address: str | None = None, prefix: str = "",
                   authenticator: str = "ecluse.dask.gateway.ProjectTokenAuthenticator",
                   dask: DaskSettings | None = None) -> Config:
    """The dask-gateway-server ``Config`` of this deployment.

    The proxy's HTTP listener (API and unauthenticated dashboards) is on loopback;
    its scheduler (TLS) listener on the sandbox host address; clusters call the API
    (``api_url``) through the front's API listener (:func:`serve_api_listener`).
    """
    ds = dask or settings.dask
    addr = address or host_address(settings)
    c = Config()
    c.DaskGateway.address = "127.0.0.1:0"  # private API: the proxy forwards to it
    c.DaskGateway.backend_class = "ecluse.dask.gateway.SandboxBackend"
    c.DaskGateway.authenticator_class = authenticator
    c.Proxy.address = f"127.0.0.1:{ds.proxy_http_port}"
    c.Proxy.tcp_address = f"{addr}:{ds.proxy_port}"
    c.Proxy.prefix = prefix
    c.SandboxBackend.api_url = f"http://{_url_host(addr)}:{ds.api_port}{prefix}/api"
    c.SandboxBackend.config_file = str(settings.config_file or "")
    c.SandboxBackend.control_port = ds.control_port
    c.SandboxBackend.cluster_start_timeout = ds.cluster_start_timeout
    c.SandboxBackend.worker_start_timeout = ds.worker_start_timeout
    c.SandboxBackend.stop_clusters_on_shutdown = True
    c.SandboxClusterConfig.idle_timeout = ds.idle_timeout
    env = python_env(settings)
    c.SandboxClusterConfig.scheduler_cmd = [str(env / "bin" / "dask"), "scheduler"]
    c.SandboxClusterConfig.worker_cmd = [str(env / "bin" / "dask"), "worker"]
    c.JupyterHubAuthenticator.jupyterhub_service_name = SERVICE_NAME
    return c


def _url_host(addr: str) -> str:
    """A host for URLs given to sandboxes: the wildcard is not an address to connect to."""
    return "127.0.0.1" if addr in ("0.0.0.0", "") else addr


def main(argv: list[str] | None = None) -> int:
    """``python -m ecluse.dask.gateway --config ecluse.yaml [--prefix /services/dask-gateway]
    [--front 127.0.0.1:8785]``: the gateway, its API listener on the sandbox host address,
    and its authenticating front when ``--front``."""
    import argparse

    from dask_gateway_server.app import DaskGateway


    p = argparse.ArgumentParser(prog="ecluse-dask-gateway")
    p.add_argument("--config", default=None)
    p.add_argument("--prefix", default="")
    p.add_argument("--front", default="",
                   help="host:port of the authenticating front (the hub service's url)")
    args = p.parse_args(argv)
    settings = load_settings(args.config, state_dir=os.environ.get("ECLUSE_STATE_DIR") or None)

    # a gateway that was killed leaves its proxy holding the ports: stop it first
    stop_my_previous(_audit_log(settings, logging.getLogger(__name__)))
    app = DaskGateway(config=gateway_config(settings, prefix=args.prefix))
    app.initialize([])
    app.backend.settings = settings
    from aiohttp import web
    from dask_gateway_server.utils import run_main

    try:
        run_main(_serve(app, settings, args.front or None, args.prefix))
    except (KeyboardInterrupt, web.GracefulExit):
        pass
    return 0


def _audit_log(settings: Any, logger: Any) -> Any:
    try:
        return audit_for(settings, "dask")  # through the launcher when not root
    except Exception:  # noqa: BLE001 - refusals still refuse; the log says why none is kept
        logger.exception("Audit log unavailable: refused dashboard requests are only logged")
        return None


def serve_api_listener(app: Any, settings: Any, *, dask: DaskSettings | None = None,
                       audit: Any = None) -> Any:
    """The front's API listener on ``<sandbox host address>:<dask.api_port>``, forwarding
    ``<prefix>/api/…`` to the proxy's loopback HTTP listener and refusing dashboards.
    ``app``: a set-up ``DaskGateway``. Returns the tornado server (``.stop()``)."""
    ds = dask or settings.dask
    proxy = app.backend.proxy
    front = ApiFront(upstream=f"http://{proxy.address}", prefix=proxy.prefix, audit=audit,
                     logger=app.log.getChild("api"))
    return serve_api(front, f"{host_address(settings)}:{ds.api_port}")


async def _serve(app: Any, settings: Any, front_address: str | None, prefix: str) -> None:
    """The gateway, its API listener and (``front_address``) its public front on one event
    loop (the front reads the backend's clusters)."""
    try:
        await app.setup()
    except Exception:
        app.log.critical("Failed to start gateway, shutting down", exc_info=True)
        sys.exit(1)
    audit = _audit_log(settings, app.log)
    servers = [serve_api_listener(app, settings, audit=audit)]
    if front_address:
        front = Front(upstream=f"http://{app.backend.proxy.address}",
                      owner_of=backend_owner(app.backend),
                      prefix=prefix or f"/services/{SERVICE_NAME}", audit=audit,
                      logger=app.log.getChild("front"))
        servers.append(serve(front, front_address))
    try:
        while True:
            await asyncio.sleep(3600)
    finally:
        for server in servers:
            server.stop()
        try:
            await app.cleanup()
        except Exception:  # noqa: BLE001
            app.log.error("Error while shutting down:", exc_info=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
