"""EcluseSpawner: one isolated workspace per (user, project), on ``ecluse.sandbox``.

Entry point ``jupyterhub.spawners: ecluse``. Each project workspace is a
named server whose name is the project slug (``/user/alice/cardio-los/``).

Who may start what is checked twice, on the hub side (``user_options`` and
server names come from the user and are never trusted):

1. the project must exist in ``projects.yaml`` and be among the user's hub
   groups (kept in step with LDAP by the authenticator's refresh);
2. at start, the directory is asked again (fail closed: if LDAP cannot
   confirm membership, the workspace does not start).

The sandbox runs ``jupyterhub-singleuser`` as the user's LDAP uidNumber /
gidNumber with the project's group as supplementary group, with the
project's quota, and reaches only the hub API (and the airlock).
"""

from __future__ import annotations

import asyncio
import html
import sys
from pathlib import Path
from typing import Any

from jupyterhub.spawner import Spawner, SpawnException
from traitlets import Any as AnyTrait
from traitlets import Dict, Integer, List, Unicode, default

from ..audit import AuditLog
from ..auditevents import AuditEvent
from ..config import Project, Settings, load_settings
from ..dask.sizing import DaskSizing, dask_command_prefix, sizing
from ..directory import (
    DirectoryError,
    DirectoryUnavailable,
    MembershipResolver,
    NoProjectGid,
    NotAMember,
)
from ..sandbox import (
    IMAGE_PYTHON_ENV,
    Sandbox,
    SandboxError,
    SandboxSpec,
    UserIdentity,
    sandbox_for,
)
from ..sandbox.remote import audit_for
from . import workspace
from .requester import current_requester

WORKSPACE_PORT = 8888
#: how the spawn form names each workspace language
LOCALE_NAMES = {"en": "English", "fr_FR": "Français"}
_OWNER = object()  # default actor of the spawner's audit events: the server's owner


def _fail(message: str, reason: str, log_message: str | None = None) -> SpawnException:
    return SpawnException(message, reason=reason, log_message=log_message or message)


class EcluseSpawner(Spawner):
    """Start a project workspace in a sandbox (local bubblewrap, Docker or Kubernetes)."""

    config_file = Unicode(
        help="Écluse deployment config (default: $ECLUSE_CONFIG or config/ecluse.yaml)."
    ).tag(config=True)
    state_dir = Unicode(help="Override of the state directory in the config.").tag(config=True)
    settings = AnyTrait(help="Loaded Écluse settings (set directly in tests).")
    workspace_port = Integer(
        WORKSPACE_PORT, help="Port the workspace server listens on inside its sandbox."
    ).tag(config=True)
    workspace_cmd = List(
        Unicode(),
        help="""Command of the workspace server inside the sandbox (default:
        python -s ecluse-singleuser, without the user site: the image's for the
        docker and kubernetes backends, else
        that of the Python environment mounted in workspaces:
        jupyterhub-singleuser without the optional imports a workspace never
        needs, see ecluse_workspace.singleuser).""",
    ).tag(config=True)
    extra_allowed_ports = List(
        Integer(),
        help="More TCP ports on the host address that workspaces may reach (e.g. airlock).",
    ).tag(config=True)
    verify_membership_in_directory = Unicode(
        "always",
        help="""Ask LDAP again at every start ("always", fail closed when LDAP is
        down) or trust the refreshed hub groups ("never").""",
    ).tag(config=True)

    sandbox_state = Dict(help="State of the running sandbox (saved with get_state).")
    project_slug = Unicode("")

    # ---------------------------------------------------------------- plumbing

    @default("settings")
    def _default_settings(self) -> Settings:
        return load_settings(self.config_file or None, state_dir=self.state_dir or None)

    @default("workspace_cmd")
    def _default_cmd(self) -> list[str]:
        # ``python -s``: the server never reads the user site (~/.local), where the
        # researcher's own ``pip install --user`` packages are and where a module named
        # like the guard's, a .pth file or usercustomize would run in the server;
        # kernels and terminals, started without -s, do read it (workspace_env)
        bindir = (IMAGE_PYTHON_ENV / "bin" if not self.backend.host_python  # images/workspace
                  else Path(sys.executable).parent)
        return [str(bindir / "python"), "-s", str(bindir / "ecluse-singleuser")]

    @property
    def backend(self) -> Sandbox:
        if getattr(self, "_backend", None) is None:
            self._backend = sandbox_for(self.settings, "hub")
        return self._backend

    _audit_log: AuditLog | None = None

    def _audit(self, event: str, outcome: str = "success", *, actor: Any = _OWNER,
               **details: Any) -> None:
        if EcluseSpawner._audit_log is None:
            EcluseSpawner._audit_log = audit_for(self.settings, "hub")
        EcluseSpawner._audit_log.record(
            event, actor=self.user.name if actor is _OWNER else actor,
            project=self.project_slug or None, outcome=outcome, **details,
        )

    def _user_projects(self) -> list[str]:
        groups = {g.name for g in self.user.groups}
        return sorted(slug for slug in self.settings.projects if slug in groups)

    # ---------------------------------------------------------------- the form

    def _options_form(self, spawner: Spawner) -> str:
        """The form of ``/hub/spawn[/<user>/<project>]``: the project, the language.

        The home page's *start* skips it: its link carries the project
        (``?opt-project=<slug>``, :meth:`options_from_query`)."""
        projects = self._user_projects()
        if self.name:
            if self.name not in projects:
                return (
                    f'<p class="alert alert-danger">You are not a member of project '
                    f"<b>{html.escape(self.name)}</b>.</p>"
                )
            projects = [self.name]
        if not projects:
            return '<p class="alert alert-warning">You are not a member of any project.</p>'
        rows = []
        for i, slug in enumerate(projects):
            p = self.settings.projects[slug]
            datasets = ", ".join(html.escape(d.name) for d in p.datasets) or "none"
            checked = " checked" if i == 0 else ""
            rows.append(
                f'<div class="form-check"><input class="form-check-input" type="radio" '
                f'name="project" id="project-{slug}" value="{slug}"{checked}>'
                f'<label class="form-check-label" for="project-{slug}"><b>{html.escape(p.title)}'
                f"</b> <code>{slug}</code><br><small>datasets: {datasets} · "
                f"{p.quota.cpu:g} CPU · {p.quota.memory // 2**20} MiB</small></label></div>"
            )
        return "<h4>Project</h4>" + "\n".join(rows) + self._language_field()

    @staticmethod
    def _language_field() -> str:
        options = ['<option value="" selected>as my browser</option>']
        options += [f'<option value="{v}">{html.escape(LOCALE_NAMES.get(v, v))}</option>'
                    for v in workspace.LAB_LOCALES.values()]
        return ('<h4>Language</h4><select class="form-control" name="locale" '
                'id="ecluse-locale">' + "".join(options) + "</select>")

    @default("options_form")
    def _default_options_form(self):
        return self._options_form

    def options_from_form(self, formdata: dict[str, list[str]]) -> dict[str, str]:
        values = formdata.get("project") or [""]
        options = {"project": values[0]}
        locale = (formdata.get("locale") or [""])[0]
        if locale:
            options["locale"] = locale
        return options

    def options_from_query(self, query: dict[str, list[str]]) -> dict[str, str]:
        """``/hub/spawn/<user>/<project>?opt-project=<project>``: the home page's
        *start*, one click to the spawn progress without the form (``opt-locale``
        chooses the language). Anything this server cannot start raises, and the
        hub shows the form with the message."""
        options = self.options_from_form(query)
        # ?opt-locale=fr_FR alone: this server's project
        slug = options["project"] = options["project"] or self.name
        if not self.name:
            raise ValueError("Choose a project: workspaces are started per project.")
        if slug != self.name:
            raise ValueError(f"This workspace is for project {self.name!r}, not {slug!r}.")
        if slug not in self._user_projects():
            raise ValueError(f"You are not a member of project {slug!r}.")
        return options

    def workspace_locale(self) -> str:
        """JupyterLab's language in this workspace: the one chosen at spawn
        (``locale`` option), else the browser's (``Accept-Language`` of the request
        that started it), else English (:func:`ecluse.hub.workspace.choose_locale`)."""
        handler = getattr(self, "handler", None)
        accept = None
        if handler is not None and getattr(handler, "request", None) is not None:
            accept = handler.request.headers.get("Accept-Language")
        choice = str((self.user_options or {}).get("locale") or "")
        return workspace.choose_locale(choice, accept)

    # ---------------------------------------------------------------- policy

    @default("apply_user_options")
    def _default_apply_user_options(self):
        # the only option is the project; start() validates it (resolve_project)
        return lambda spawner, user_options: None

    def _forget_options(self) -> None:
        """Drop rejected user_options: JupyterHub persists them for reuse."""
        self.user_options = {}
        if getattr(self, "orm_spawner", None) is not None:
            self.orm_spawner.user_options = {}

    def resolve_project(self) -> Project:
        """The project of this server, validated against the user's groups."""
        try:
            return self._resolve_project()
        except SpawnException:
            self._forget_options()
            raise

    def _resolve_project(self) -> Project:
        requested = str((self.user_options or {}).get("project") or "")
        if self.name:
            if requested and requested != self.name:
                raise _fail(
                    f"This workspace is for project {self.name!r}; it cannot be started "
                    f"for {requested!r}.",
                    reason="project-mismatch",
                )
            slug = self.name
        elif requested:
            raise _fail(
                f"Each project has its own workspace: start it at "
                f"/hub/spawn/{self.user.name}/{requested}",
                reason="default-server",
            )
        else:
            raise _fail(
                "Choose a project: workspaces are started per project "
                f"(/hub/spawn/{self.user.name}/<project>).",
                reason="no-project",
            )
        project = self.settings.projects.get(slug)
        if project is None:
            raise _fail(f"There is no project named {slug!r}.", reason="unknown-project")
        if slug not in self._user_projects():
            self._audit_denied(slug, "not-a-member")
            raise _fail(
                f"You are not a member of project {slug!r}.", reason="not-a-member"
            )
        return project

    def _audit_denied(self, slug: str, reason: str) -> None:
        self.project_slug = slug
        self._audit(AuditEvent.WORKSPACE_DENIED, outcome="failure", reason=reason)

    async def _verify_in_directory(self, project: Project) -> dict[str, int]:
        """Ask LDAP again (fail closed). Returns identity numbers."""
        resolver = MembershipResolver(self.settings)
        loop = asyncio.get_running_loop()
        s = self.settings.ldap
        try:
            m = await asyncio.wait_for(
                loop.run_in_executor(None, resolver.require, self.user.name, project.slug),
                s.connect_timeout * 2 + s.receive_timeout * 4,
            )
        except (TimeoutError, DirectoryUnavailable) as e:
            self._audit_denied(project.slug, "ldap-unavailable")
            raise _fail(
                "Your project membership cannot be verified right now (the directory is "
                "unavailable). Running workspaces are not affected; try again shortly.",
                reason="ldap-unavailable",
                log_message=f"membership check for {self.user.name}: {e}",
            ) from None
        except NotAMember:
            self._audit_denied(project.slug, "not-a-member-in-ldap")
            raise _fail(f"You are not a member of project {project.slug!r}.",
                        reason="not-a-member") from None
        except NoProjectGid:
            return {"uid": 0, "gid": 0, "project_gid": 0}  # refused by start()
        except DirectoryError as e:
            self._audit_denied(project.slug, e.reason)
            raise _fail("Your account is no longer valid.", reason=e.reason) from None
        return {
            "uid": m.user.uid_number,
            "gid": m.user.gid_number,
            "project_gid": m.project_gid,
        }

    async def _identity(self, project: Project) -> dict[str, int]:
        if self.verify_membership_in_directory == "always":
            return await self._verify_in_directory(project)
        auth_state = await self.user.get_auth_state() or {}
        try:
            return {
                "uid": int(auth_state["uid_number"]),
                "gid": int(auth_state["gid_number"]),
                "project_gid": int((auth_state.get("project_gids") or {}).get(project.slug)
                                   or project.gid or 0),
            }
        except (KeyError, TypeError, ValueError):
            raise _fail("Sign in again: your session lacks your directory identity.",
                        reason="no-auth-state") from None

    # ---------------------------------------------------------------- lifecycle

    def dask_sizing(self, project: Project) -> DaskSizing:
        """Dask fitted to the project's quota (once per start: environment and command)."""
        return sizing(project)

    async def start(self):
        project = self.resolve_project()
        self.project_slug = project.slug
        self._events.append({"progress": 10, "message": f"Checking membership of {project.slug}"})
        ids = await self._identity(project)
        if not ids["project_gid"]:
            raise _fail(
                f"Project {project.slug!r} has no group number in the directory.",
                reason="no-project-gid",
            )
        self.mem_limit = project.quota.memory
        self.cpu_limit = project.quota.cpu
        self.ip = "0.0.0.0"
        self.port = self.workspace_port
        try:
            user = UserIdentity(self.user.name, ids["uid"], ids["gid"])
        except ValueError as e:
            raise _fail(f"Your directory identity cannot run a workspace: {e}",
                        reason="bad-identity") from None
        project = project.model_copy(update={"gid": ids["project_gid"]})
        # where the workspace reaches the hub side (its backend says), and Dask sized to
        # the project's quota: each asked once
        host = await asyncio.to_thread(self.backend.reach_address)
        sized = self.dask_sizing(project)
        locale = self.workspace_locale()
        # the hub's variables, then the workspace's own (ecluse.hub.workspace)
        env = {**self.get_env(),
               **workspace.workspace_env(self.settings, project, user, host, sized, locale)}
        command_prefix = dask_command_prefix(project, sized)
        # the export guard's config (read-only, outside user paths)
        mounts = workspace.workspace_mounts(self.settings, project, user)
        spec = SandboxSpec(
            project=project,
            user=user,
            command=[*command_prefix, *self.workspace_cmd, "--ip=0.0.0.0",
                     f"--port={self.workspace_port}", *self.get_args_extra()],
            env=env,
            port=self.workspace_port,
            allowed_ports=[self.settings.hub.hub_port, *self.extra_allowed_ports],
            extra_mounts=mounts,
            name="workspace",
        )
        # the sandbox prepares the project folders as it starts (Sandbox.launch)
        self._events.append({"progress": 50, "message": "Starting the isolated workspace"})
        try:
            await self._remove_orphans(project.slug, found="start")
            state = await self.backend.start(spec)
        except SandboxError as e:
            self._audit(AuditEvent.WORKSPACE_START, outcome="failure", error=str(e))
            raise _fail(f"The workspace could not start: {e}", reason="sandbox",
                        log_message=e.log_message) from None
        self.sandbox_state = state
        self._audit(
            AuditEvent.WORKSPACE_START,
            server=self.name,
            datasets=[{"name": d.name, "path": str(d.path)} for d in project.datasets],
            sandbox=state.get("id"),
            uid=ids["uid"],
        )
        self._events.append({"progress": 80, "message": "Waiting for the server to answer"})
        await self._wait_listening(state)
        return (state["ip"], int(state["port"]))

    async def _remove_orphans(self, slug: str, *, found: str) -> list[str]:
        """Stop and remove this server's workspace sandboxes that its state does not own.

        JupyterHub saves a spawner's state only after :meth:`start` returns: a hub
        killed while a workspace starts (during ``backend.start`` or just after it)
        leaves a sandbox, with the project's data mounted, that no hub record names.
        The backend's labels (user, project, ``workspace``) still do, and a server
        has at most one workspace, so any other one found here is such an orphan.
        Called before each launch and when the hub polls a server it has no sandbox
        for (the next hub does that at its start: "appears to have stopped while
        the Hub was down"). A backend that cannot list its sandboxes is not asked
        (local, docker and kubernetes all can: registry, container or pod labels).
        """
        listing = getattr(self.backend, "list", None)
        if listing is None:
            return []
        owned = self.sandbox_state.get("id")
        hub_port = self.settings.hub.hub_port
        orphans = [m for m in await asyncio.to_thread(listing)
                   if (m.get("user"), m.get("project"), m.get("name") or "workspace")
                   == (self.user.name, slug, "workspace")
                   and not m.get("one_shot") and m.get("id") != owned
                   # this hub's (another deployment's hub on this host has another port)
                   and hub_port in m.get("allowed_ports", [hub_port])]
        for meta in orphans:
            self.log.warning("removing workspace sandbox %s of %s/%s: no hub record owns it "
                             "(its hub stopped while it started)", meta["id"],
                             self.user.name, slug)
            await self.backend.stop(meta, grace=0)
            self._audit(AuditEvent.WORKSPACE_ORPHAN_REMOVED, actor=None, owner=self.user.name,
                        sandbox=meta["id"], found=found, was_running=bool(meta.get("alive")))
        return [m["id"] for m in orphans]

    async def _wait_listening(self, state: dict) -> None:
        """Return once the workspace server accepts connections.

        The hub checks a started server over HTTP with an exponential backoff
        (0.2 s doubling up to 5 s between tries): a server ready after 3.5 s
        would be seen at about 6 s. A TCP connect to the sandbox every 0.1 s
        costs nothing, and the hub's first check then succeeds. A server that
        exits while starting fails the spawn at once, with its status and the
        end of its log, instead of after ``http_timeout``. After
        ``http_timeout`` the hub's own check takes over (and fails as usual).
        """
        ip, port = state["ip"], int(state["port"])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.http_timeout
        next_poll = 0.0
        while loop.time() < deadline:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), 1)
            except (TimeoutError, OSError):
                pass
            else:
                writer.close()
                try:
                    await writer.wait_closed()
                except OSError:
                    pass
                return
            if loop.time() >= next_poll:
                status = await self.backend.poll(state)
                if status is not None:
                    out, err = await self.backend.read_logs(state)
                    tail = "\n".join((out + err).strip().splitlines()[-15:])
                    self.log.error("workspace %s/%s exited while starting (status %s):\n%s",
                                   self.user.name, self.name, status, tail)
                    # the hub does not stop a server whose start failed: release
                    # the sandbox (namespace, cgroup, runtime files) here
                    try:
                        await self.backend.stop(state)
                    finally:
                        self.sandbox_state = {}
                    raise _fail(
                        f"The workspace server stopped while starting (exit status {status}). "
                        "Platform staff can see its log in the hub log.",
                        reason="exited", log_message=f"exit status {status}: {tail}")
                next_poll = loop.time() + 1.0
            await asyncio.sleep(0.1)

    def get_args_extra(self) -> list[str]:
        return [a for a in self.get_args() if not a.startswith(("--port", "--ip"))]

    async def poll(self):
        if not self.sandbox_state:
            # while start() is still setting the sandbox up, it is not dead
            if self.pending == "spawn":
                return None
            if self.name in self.settings.projects:
                self.project_slug = self.project_slug or self.name
                try:
                    await self._remove_orphans(self.name, found="poll")
                except (SandboxError, OSError) as e:  # the next start checks again
                    self.log.error("could not check %s/%s for an orphaned workspace: %s",
                                   self.user.name, self.name, e)
            return 0
        status = await self.backend.poll(self.sandbox_state)
        if status is not None and not getattr(self, "_reported_exit", False):
            self._reported_exit = True
            self.project_slug = self.project_slug or self.name
            self._audit(
                AuditEvent.WORKSPACE_EXIT, outcome="failure" if status else "success", status=status,
                oom_killed=bool(self.sandbox_state.get("oom_killed")),
            )
        return status

    async def stop(self, now: bool = False):
        if not self.sandbox_state:
            return
        grace = 0 if now else self.settings.sandbox.stop_grace
        self.project_slug = self.project_slug or self.name
        await self.backend.stop(self.sandbox_state, grace=grace)
        # the actor is who asked (staff, the idle culler), not the owner; None: the hub
        who = current_requester()
        self._audit(AuditEvent.WORKSPACE_STOP, actor=who.name if who else None, owner=self.user.name,
                    requested_by=who.kind if who else "hub", sandbox=self.sandbox_state.get("id"))
        self.sandbox_state = {}

    #: progress events shown on the spawn pending page
    _events = List()

    async def progress(self):
        sent = 0
        while True:
            while sent < len(self._events):
                yield self._events[sent]
                sent += 1
            if self._spawn_future is not None and self._spawn_future.done():
                break
            await asyncio.sleep(0.2)

    def get_state(self) -> dict:
        state = super().get_state()
        if self.sandbox_state:
            state["sandbox"] = self.sandbox_state
            state["project"] = self.project_slug
        return state

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        self.sandbox_state = state.get("sandbox") or {}
        self.project_slug = state.get("project") or ""

    def clear_state(self) -> None:
        super().clear_state()
        self.sandbox_state = {}
