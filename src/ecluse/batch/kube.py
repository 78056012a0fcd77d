"""Batch runs on the ``kubernetes`` backend: each run a Job, its folder on a shared claim.

On a cluster the batch service is a pod of the hub side's namespace; a project's
``/project`` claim lives in the project's namespace and cannot be mounted by it
(a claim belongs to one namespace). So a run's folder is on a claim of its own:

* each project namespace holds a claim ``batch_claim`` (``batch-runs``), bound by
  the operator to ``<share>/<project>`` of a ReadWriteMany share (NFS, CephFS);
* the batch service's pod mounts ``<share>`` at ``batch_runs_root``;
* a run's Job mounts the project's ``batch-runs`` claim twice, with ``subPath``:
  ``<run-id>`` read-write at ``/project/batch/<run-id>`` (its working folder: the
  executed notebook, ``progress.json``, ``result.json``) and
  ``.inputs/<run-id>`` read-only at ``/batch-input`` (the notebook and
  parameters, copied there by the service from its record store; the driver
  checks their sha256). Nothing else of the share is in the pod: a kubelet's
  ``subPath`` bind mount opens that one folder, not its parents nor other runs.

:class:`KubernetesBatchSandbox` is the kubernetes backend with those mounts (the
rest — data claims read-only, pod security, the checks of
:mod:`ecluse.sandbox.k8s_checks` — is the backend's own). It makes no namespace object
(its role runs Jobs only, ``config/kubernetes/ecluse-batch.yaml``): the project's
NetworkPolicies (``ecluse-one-shot``, which leaves a run's pod no network at all, and
``ecluse-sandboxes``, which must leave it out), dataset claims and ``batch-runs`` claim
are read back before each run and a missing or altered one refuses it;
:class:`KubeRunFolders` is where the service makes and reads run folders, with
the no-link file operations of :mod:`.files`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..sandbox import SandboxError, SandboxSpec, UserIdentity
from ..sandbox.k8s_checks import (
    ONE_SHOT_POLICY,
    SANDBOX_POLICY,
    network_policy_problems,
    one_shot_policy_problems,
)
from ..sandbox.kubernetes import KubernetesSandbox
from .files import RunFolder, UnsafePath, _open_dir
from .runs import INPUT_MOUNT

#: the environment variable by which the runner names the run (runner._spec)
RUN_ENV = "ECLUSE_BATCH_RUN"
#: the share's folder of each project where inputs are copied for a run's Job
INPUTS_DIR = ".inputs"


def _run_id(spec: SandboxSpec) -> str:
    rid = spec.env.get(RUN_ENV, "")
    if not rid or "/" in rid or rid.startswith("."):
        raise SandboxError("the batch run cannot be started",
                           log_message=f"a batch sandbox without a usable {RUN_ENV}: {rid!r}")
    return rid


class KubernetesBatchSandbox(KubernetesSandbox):
    """The kubernetes backend for the batch service: a run's folder and inputs are
    ``subPath`` mounts of the project's ``batch-runs`` claim (not a ConfigMap, not
    ``/project``'s claim, which the service's pod cannot mount)."""

    def _without_inputs(self, spec: SandboxSpec) -> SandboxSpec:
        return replace(spec, extra_mounts=[m for m in spec.extra_mounts
                                           if m.target != INPUT_MOUNT])

    def volumes(self, spec: SandboxSpec) -> tuple[list[dict], list[dict]]:
        rid = _run_id(spec)
        vols, mounts = super().volumes(self._without_inputs(spec))
        vols.append({"name": "batch-runs", "persistentVolumeClaim": {
            "claimName": self.batch_claim}})
        mounts.append({"name": "batch-runs", "mountPath": spec.cwd, "subPath": rid})
        mounts.append({"name": "batch-runs", "mountPath": INPUT_MOUNT,
                       "subPath": f"{INPUTS_DIR}/{rid}", "readOnly": True})
        return vols, mounts

    def config_maps(self, spec: SandboxSpec) -> list[dict[str, Any]]:
        return super().config_maps(self._without_inputs(spec))

    async def _apply_project(self, api: Any, spec: SandboxSpec) -> None:
        """Make nothing (the service's role may only run Jobs): read back the project's
        NetworkPolicies (as the hub makes them at a workspace's launch: ``ecluse-one-shot``
        closes the run's pod to the network, ``ecluse-sandboxes`` must leave it out), the
        dataset claims and the ``batch-runs`` claim; anything missing or altered refuses
        the run."""
        from kubernetes_asyncio import client

        core, net = client.CoreV1Api(api), client.NetworkingV1Api(api)
        ns = self.namespace(spec)
        problems: list[str] = []
        for name in (SANDBOX_POLICY, ONE_SHOT_POLICY):
            got = await self._call(net.read_namespaced_network_policy, name, ns,
                                   missing_ok=True)
            if got is None:
                problems.append(f"no NetworkPolicy {name} (start a workspace of the project "
                                "once, or apply the project's objects)")
            elif name == SANDBOX_POLICY:
                problems += network_policy_problems(self._dict(got), namespace=ns,
                                                    hub_namespaces={self.hub_namespace},
                                                    allow_dns=self.allow_dns)
            else:
                problems += one_shot_policy_problems(self._dict(got), namespace=ns)
        claims = [self.batch_claim, *(self.dataset_claim_template.format(dataset=d.name)
                                      for d in spec.project.datasets)]
        for claim in claims:
            if await self._call(core.read_namespaced_persistent_volume_claim, claim, ns,
                                missing_ok=True) is None:
                problems.append(f"claim {ns}/{claim} does not exist")
        if problems:
            raise SandboxError(f"the batch run of project {spec.project.slug} cannot be "
                               "started: its namespace is not ready",
                               log_message="; ".join(problems))

    async def list_async(self) -> list[dict[str, Any]]:
        """The batch Jobs' pods of each project's namespace (the service's role is bound in
        project namespaces only: no cluster-wide listing), as the backend's states."""
        from kubernetes_asyncio import client

        out: list[dict[str, Any]] = []
        for slug in sorted(getattr(self.settings, "projects", None) or {}):
            async with self.api() as api:
                pods = await self._call(client.CoreV1Api(api).list_namespaced_pod,
                                        self.namespace(slug), missing_ok=True,
                                        label_selector="ecluse.io/backend=kubernetes,"
                                        "ecluse.io/one-shot=1")
            for pod in (self._dict(pods) or {}).get("items") or [] if pods else []:
                lab = pod["metadata"].get("labels") or {}
                out.append({"backend": "kubernetes", "id": lab.get("ecluse.io/sandbox-id", ""),
                            "namespace": pod["metadata"]["namespace"], "pod": None,
                            "job": lab.get("job-name"), "project": lab.get("ecluse.io/project"),
                            "user": lab.get("ecluse.io/user"), "one_shot": True,
                            "name": lab.get("ecluse.io/sandbox"), "phase": "running",
                            "alive": (pod.get("status") or {}).get("phase") in (
                                None, "Pending", "Running")})
        return out

    def check(self, spec: SandboxSpec, objects: list[dict[str, Any]]) -> None:
        super().check(spec, [o for o in objects if o["kind"] == "Job"])

    def inputs_dir(self, project: str, run_id: str) -> Path:
        return Path(self.batch_runs_root) / project / INPUTS_DIR / run_id

    def _copy_inputs(self, spec: SandboxSpec) -> None:
        """The record store's inputs (the mount at /batch-input) onto the share, read-only."""
        rid = _run_id(spec)
        src = next((m.source for m in spec.extra_mounts if m.target == INPUT_MOUNT), None)
        if src is None:
            raise SandboxError("the batch run cannot be started",
                               log_message=f"run {rid}: no input mount at {INPUT_MOUNT}")
        dest = self.inputs_dir(spec.project.slug, rid)
        dest.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
        dest.mkdir(mode=0o755)  # FileExistsError: never reuse
        for entry in Path(src).iterdir():
            if entry.is_symlink() or not entry.is_file():
                raise SandboxError("the batch run cannot be started",
                                   log_message=f"input {entry} is not a regular file")
            shutil.copyfile(entry, dest / entry.name, follow_symlinks=False)
            os.chmod(dest / entry.name, 0o444)

    def _remove_inputs(self, state: dict[str, Any]) -> None:
        rid = state.get("batch_run")
        if rid and state.get("project"):
            shutil.rmtree(self.inputs_dir(state["project"], rid), ignore_errors=True)

    async def launch(self, spec: SandboxSpec, *, one_shot: bool = False) -> dict[str, Any]:
        if not one_shot:
            raise SandboxError("the batch service starts one-shot runs only")
        await asyncio.to_thread(self._copy_inputs, spec)
        try:
            state = await super().launch(spec, one_shot=True)
        except BaseException:
            await asyncio.to_thread(self._remove_inputs, {"batch_run": _run_id(spec),
                                                          "project": spec.project.slug})
            raise
        state["batch_run"] = _run_id(spec)
        return state

    async def release(self, state: dict[str, Any]) -> None:
        await super().release(state)
        await asyncio.to_thread(self._remove_inputs, state)


class KubeRunFolders:
    """Run folders on the share of ``batch-runs`` claims, as the batch service's pod
    mounts it: ``<batch_runs_root>/<project>/<run-id>``. The service runs unprivileged
    and cannot give a folder to the run's uid: the folder is ``0777``, which opens it
    to nobody else — the share's root and each project's folder are ``0711`` (the
    service's), no workspace mounts the claim, and a Job sees only its own folder
    (``subPath``). Every read goes through :class:`.files.RunFolder` (no link followed,
    bounded)."""

    def __init__(self, settings: Any, backend: Any = None) -> None:
        self.settings = settings
        given = dict(getattr(settings.sandbox, "kubernetes", None) or {})
        root = getattr(backend, "batch_runs_root", None) or given.get("batch_runs_root")
        self.root = Path(root or KubernetesBatchSandbox.batch_runs_root.default_value)

    def _project_fd(self, project: str, *, create: bool) -> int:
        rfd = _open_dir(str(self.root))
        try:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(project, 0o711, dir_fd=rfd)
            return _open_dir(project, rfd)
        finally:
            os.close(rfd)

    def create(self, project: Any, user: UserIdentity, project_gid: int,
               run_id: str) -> RunFolder:
        pfd = self._project_fd(project.slug, create=True)
        try:
            os.mkdir(run_id, 0o700, dir_fd=pfd)  # FileExistsError: never reuse a folder
            fd = _open_dir(run_id, pfd)
            os.fchmod(fd, 0o777)
            return RunFolder(fd)
        finally:
            os.close(pfd)

    def open(self, project: str, run_id: str) -> RunFolder:
        try:
            pfd = self._project_fd(project, create=False)
            try:
                return RunFolder(_open_dir(run_id, pfd))
            finally:
                os.close(pfd)
        except FileNotFoundError:
            raise UnsafePath("the run's folder is gone") from None


def batch_backend(settings: Any) -> KubernetesBatchSandbox:
    """The batch service's backend on ``backend: kubernetes``."""
    return KubernetesBatchSandbox(settings=settings)
