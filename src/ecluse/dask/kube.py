"""Dask clusters on Kubernetes: per-project pod templates for dask-gateway's own backend.

dask-gateway's upstream Kubernetes backend
(``dask_gateway_server.backends.kubernetes``) starts the scheduler and worker
pods; Écluse only fills, per cluster, the ``KubeClusterConfig`` values its
options handler returns (:func:`ecluse.dask.gateway.production_options`), after
the gateway's project checks:

* ``namespace``: the project's, ``ecluse-<slug>`` (its ResourceQuota and
  LimitRange bound every cluster of the project);
* pod templates: non-root, every capability dropped, no privilege escalation,
  ``RuntimeDefault`` seccomp, read-only root filesystem with an in-memory
  ``/tmp``, no service-account token, the project's group, ``/data/<dataset>``
  read-only and ``/project`` from the project's claims (as workspaces have them),
  labels ``ecluse.io/project``;
* hard limits equal to the requests (``*_cores_limit``, ``*_memory_limit``).

:func:`dask_network_policy` (made with the project's other objects by the
kubernetes sandbox backend) is the project's NetworkPolicy for these pods:
scheduler and workers of the namespace reach each other; the gateway's pods
(API and traefik proxy, in the hub side's namespace) reach them and are
reached by them; nothing else (no outside address, no workspace pod).
"""

from __future__ import annotations

from typing import Any

from ..sandbox.kubernetes import DASK_POD_LABELS, dask_network_policy

__all__ = ["DASK_POD_LABELS", "cluster_pod_options", "dask_network_policy", "hard_limits"]


def _security() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "privileged": False,
            "readOnlyRootFilesystem": True, "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


def cluster_pod_options(project: Any, *, uid: int = 1000,
                        shared_claim: str = "project-shared",
                        dataset_claim_template: str = "data-{dataset}") -> dict[str, Any]:
    """``KubeClusterConfig`` values of one cluster of ``project`` (beyond its namespace and
    its sizes): the pod and container templates of its scheduler and workers."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    for ds in project.datasets:
        name = f"data-{ds.name}".lower().replace("_", "-").replace(".", "-")
        volumes.append({"name": name, "persistentVolumeClaim": {
            "claimName": dataset_claim_template.format(dataset=ds.name), "readOnly": True}})
        mounts.append({"name": name, "mountPath": f"/data/{ds.name}", "readOnly": True})
    volumes.append({"name": "project", "persistentVolumeClaim": {"claimName": shared_claim}})
    mounts.append({"name": "project", "mountPath": "/project"})
    volumes.append({"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}})
    mounts.append({"name": "tmp", "mountPath": "/tmp"})
    pod_ctx: dict[str, Any] = {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid,
                               "seccompProfile": {"type": "RuntimeDefault"}}
    if project.gid is not None:
        pod_ctx["supplementalGroups"] = [project.gid]
    pod = {"automountServiceAccountToken": False, "enableServiceLinks": False,
           "securityContext": pod_ctx, "volumes": volumes}
    container = {"securityContext": _security(), "volumeMounts": mounts}
    labels = {"ecluse.io/project": project.slug}
    out: dict[str, Any] = {}
    for role in ("scheduler", "worker"):
        out[f"{role}_extra_pod_config"] = pod
        out[f"{role}_extra_container_config"] = container
        out[f"{role}_extra_pod_labels"] = labels
    return out


def hard_limits(limits: dict[str, Any]) -> dict[str, Any]:
    """Limits equal to the requests: a cluster never bursts past its project's sizes."""
    return {"scheduler_cores_limit": limits["scheduler_cores"],
            "scheduler_memory_limit": limits["scheduler_memory"],
            "worker_cores_limit": limits["worker_cores"],
            "worker_memory_limit": limits["worker_memory"]}
