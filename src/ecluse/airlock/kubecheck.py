"""The airlock's check sandboxes as Kubernetes Jobs (``sandbox.backend: kubernetes``).

In a cluster the airlock is an unprivileged pod: it cannot start bubblewrap, and
no launcher runs beside it. :class:`KubernetesCheckSandbox` is the kubernetes
backend for :class:`~.checkbox.SandboxChecker`: each check is a ``batch/v1`` Job of
the **check namespace** (``ecluse-airlock-checks``, made by the operator from
``config/kubernetes/ecluse-airlock.yaml``), never of a project's namespace:

* **the staged object reaches the Job read-only through a claim ``subPath``**:
  the airlock copies the job folder (``job.json``, ``in/<name>``; the ledger rows
  for differencing) onto a share it mounts at ``check_root``, whose claim
  ``check_claim`` in the check namespace is bound to the same share; the Job
  mounts ``<check-id>/<n>`` of it read-only at ``/airlock-check`` (and
  ``/airlock-ledger``) and sees nothing else of it. Not a Secret: a Secret holds
  1 MiB (an export is often larger), and it would put a copy of project data
  in the API server's store and its backups; the copy on the share is removed
  with the Job;
* **no network**: the namespace's ``deny-all`` NetworkPolicy (every pod, both
  directions, no rule — :func:`deny_all_policy`) is read back before each check
  and must be exactly that, else the check does not run (fail closed: the file
  goes to review);
* **no data**: no dataset claim, no project folder, no home, no inbox; only an
  in-memory ``/tmp`` (:meth:`KubernetesCheckSandbox.volumes`);
* the backend's pod security (non-root ``check_uid``, no capability, read-only
  root, ``RuntimeDefault`` seccomp, no service-account token), CPU and memory
  limits from ``check_cpu``/``check_memory``, ``activeDeadlineSeconds``;
* the airlock's own image (``check_image``: the checker is the airlock's code).

:func:`check_job_problems` adds to :func:`~ecluse.sandbox.k8s_checks.pod_problems`
what a check Job must also be (no ``/data``, every mount but ``/tmp`` read-only,
no claim but the check share); the backend refuses to submit on any finding.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from traitlets import Unicode

from ..sandbox import SandboxError, SandboxSpec
from ..sandbox.k8s_checks import pod_problems
from ..sandbox.kubernetes import KubernetesSandbox
from ..settings.airlock import airlock_settings

CHECK_POLICY = "deny-all"
CHECK_ID_ENV = "ECLUSE_CHECK_ID"



def deny_all_policy(namespace: str) -> dict[str, Any]:
    """Every pod of ``namespace``, both directions, no rule: no traffic at all."""
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": CHECK_POLICY, "namespace": namespace},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}


def deny_all_problems(policy: dict[str, Any] | None, namespace: str) -> list[str]:
    """What lets a pod of the check namespace send or receive anything."""
    if policy is None:
        return [f"no NetworkPolicy {CHECK_POLICY} in {namespace}: check pods would have "
                "the network"]
    spec = policy.get("spec") or {}
    out = []
    if spec.get("podSelector") not in ({}, None) or "podSelector" not in spec:
        out.append(f"{CHECK_POLICY}: podSelector {spec.get('podSelector')} is not every pod")
    if sorted(spec.get("policyTypes") or []) != ["Egress", "Ingress"]:
        out.append(f"{CHECK_POLICY}: policyTypes {spec.get('policyTypes')} (both needed)")
    if spec.get("ingress") or spec.get("egress"):
        out.append(f"{CHECK_POLICY}: it allows traffic (ingress or egress rules)")
    return out


def check_job_problems(job: dict[str, Any], *, namespace: str, project: str,
                       claim: str) -> list[str]:
    """:func:`pod_problems`, and: no ``/data``, no claim but ``claim``, every mount but
    ``/tmp`` read-only, a deadline."""
    out = pod_problems(job, namespace=namespace, project=project)
    spec = (job.get("spec") or {}).get("template", {}).get("spec") or {}
    if not isinstance((job.get("spec") or {}).get("activeDeadlineSeconds"), int):
        out.append("check job without activeDeadlineSeconds")
    vols = {v.get("name"): v for v in spec.get("volumes") or []}
    for name, v in vols.items():
        pvc = v.get("persistentVolumeClaim")
        if pvc and (pvc.get("claimName") != claim or pvc.get("readOnly") is not True):
            out.append(f"volume {name}: claim {pvc.get('claimName')} (only {claim}, "
                       "read-only)")
        if not pvc and "emptyDir" not in v:
            out.append(f"volume {name}: {sorted(set(v) - {'name'})} (only the check share "
                       "and /tmp)")
    for c in spec.get("containers") or []:
        for m in c.get("volumeMounts") or []:
            path = m.get("mountPath", "")
            if path == "/data" or path.startswith("/data/"):
                out.append(f"container {c.get('name')}: {path} mounted (no data in checks)")
            if path != "/tmp" and m.get("readOnly") is not True:
                out.append(f"container {c.get('name')}: {path} writable")
    return out


class KubernetesCheckSandbox(KubernetesSandbox):
    """One-shot check Jobs in the check namespace (see the module)."""

    check_namespace = Unicode(
        "ecluse-airlock-checks", help="Namespace of the airlock's check Jobs (deny-all "
        "NetworkPolicy, no data claims).").tag(config=True)
    check_claim = Unicode(
        "airlock-checks", help="PVC of the check namespace bound to the share the airlock "
        "mounts at check_root (the staged copies).").tag(config=True)
    check_root = Unicode(
        "/srv/airlock-checks", help="Where the airlock's pod mounts the share of staged "
        "copies for check Jobs.").tag(config=True)
    check_image = Unicode(
        "ecluse/hub:0.1.0", help="Image of check Jobs: the airlock's own (the checker is "
        "its code, at the same path).").tag(config=True)

    def namespace(self, spec_or_slug: SandboxSpec | str) -> str:
        return self.check_namespace

    def volumes(self, spec: SandboxSpec) -> tuple[list[dict], list[dict]]:
        """The check share's sub-folders read-only, an in-memory /tmp; nothing else."""
        sid = spec.env.get(CHECK_ID_ENV, "")
        if spec.extra_mounts and not sid:
            raise SandboxError("the check could not be started",
                               log_message=f"check mounts without {CHECK_ID_ENV}")
        vols = [{"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": self.tmp_size}}]
        mounts = [{"name": "tmp", "mountPath": "/tmp"}]
        if spec.extra_mounts:
            vols.append({"name": "check-share", "persistentVolumeClaim": {
                "claimName": self.check_claim, "readOnly": True}})
        for i, m in enumerate(spec.extra_mounts):
            if not m.read_only:
                raise SandboxError("the check could not be started",
                                   log_message=f"check mount {m.target} is writable")
            mounts.append({"name": "check-share", "mountPath": m.target,
                           "subPath": f"{sid}/{i}", "readOnly": True})
        return vols, mounts

    def build_job(self, spec: SandboxSpec, sandbox_id: str) -> dict[str, Any]:
        job = super().build_job(spec, sandbox_id)
        # the checker stops a check at check_timeout; the cluster too, should it not
        timeout = airlock_settings(self.settings).check_timeout if self.settings else 60
        job["spec"]["activeDeadlineSeconds"] = int(self.start_timeout + timeout) + 60
        job["spec"]["template"]["spec"]["containers"][0]["image"] = self.check_image
        return job

    def check(self, spec: SandboxSpec, objects: list[dict[str, Any]]) -> None:
        problems: list[str] = []
        for o in objects:
            if o["kind"] == "Job":
                problems += check_job_problems(o, namespace=self.check_namespace,
                                               project=spec.project.slug,
                                               claim=self.check_claim)
            elif o["kind"] == "Pod":
                problems.append("a check runs as a Job only")
        if problems:
            raise SandboxError("the check could not be started: its Kubernetes objects "
                               "would not isolate it",
                               log_message="kubernetes objects refused: " + "; ".join(problems))

    def project_objects(self, spec: SandboxSpec) -> list[dict[str, Any]]:
        return []  # the check namespace is the operator's (its RBAC gives no more)

    async def _apply_project(self, api: Any, spec: SandboxSpec) -> None:
        """Nothing is made; the namespace's deny-all policy is read back (fail closed)."""
        from kubernetes_asyncio import client

        got = await self._call(client.NetworkingV1Api(api).read_namespaced_network_policy,
                               CHECK_POLICY, self.check_namespace, missing_ok=True)
        problems = deny_all_problems(None if got is None else self._dict(got),
                                     self.check_namespace)
        if problems:
            raise SandboxError("the check could not be started: its namespace is not "
                               "closed to the network", log_message="; ".join(problems))

    def _share(self, sid: str) -> Path:
        return Path(self.check_root) / sid

    def _copy(self, spec: SandboxSpec, sid: str) -> None:
        """Each mount's folder onto the share (``<sid>/<n>``), readable by the check uid."""
        dest = self._share(sid)
        dest.mkdir(mode=0o755)  # FileExistsError: never reuse
        for i, m in enumerate(spec.extra_mounts):
            shutil.copytree(m.source, dest / str(i), symlinks=True)
            for root, _dirs, files in os.walk(dest / str(i)):
                os.chmod(root, 0o755)
                for f in files:
                    p = Path(root) / f
                    if p.is_symlink():
                        raise SandboxError("the check could not be started",
                                           log_message=f"staged {p} is a link")
                    os.chmod(p, 0o444)

    async def launch(self, spec: SandboxSpec, *, one_shot: bool = False) -> dict[str, Any]:
        if not one_shot:
            raise SandboxError("a check runs as a one-shot Job only")
        # the staged copies' folder on the share, named in the spec (volumes() reads it:
        # one backend serves the checker's threads at once)
        sid = "c" + secrets.token_hex(8)
        spec = replace(spec, env={**spec.env, CHECK_ID_ENV: sid})
        await asyncio.to_thread(self._copy, spec, sid)
        try:
            state = await super().launch(spec, one_shot=True)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, self._share(sid), True)
            raise
        state["check_id"] = sid
        return state

    async def release(self, state: dict[str, Any]) -> None:
        await super().release(state)
        if state.get("check_id"):
            await asyncio.to_thread(shutil.rmtree, self._share(state["check_id"]), True)


def check_backend(settings: Any) -> KubernetesCheckSandbox:
    """The airlock's check backend on ``backend: kubernetes``."""
    return KubernetesCheckSandbox(settings=settings)
