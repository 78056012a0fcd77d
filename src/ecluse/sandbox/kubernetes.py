"""The ``kubernetes`` backend: each sandbox is a pod of the project's namespace.

Built on the ecosystem's own parts: the pod and the claims are made by
KubeSpawner's object builders (``kubespawner.objects.make_pod``,
``make_pvc``) from :meth:`KubernetesSandbox.kubespawner_config` (the same
values a hub running KubeSpawner itself would use), and submitted through
``kubernetes_asyncio`` (KubeSpawner's client), so ``EcluseSpawner`` stays the
spawner with its LDAP re-check, audit and project-bound tokens. One sandbox:

* the **project's objects**, made (or put back as Écluse makes them) at each
  launch: the namespace ``ecluse-<slug>`` (Pod Security "restricted"), a
  NetworkPolicy that lets sandbox pods be reached from the hub and proxy only
  and reach only the hub API, airlock and gateway ports (no DNS unless
  ``allow_dns``, no other pod — not even of the same project —, no outside
  address; one-shot pods left out), the ``ecluse-one-shot`` NetworkPolicy that
  selects one-shot pods (batch runs' Jobs) with no rule — no network at all, as
  on the other backends (:meth:`KubernetesSandbox.one_shot_policy`) —, the
  ``ecluse-dask`` NetworkPolicy of the project's Dask pods
  (:func:`dask_network_policy`), a ResourceQuota and a LimitRange, the project
  folder's and the homes' claims, the spawner's read-only configuration folder
  as a ConfigMap; each dataset is a read-only claim the operator binds (a
  missing one fails the launch);
* a **pod** (:meth:`KubernetesSandbox.build_pod`): the user's uid/gid plus the
  project group, non-root, every capability dropped, no privilege escalation,
  ``RuntimeDefault`` seccomp, read-only root filesystem with an in-memory
  ``/tmp``, no service-account token, no host namespace, limits from the
  project quota, labels ``ecluse.io/*`` by which a restarted hub finds it
  (:meth:`KubernetesSandbox.list`, :meth:`KubernetesSandbox.adopt`);
* a one-shot run (batch notebook) is a ``batch/v1`` **Job** of that pod
  (:meth:`KubernetesSandbox.build_job`, no retry).

Storage: each dataset is a read-only PersistentVolumeClaim, the project
folder one claim, the homes one claim mounted with ``subPath: <user>``, the project's
inbox of approved imports one claim mounted read-only at ``/project/inbox``
(claim names are templates, see the traits).

Every object is checked by :mod:`ecluse.sandbox.k8s_checks` before it is
submitted; a finding refuses the launch. Kubernetes keeps one log stream: a
one-shot run's stdout and stderr come back together as its stdout.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import re
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from traitlets import Bool, Dict, Float, Integer, List, Unicode, default

from ..settings import parse_size
from .base import (
    INBOX_TARGET,
    ProjectPaths,
    Sandbox,
    SandboxError,
    SandboxSpec,
    UserIdentity,
    sandbox_env,
)
from .k8s_checks import (
    ONE_SHOT_LABEL,
    ONE_SHOT_POLICY,
    ONE_SHOT_SELECTOR,
    SANDBOX_POLICY,
    SANDBOX_SELECTOR,
    network_policy_problems,
    one_shot_policy_problems,
    pod_problems,
    quota_problems,
)

COMPONENT = "ecluse-sandbox"
#: keys of ``sandbox.kubernetes`` read by a subclass only (ecluse.airlock.kubecheck)
SUBCLASS_KEYS = ("check_namespace", "check_claim", "check_root", "check_image",
                 # read by the hub configuration (ecluse.airlock.hub.airlock_deployment_host)
                 "airlock_address")

#: dask-gateway's label on every scheduler and worker pod it starts (ecluse.dask.kube)
DASK_POD_LABELS = {"app.kubernetes.io/name": "dask-gateway"}


def dask_network_policy(slug: str, *, hub_namespace: str = "ecluse",
                        gateway_components: tuple[str, ...] = ("gateway", "traefik"),
                        namespace_template: str = "ecluse-{project}") -> dict[str, Any]:
    """The NetworkPolicy of a project's Dask pods (dask-gateway's KubeBackend): scheduler and
    workers of the namespace reach each other and the gateway's pods (API, traefik) in the
    hub side's namespace; nothing else (no outside address, no workspace pod)."""
    gateway = {"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": hub_namespace}},
        "podSelector": {"matchExpressions": [{"key": "app.kubernetes.io/component",
                                              "operator": "In",
                                              "values": list(gateway_components)}]}}
    same = {"podSelector": {"matchLabels": dict(DASK_POD_LABELS)}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "ecluse-dask", "namespace": namespace_template.format(
            project=slug)},
        "spec": {
            "podSelector": {"matchLabels": dict(DASK_POD_LABELS)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [same, gateway]}],
            "egress": [{"to": [same, gateway]}],
        },
    }


def _files(root: Path) -> list[str]:
    """Regular files under ``root``, relative (what a ConfigMap volume recreates)."""
    return [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()]


class KubernetesSandbox(Sandbox):
    """Translate a sandbox specification into KubeSpawner configuration and manifests."""

    image = Unicode(help="Workspace image (default: SandboxSettings.image).").tag(config=True)
    namespace_template = Unicode(
        "ecluse-{project}", help="Namespace of a project's sandboxes.").tag(config=True)
    hub_namespace = Unicode("ecluse", help="Namespace of the hub, proxy and airlock.").tag(
        config=True)
    dataset_claim_template = Unicode(
        "data-{dataset}", help="PVC of a dataset (in the project namespace), mounted read-only."
    ).tag(config=True)
    shared_claim = Unicode("project-shared", help="PVC of the project folder.").tag(config=True)
    inbox_claim = Unicode(
        "project-inbox", help="PVC of the project's inbox of approved imports, mounted "
        "read-only at /project/inbox (the airlock's delivery writes it).").tag(config=True)
    batch_claim = Unicode(
        "batch-runs", help="PVC of a project's batch runs (in the project namespace), bound "
        "to <share>/<project> of the share the batch service mounts at batch_runs_root; "
        "only batch Jobs mount it (ecluse.batch.kube).").tag(config=True)
    batch_runs_root = Unicode(
        "/srv/batch-runs", help="Where the batch service's pod mounts the share of run "
        "folders (one folder per project).").tag(config=True)
    home_claim = Unicode("homes", help="PVC of the homes (one subPath per user).").tag(
        config=True)
    tmp_size = Unicode("1Gi", help="Size of the in-memory /tmp.").tag(config=True)
    max_sandboxes = Integer(
        20, help="Sandboxes a project may run at once (ResourceQuota = quota x this)."
    ).tag(config=True)
    labels = Dict(help="Extra labels on pods.").tag(config=True)
    hub_address = Unicode(
        help="Address sandboxes use for the hub (default: the hub service name). Without "
        "allow_dns, use the service's cluster IP or a hostAlias.").tag(config=True)
    allow_dns = Bool(
        False, help="Let sandboxes query the cluster DNS (kube-dns, port 53). Off by default: "
        "a resolver that forwards outside names is an exfiltration channel.").tag(config=True)

    egress_components = List(
        Unicode(), ["hub", "airlock", "gateway", "traefik"],
        help="app.kubernetes.io/component values of the hub-side pods sandboxes may reach "
        "(on the allowed ports only): the hub API, the airlock, dask-gateway's API server "
        "and its traefik proxy.").tag(config=True)
    kubeconfig = Unicode(
        "", help="kubeconfig file of the API the hub uses (default: the hub pod's service "
        "account, as KubeSpawner in a zero-to-jupyterhub deployment).").tag(config=True)
    context = Unicode("", help="kubeconfig context (default: the file's current one).").tag(
        config=True)
    api_timeout = Float(30.0, help="Seconds one Kubernetes API call may take.").tag(config=True)
    start_timeout = Float(
        300.0, help="Seconds a workspace pod may take to run with an address (image pull, "
        "scheduling, volume attachment).").tag(config=True)
    storage_class = Unicode(
        "", help="StorageClass of the project and homes claims (default: the cluster's).").tag(
        config=True)
    access_mode = Unicode(
        "ReadWriteMany", help="Access mode of the project and homes claims (several pods of "
        "a project on several nodes mount them).").tag(config=True)
    home_size = Unicode("10Gi", help="Size of a project's homes claim.").tag(config=True)
    inbox_size = Unicode("10Gi", help="Size of a project's inbox claim (approved imports; "
                         "the workspaces mount it read-only).").tag(config=True)
    extra_claims = Integer(
        0, help="Claims a project may make beyond its own (project, homes, datasets).").tag(
        config=True)
    image_pull_policy = Unicode("IfNotPresent", help="imagePullPolicy of sandbox pods.").tag(
        config=True)
    node_selector = Dict(help="nodeSelector of sandbox pods (e.g. a workspace node pool).").tag(
        config=True)

    @default("image")
    def _image_default(self) -> str:
        return self.settings.sandbox.image if self.settings else "ecluse/workspace:0.1.0"

    @default("start_timeout")
    def _start_timeout_default(self) -> float:
        return float(self.settings.sandbox.start_timeout) if self.settings else 300.0

    def __init__(self, **kwargs: Any):
        settings = kwargs.get("settings")
        given = dict(getattr(getattr(settings, "sandbox", None), "kubernetes", None) or {})
        given = {k: v for k, v in given.items()  # the airlock check backend's own keys
                 if k not in SUBCLASS_KEYS or self.class_traits(config=True).get(k)}
        unknown = sorted(k for k in given
                         if k == "settings" or not self.class_traits(config=True).get(k))
        if unknown:
            raise SandboxError("the kubernetes backend's settings are wrong",
                               log_message="sandbox.kubernetes: unknown setting(s) "
                               + ", ".join(unknown))
        super().__init__(**{**given, **kwargs})

    def namespace(self, spec_or_slug: SandboxSpec | str) -> str:
        slug = spec_or_slug if isinstance(spec_or_slug, str) else spec_or_slug.project.slug
        return self.namespace_template.format(project=slug)

    def pod_labels(self, spec: SandboxSpec) -> dict[str, str]:
        return {"app.kubernetes.io/component": COMPONENT, "ecluse.io/project": spec.project.slug,
                "ecluse.io/user": spec.user.name, **self.labels}

    # --------------------------------------------------------------- pieces

    def volumes(self, spec: SandboxSpec) -> tuple[list[dict], list[dict]]:
        vols, mounts = [], []
        for ds in spec.project.datasets:
            name = f"data-{ds.name}".lower().replace("_", "-").replace(".", "-")
            vols.append({"name": name, "persistentVolumeClaim": {
                "claimName": self.dataset_claim_template.format(dataset=ds.name), "readOnly": True}})
            mounts.append({"name": name, "mountPath": f"/data/{ds.name}", "readOnly": True})
        vols.append({"name": "project", "persistentVolumeClaim": {"claimName": self.shared_claim}})
        mounts.append({"name": "project", "mountPath": "/project"})
        vols.append({"name": "inbox", "persistentVolumeClaim": {"claimName": self.inbox_claim,
                                                                "readOnly": True}})
        mounts.append({"name": "inbox", "mountPath": INBOX_TARGET, "readOnly": True})
        vols.append({"name": "home", "persistentVolumeClaim": {"claimName": self.home_claim}})
        mounts.append({"name": "home", "mountPath": spec.home, "subPath": spec.user.name})
        vols.append({"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": self.tmp_size}})
        mounts.append({"name": "tmp", "mountPath": "/tmp"})
        for i, m in enumerate(spec.extra_mounts):
            items = [{"key": f"f{j}", "path": rel}
                     for j, rel in enumerate(sorted(_files(Path(m.source))))]
            vols.append({"name": f"extra-{i}", "configMap": {
                "name": self.config_map_name(m.target), "items": items}})
            mounts.append({"name": f"extra-{i}", "mountPath": m.target, "readOnly": True})
        return vols, mounts

    @staticmethod
    def config_map_name(target: str) -> str:
        return "ecluse-mount" + re.sub(r"[^a-z0-9]+", "-", target.lower()).rstrip("-")

    def config_maps(self, spec: SandboxSpec) -> list[dict[str, Any]]:
        """An extra mount (the workspace's Jupyter configuration) as a ConfigMap of the
        project's namespace, mounted read-only: a folder of small files from the hub's
        host. A writable, missing or too large one fails the launch."""
        out = []
        for m in spec.extra_mounts:
            src = Path(m.source)
            if not m.read_only:
                raise SandboxError(f"{m.target} cannot be mounted on Kubernetes",
                                   log_message=f"extra mount {src} -> {m.target} is writable: "
                                   "only read-only folders (ConfigMaps) are carried")
            if not src.is_dir():
                raise SandboxError(f"{m.target} is unavailable",
                                   log_message=f"extra mount source {src} is not a folder")
            data: dict[str, str] = {}
            binary: dict[str, str] = {}
            for j, rel in enumerate(sorted(_files(src))):
                raw = (src / rel).read_bytes()
                try:
                    data[f"f{j}"] = raw.decode()
                except UnicodeDecodeError:
                    binary[f"f{j}"] = base64.b64encode(raw).decode()
            if sum(map(len, data.values())) + sum(map(len, binary.values())) > 900_000:
                raise SandboxError(f"{m.target} is too large for Kubernetes",
                                   log_message=f"extra mount {src}: over 900 kB (a ConfigMap "
                                   "holds 1 MiB)")
            cm: dict[str, Any] = {
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": self.config_map_name(m.target),
                             "namespace": self.namespace(spec),
                             "labels": {"app.kubernetes.io/managed-by": "ecluse",
                                        "ecluse.io/project": spec.project.slug}},
                "data": data, "immutable": False}
            if binary:
                cm["binaryData"] = binary
            out.append(cm)
        return out

    def container_security_context(self) -> dict[str, Any]:
        return {
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }

    def pod_security_context(self, spec: SandboxSpec) -> dict[str, Any]:
        ctx: dict[str, Any] = {
            "runAsUser": spec.user.uid,
            "runAsGroup": spec.user.gid,
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        if spec.project.gid is not None:
            ctx["supplementalGroups"] = [spec.project.gid]
        return ctx

    def resources(self, spec: SandboxSpec) -> dict[str, Any]:
        q = spec.project.quota
        return {"limits": {"cpu": str(q.cpu), "memory": str(q.memory)},
                "requests": {"cpu": str(min(q.cpu, 0.1)), "memory": str(min(q.memory, 256 * 2**20))}}

    def _env(self, spec: SandboxSpec) -> dict[str, str]:
        return sandbox_env(spec)

    # ------------------------------------------------------------- outputs

    def kubespawner_config(self, spec: SandboxSpec) -> dict[str, Any]:
        """Values for KubeSpawner traits."""
        vols, mounts = self.volumes(spec)
        res = self.resources(spec)
        return {
            "namespace": self.namespace(spec),
            "image": self.image,
            "cmd": list(spec.command),
            "environment": self._env(spec),
            "port": spec.port or 8888,
            "working_dir": spec.cwd,
            "uid": spec.user.uid,
            "gid": spec.user.gid,
            "supplemental_gids": [spec.project.gid] if spec.project.gid is not None else [],
            "volumes": vols,
            "volume_mounts": mounts,
            "cpu_limit": spec.project.quota.cpu,
            "cpu_guarantee": float(res["requests"]["cpu"]),
            "mem_limit": spec.project.quota.memory,
            "mem_guarantee": int(res["requests"]["memory"]),
            "container_security_context": self.container_security_context(),
            "pod_security_context": self.pod_security_context(spec),
            "allow_privilege_escalation": False,
            "automount_service_account_token": False,
            "extra_labels": self.pod_labels(spec),
            "extra_pod_config": {"enableServiceLinks": False, "hostNetwork": False,
                                 "hostPID": False, "hostIPC": False},
        }

    def pod_manifest(self, spec: SandboxSpec, name: str | None = None) -> dict[str, Any]:
        """A ``v1/Pod`` running ``spec.command`` (one-shot runs, Dask workers)."""
        vols, mounts = self.volumes(spec)
        container = {
            "name": "sandbox",
            "image": self.image,
            "command": list(spec.command),
            "workingDir": spec.cwd,
            "env": [{"name": k, "value": v} for k, v in self._env(spec).items()],
            "volumeMounts": mounts,
            "resources": self.resources(spec),
            "securityContext": self.container_security_context(),
        }
        if spec.port:
            container["ports"] = [{"containerPort": spec.port, "protocol": "TCP"}]
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name or f"{spec.project.slug}-{spec.user.name}-{spec.name or 'sandbox'}",
                "namespace": self.namespace(spec),
                "labels": self.pod_labels(spec),
            },
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "hostNetwork": False, "hostPID": False, "hostIPC": False,
                "securityContext": self.pod_security_context(spec),
                "containers": [container],
                "volumes": vols,
            },
        }

    def namespace_manifest(self, slug: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": self.namespace(slug), "labels": {
                "ecluse.io/project": slug,
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            }},
        }

    def network_policy(self, spec: SandboxSpec) -> dict[str, Any]:
        """Ingress from hub and proxy only; egress to the allowed ports of the hub, airlock and
        gateway only. No peer in the project's namespace: sandboxes of a project never reach
        each other (they share files through /project). One-shot pods are left out: they
        are :meth:`one_shot_policy`'s."""
        hub_ns = {"matchLabels": {"kubernetes.io/metadata.name": self.hub_namespace}}
        ingress_from = [{"namespaceSelector": hub_ns, "podSelector": {"matchExpressions": [
            {"key": "app.kubernetes.io/component", "operator": "In",
             "values": ["hub", "proxy"]}]}}]
        egress_to = [{"namespaceSelector": hub_ns, "podSelector": {"matchExpressions": [
            {"key": "app.kubernetes.io/component", "operator": "In",
             "values": list(self.egress_components)}]}}]
        policy: dict[str, Any] = {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": SANDBOX_POLICY, "namespace": self.namespace(spec)},
            "spec": {
                "podSelector": copy.deepcopy(SANDBOX_SELECTOR),
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": ingress_from,
                             "ports": [{"protocol": "TCP", "port": spec.port or 8888}]}],
                "egress": [],
            },
        }
        if self.allow_dns:
            policy["spec"]["egress"].append({
                "to": [{"namespaceSelector": {"matchLabels": {
                    "kubernetes.io/metadata.name": "kube-system"}},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
            })
        if spec.allowed_ports:
            policy["spec"]["egress"].append({
                "to": egress_to,
                "ports": [{"protocol": "TCP", "port": p} for p in sorted(set(spec.allowed_ports))],
            })
        return policy

    def one_shot_policy(self, slug: str) -> dict[str, Any]:
        """The project's one-shot pods (batch runs' Jobs), both directions, no rule: no
        traffic at all, as a one-shot run has on the local and docker backends."""
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": ONE_SHOT_POLICY, "namespace": self.namespace(slug)},
            "spec": {"podSelector": copy.deepcopy(ONE_SHOT_SELECTOR),
                     "policyTypes": ["Ingress", "Egress"]},
        }

    def resource_quota(self, slug: str, quota: Any) -> dict[str, Any]:
        n = self.max_sandboxes
        return {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "ecluse-quota", "namespace": self.namespace(slug)},
            "spec": {"hard": {
                "pods": str(n),
                "limits.cpu": str(quota.cpu * n),
                "limits.memory": str(quota.memory * n),
                "requests.storage": str(quota.disk),
                "services": "0",
                "persistentvolumeclaims": "2",
                "services.loadbalancers": "0",
                "services.nodeports": "0",
            }},
        }

    def manifests(self, spec: SandboxSpec) -> list[dict[str, Any]]:
        """Namespace, NetworkPolicy and ResourceQuota of the spec's project."""
        return [self.namespace_manifest(spec.project.slug), self.network_policy(spec),
                self.resource_quota(spec.project.slug, spec.project.quota)]

    def host_address(self) -> str:
        return self.hub_address or f"hub.{self.hub_namespace}.svc.cluster.local"


    def reach_address(self) -> str | None:
        """Sandboxes reach the hub side (hub API, airlock) through the hub's Service."""
        return self.host_address()

    def prepare_project_dirs(self, project: Any, user: UserIdentity) -> ProjectPaths:
        raise SandboxError(
            "on Kubernetes the project folder and the homes are PersistentVolumeClaims of the "
            "project's namespace, created when a sandbox is launched: there is no host path")

    # ------------------------------------------------------- project objects

    def limit_range(self, slug: str, quota: Any) -> dict[str, Any]:
        """Defaults and ceilings of one container in the project's namespace (a pod
        submitted without limits gets the project's, one above them is refused)."""
        return {
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": {"name": "ecluse-limits", "namespace": self.namespace(slug)},
            "spec": {"limits": [{
                "type": "Container",
                "max": {"cpu": str(quota.cpu), "memory": str(quota.memory)},
                "default": {"cpu": str(quota.cpu), "memory": str(quota.memory)},
                "defaultRequest": {"cpu": "100m", "memory": str(min(quota.memory, 256 * 2**20))},
            }]},
        }

    def claims(self, spec: SandboxSpec) -> list[dict[str, Any]]:
        """The project folder's, the homes' and the inbox's claims (KubeSpawner's ``make_pvc``)."""
        from kubespawner.objects import make_pvc

        labels = {"app.kubernetes.io/managed-by": "ecluse",
                  "ecluse.io/project": spec.project.slug}
        out = []
        for name, size in ((self.shared_claim, str(spec.project.quota.disk)),
                           (self.home_claim, self.home_size),
                           (self.inbox_claim, self.inbox_size)):
            pvc = make_pvc(name, self.storage_class or None, [self.access_mode], None, size,
                           labels=labels)
            pvc.metadata.namespace = self.namespace(spec)
            out.append(self._dict(pvc))
        return out

    def project_objects(self, spec: SandboxSpec) -> list[dict[str, Any]]:
        """Everything a project's namespace holds besides its pods, in creation order."""
        slug, quota = spec.project.slug, spec.project.quota
        rq = self.resource_quota(slug, quota)
        hard = rq["spec"]["hard"]
        hard["persistentvolumeclaims"] = str(3 + len(spec.project.datasets) + self.extra_claims)
        # the project folder's claim (the quota's disk), the homes claim and the inbox claim
        hard["requests.storage"] = str(quota.disk + parse_size(self.home_size)
                                       + parse_size(self.inbox_size))
        dask = dask_network_policy(slug, hub_namespace=self.hub_namespace,
                                   namespace_template=self.namespace_template)
        return [self.namespace_manifest(slug), self.network_policy(spec),
                self.one_shot_policy(slug), dask, rq,
                self.limit_range(slug, quota), *self.claims(spec), *self.config_maps(spec)]

    # ---------------------------------------------------------------- pods

    @staticmethod
    def _dict(obj: Any) -> Any:
        """A ``kubernetes_asyncio`` model as the API's JSON (camelCase, no None), as its
        ``ApiClient.sanitize_for_serialization`` does, without a client (and its loop)."""
        if obj is None or isinstance(obj, (str, int, float, bool)):
            return obj
        if isinstance(obj, (list, tuple)):
            return [KubernetesSandbox._dict(o) for o in obj]
        if isinstance(obj, dict):
            return {k: KubernetesSandbox._dict(v) for k, v in obj.items()}
        if hasattr(obj, "isoformat"):
            return obj.isoformat()
        return {obj.attribute_map[a]: KubernetesSandbox._dict(getattr(obj, a))
                for a in obj.openapi_types if getattr(obj, a) is not None}

    def _labels(self, spec: SandboxSpec, sandbox_id: str, one_shot: bool) -> dict[str, str]:
        return {**self.pod_labels(spec), "ecluse.io/sandbox": spec.name or "workspace",
                "ecluse.io/sandbox-id": sandbox_id, "ecluse.io/backend": "kubernetes",
                ONE_SHOT_LABEL: "1" if one_shot else "0"}

    def build_pod(self, spec: SandboxSpec, sandbox_id: str, *,
                  one_shot: bool = False) -> dict[str, Any]:
        """The sandbox's ``v1/Pod``, built by KubeSpawner's ``make_pod`` from
        :meth:`kubespawner_config` (the same values a hub running KubeSpawner uses)."""
        from kubespawner.objects import make_pod

        c = self.kubespawner_config(spec)
        env = dict(c["environment"])
        pod = make_pod(
            name=f"ecluse-{sandbox_id}", cmd=c["cmd"], port=c["port"], image=c["image"],
            image_pull_policy=self.image_pull_policy,
            uid=c["uid"], gid=c["gid"], supplemental_gids=c["supplemental_gids"] or None,
            privileged=False, allow_privilege_escalation=False,
            container_security_context=c["container_security_context"],
            pod_security_context=c["pod_security_context"],
            env=env, working_dir=c["working_dir"],
            volumes=c["volumes"], volume_mounts=c["volume_mounts"],
            labels=self._labels(spec, sandbox_id, one_shot),
            annotations={"ecluse.io/allowed-ports": ",".join(
                str(p) for p in sorted(set(spec.allowed_ports)))},
            # quantities as strings: the API's models type them so (KubeSpawner passes
            # its traits through as they are)
            cpu_limit=str(c["cpu_limit"]), cpu_guarantee=str(c["cpu_guarantee"]),
            mem_limit=str(c["mem_limit"]), mem_guarantee=str(c["mem_guarantee"]),
            automount_service_account_token=False,
            extra_pod_config={**c["extra_pod_config"], "restartPolicy": "Never",
                              # what the kubelet waits between SIGTERM and SIGKILL when
                              # the pod goes without an explicit grace (a Job's garbage)
                              "terminationGracePeriodSeconds": int(
                                  self.settings.sandbox.stop_grace if self.settings else 10)},
            node_selector=self.node_selector or None,
        )
        pod.metadata.namespace = c["namespace"]
        out = self._dict(pod)
        if not spec.port:
            out["spec"]["containers"][0].pop("ports", None)
        return out

    def build_job(self, spec: SandboxSpec, sandbox_id: str) -> dict[str, Any]:
        """A one-shot run (batch notebook, …) as a ``batch/v1`` Job: the sandbox pod as its
        template, run once (no retry), its pods kept until :meth:`release`."""
        pod = self.build_pod(spec, sandbox_id, one_shot=True)
        meta = pod["metadata"]
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"],
                         "labels": dict(meta["labels"]),
                         "annotations": dict(meta.get("annotations") or {})},
            "spec": {
                "backoffLimit": 0,
                "completions": 1,
                "parallelism": 1,
                "template": {"metadata": {"labels": dict(meta["labels"])},
                             "spec": pod["spec"]},
            },
        }

    def check(self, spec: SandboxSpec, objects: list[dict[str, Any]]) -> None:
        """Refuse (SandboxError) to submit an object that would not isolate the sandbox."""
        ns, slug = self.namespace(spec), spec.project.slug
        problems: list[str] = []
        by_kind = {o["kind"]: o for o in objects if o["kind"] != "NetworkPolicy"}
        # the Dask pods' own policy (ecluse-dask) is dask_network_policy's
        policies = {o["metadata"]["name"]: o for o in objects if o["kind"] == "NetworkPolicy"}
        for o in objects:
            if o["kind"] in ("Pod", "Job"):
                problems += pod_problems(o, namespace=ns, project=slug)
        if policies:
            # together or not at all: one-shot pods left out of the workspaces' policy
            # and selected by no other would have the whole network
            if SANDBOX_POLICY in policies:
                problems += network_policy_problems(
                    policies[SANDBOX_POLICY], namespace=ns,
                    hub_namespaces={self.hub_namespace}, allow_dns=self.allow_dns)
            else:
                problems.append(f"no NetworkPolicy {SANDBOX_POLICY}")
            problems += one_shot_policy_problems(policies.get(ONE_SHOT_POLICY), namespace=ns)
        if "ResourceQuota" in by_kind:
            problems += quota_problems(by_kind["ResourceQuota"], by_kind["LimitRange"],
                                       namespace=ns)
        if problems:
            raise SandboxError("the workspace could not be started: its Kubernetes objects "
                               "would not isolate it",
                               log_message="kubernetes objects refused: " + "; ".join(problems))

    # ------------------------------------------------------------- the API

    @contextlib.asynccontextmanager
    async def api(self) -> AsyncIterator[Any]:
        """An API client from ``kubeconfig`` (else the pod's service account)."""
        from kubernetes_asyncio import client, config

        cfg = client.Configuration()
        try:
            if self.kubeconfig:
                await config.load_kube_config(config_file=self.kubeconfig,
                                              context=self.context or None,
                                              client_configuration=cfg)
            else:
                config.load_incluster_config(client_configuration=cfg)
        except Exception as e:
            raise SandboxError("the Kubernetes API is unavailable",
                               log_message=f"kubernetes configuration: {e}") from e
        async with client.ApiClient(configuration=cfg) as api:
            yield api
        await asyncio.sleep(0)  # aiohttp closes the pool's sockets on the next turn

    async def _call(self, fn: Any, *args: Any, missing_ok: bool = False,
                    conflict_ok: bool = False, **kw: Any) -> Any:
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            return await asyncio.wait_for(fn(*args, _request_timeout=self.api_timeout, **kw),
                                          self.api_timeout + 5)
        except ApiException as e:
            if (e.status == 404 and missing_ok) or (e.status == 409 and conflict_ok):
                return None
            raise SandboxError("the Kubernetes API refused a request",
                               log_message=f"{fn.__name__}: {e.status} {e.reason}: "
                               f"{(e.body or '')[:500]}") from e
        except (TimeoutError, OSError) as e:
            raise SandboxError("the Kubernetes API is unavailable",
                               log_message=f"{fn.__name__}: {type(e).__name__}: {e}") from e

    async def _apply_project(self, api: Any, spec: SandboxSpec) -> None:
        """Create the project's namespace, policy, quota, limits and claims; put the policy,
        quota and limits back as Écluse makes them when they were changed."""
        from kubernetes_asyncio import client

        core, net = client.CoreV1Api(api), client.NetworkingV1Api(api)
        ns = self.namespace(spec)
        for obj in self.project_objects(spec):
            kind, name = obj["kind"], obj["metadata"]["name"]
            if kind == "Namespace":
                if await self._call(core.read_namespace, name, missing_ok=True) is None:
                    await self._call(core.create_namespace, obj, conflict_ok=True)
                continue
            create, replace = {
                "NetworkPolicy": (net.create_namespaced_network_policy,
                                  net.replace_namespaced_network_policy),
                "ResourceQuota": (core.create_namespaced_resource_quota,
                                  core.replace_namespaced_resource_quota),
                "LimitRange": (core.create_namespaced_limit_range,
                               core.replace_namespaced_limit_range),
                "PersistentVolumeClaim": (core.create_namespaced_persistent_volume_claim, None),
                "ConfigMap": (core.create_namespaced_config_map,
                              core.replace_namespaced_config_map),
            }[kind]
            made = await self._call(create, ns, obj, conflict_ok=True)
            if made is None and replace is not None:
                await self._call(replace, name, ns, obj)
        for ds in spec.project.datasets:
            claim = self.dataset_claim_template.format(dataset=ds.name)
            if await self._call(core.read_namespaced_persistent_volume_claim, claim, ns,
                                missing_ok=True) is None:
                raise SandboxError(
                    f"dataset {ds.name} of project {spec.project.slug} is unavailable",
                    log_message=f"dataset {ds.name}: claim {ns}/{claim} does not exist "
                    "(the operator binds each dataset's volume to it, read-only)")

    async def launch(self, spec: SandboxSpec, *, one_shot: bool = False) -> dict[str, Any]:
        """Apply the project's objects, then create the sandbox's pod (a Job when
        ``one_shot``); a long-running pod is waited for until it runs with an address."""
        from kubernetes_asyncio import client

        t0 = time.monotonic()
        sandbox_id = "k" + secrets.token_hex(5)
        ns = self.namespace(spec)
        body = self.build_job(spec, sandbox_id) if one_shot else self.build_pod(spec, sandbox_id)
        self.check(spec, [*self.project_objects(spec), body])
        state: dict[str, Any] = {
            "backend": "kubernetes", "id": sandbox_id, "namespace": ns,
            "pod": None if one_shot else body["metadata"]["name"],
            "job": body["metadata"]["name"] if one_shot else None,
            "project": spec.project.slug, "user": spec.user.name, "uid": spec.user.uid,
            "name": spec.name, "one_shot": one_shot, "phase": "starting",
            "created": time.time(), "ip": None, "port": spec.port,
            "allowed_ports": sorted(set(spec.allowed_ports)),
        }
        try:
            async with self.api() as api:
                await self._apply_project(api, spec)
                if one_shot:
                    await self._call(client.BatchV1Api(api).create_namespaced_job, ns, body)
                else:
                    await self._call(client.CoreV1Api(api).create_namespaced_pod, ns, body)
                    await self._wait_running(api, state)
        except BaseException as e:
            self.log.error("sandbox %s for %s/%s failed to start: %s", sandbox_id,
                           spec.project.slug, spec.user.name, getattr(e, "log_message", e))
            with contextlib.suppress(Exception):
                await self.release(state)
            if isinstance(e, (SandboxError, asyncio.CancelledError, KeyboardInterrupt)):
                raise
            raise SandboxError("the workspace could not be started",
                               log_message=f"{type(e).__name__}: {e}") from e
        state["phase"] = "running"
        state["start_seconds"] = round(time.monotonic() - t0, 4)
        self.log.info("sandbox %s (%s %s/%s) started for %s at %s (%.0f ms)", sandbox_id,
                      "job" if one_shot else "pod", ns, state["job"] or state["pod"],
                      spec.user.name, state["ip"], 1000 * state["start_seconds"])
        return state

    async def _wait_running(self, api: Any, state: dict[str, Any]) -> None:
        from kubernetes_asyncio import client

        core = client.CoreV1Api(api)
        deadline = time.monotonic() + self.start_timeout
        interval = 0.05
        while True:
            pod = await self._call(core.read_namespaced_pod, state["pod"], state["namespace"],
                                   missing_ok=True)
            if pod is None:
                raise SandboxError("the workspace was removed while it started",
                                   log_message=f"pod {state['namespace']}/{state['pod']} gone")
            status = pod.status
            if status.phase in ("Succeeded", "Failed"):
                state["exit_code"] = self._exit_code(state, self._dict(pod))
                raise SandboxError(
                    "the workspace stopped while it started",
                    log_message=f"pod {state['pod']} {status.phase} "
                    f"(exit {state['exit_code']})")
            if status.phase == "Running" and status.pod_ip:
                state["ip"] = status.pod_ip
                state["node"] = pod.spec.node_name
                return
            if time.monotonic() >= deadline:
                raise SandboxError(
                    "the workspace did not start in time",
                    log_message=f"pod {state['pod']} still {status.phase} after "
                    f"{self.start_timeout:.0f} s")
            await asyncio.sleep(interval)
            interval = min(interval * 2, 1.0)

    # ------------------------------------------------------------------ poll

    @staticmethod
    def _exit_code(state: dict[str, Any], pod: dict[str, Any]) -> int | None:
        st = pod.get("status") or {}
        if st.get("phase") not in ("Succeeded", "Failed"):
            return None
        for cs in st.get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated")
            if term:
                if term.get("reason") == "OOMKilled":
                    state["oom_killed"] = True
                    return 137
                return int(term.get("exitCode", 1))
        return 0 if st["phase"] == "Succeeded" else 1

    async def _job_pod(self, api: Any, state: dict[str, Any]) -> dict[str, Any] | None:
        from kubernetes_asyncio import client

        pods = await self._call(client.CoreV1Api(api).list_namespaced_pod, state["namespace"],
                                label_selector=f"job-name={state['job']}")
        items = self._dict(pods).get("items") or [] if pods else []
        return items[-1] if items else None

    async def _pod(self, api: Any, state: dict[str, Any]) -> dict[str, Any] | None:
        from kubernetes_asyncio import client

        if state.get("job"):
            return await self._job_pod(api, state)
        pod = await self._call(client.CoreV1Api(api).read_namespaced_pod, state["pod"],
                               state["namespace"], missing_ok=True)
        return None if pod is None else self._dict(pod)

    async def poll(self, state: dict[str, Any]) -> int | None:
        if state.get("released"):
            return state.get("exit_code", 0)
        async with self.api() as api:
            pod = await self._pod(api, state)
        if pod is None:
            if state.get("job") and not state.get("killed") and "exit_code" not in state:
                return None  # the Job's pod is not made yet
            return state.get("exit_code", 143 if state.get("killed") else 0)
        status = self._exit_code(state, pod)
        if status is not None:
            state["exit_code"] = status
        return status

    # ------------------------------------------------------------------ stop

    async def terminate(self, state: dict[str, Any], grace: float | None = None) -> None:
        """Delete the pod (the kubelet sends SIGTERM, then SIGKILL after ``grace``)."""
        from kubernetes_asyncio import client

        if grace is None:
            grace = self.settings.sandbox.stop_grace if self.settings else 3.0
        if state.get("released"):
            return
        async with self.api() as api:
            pod = await self._pod(api, state)
            if pod is None or self._exit_code(state, pod) is not None:
                if pod is not None:
                    state["exit_code"] = self._exit_code(state, pod)
                return
            if state.get("one_shot") and "logs" not in state:
                state["logs"] = list(await self._logs(api, state, pod))
            if state.get("job"):
                # the Job first (its pod orphaned), so that no controller replaces the pod
                await self._call(client.BatchV1Api(api).delete_namespaced_job, state["job"],
                                 state["namespace"], propagation_policy="Orphan",
                                 missing_ok=True)
            await self._call(client.CoreV1Api(api).delete_namespaced_pod,
                             pod["metadata"]["name"], state["namespace"],
                             grace_period_seconds=int(max(0, grace)), missing_ok=True)
            state["killed"] = True
            # deletion is asynchronous: wait for the kubelet (SIGTERM, the grace, SIGKILL)
            # so that release does not cut the grace short
            deadline = time.monotonic() + grace + 10
            while time.monotonic() < deadline:
                pod = await self._pod(api, state)
                if pod is None or self._exit_code(state, pod) is not None:
                    break
                await asyncio.sleep(0.5)

    async def release(self, state: dict[str, Any]) -> None:
        """Delete the pod or the Job (and its pods); the project's objects stay. Idempotent."""
        from kubernetes_asyncio import client

        async with self.api() as api:
            core = client.CoreV1Api(api)
            pod = await self._pod(api, state)
            if pod is not None:
                status = self._exit_code(state, pod)
                if status is not None and "exit_code" not in state:
                    state["exit_code"] = status
                if state.get("one_shot") and "logs" not in state:
                    with contextlib.suppress(SandboxError):
                        state["logs"] = list(await self._logs(api, state, pod))
            if state.get("job"):
                await self._call(client.BatchV1Api(api).delete_namespaced_job, state["job"],
                                 state["namespace"], propagation_policy="Background",
                                 grace_period_seconds=0, missing_ok=True)
                await self._call(core.delete_collection_namespaced_pod, state["namespace"],
                                 label_selector=f"job-name={state['job']}",
                                 grace_period_seconds=0)
            elif state.get("pod"):
                await self._call(core.delete_namespaced_pod, state["pod"], state["namespace"],
                                 grace_period_seconds=0, missing_ok=True)
        state["released"] = True
        self.log.info("sandbox %s removed (exit %s)", state["id"], state.get("exit_code"))

    # ------------------------------------------------------------------ logs

    async def _logs(self, api: Any, state: dict[str, Any],
                    pod: dict[str, Any]) -> tuple[str, str]:
        """The pod's log. Kubernetes keeps one stream: stdout and stderr interleaved, all
        in the first element."""
        from kubernetes_asyncio import client

        text = await self._call(client.CoreV1Api(api).read_namespaced_pod_log,
                                pod["metadata"]["name"], state["namespace"],
                                limit_bytes=self.max_log_bytes, missing_ok=True)
        return (text or "", "")

    async def read_logs(self, state: dict[str, Any]) -> tuple[str, str]:
        if state.get("logs"):
            return tuple(state["logs"])  # type: ignore[return-value]
        async with self.api() as api:
            pod = await self._pod(api, state)
            if pod is None:
                return "", ""
            return await self._logs(api, state, pod)

    # ------------------------------------------------------------ operations

    async def list_async(self) -> list[dict[str, Any]]:
        """Every Écluse sandbox pod of the cluster, as states rebuilt from its labels, with
        ``alive`` set. A restarted hub finds its sandboxes here."""
        from kubernetes_asyncio import client

        async with self.api() as api:
            pods = await self._call(client.CoreV1Api(api).list_pod_for_all_namespaces,
                                    label_selector="ecluse.io/backend=kubernetes")
            items = self._dict(pods).get("items") or []
        out = []
        for pod in items:
            meta, lab = pod["metadata"], pod["metadata"].get("labels") or {}
            one_shot = lab.get("ecluse.io/one-shot") == "1"
            ports = (meta.get("annotations") or {}).get("ecluse.io/allowed-ports", "")
            ctr = ((pod.get("spec") or {}).get("containers") or [{}])[0]
            st = {
                "backend": "kubernetes", "id": lab.get("ecluse.io/sandbox-id", ""),
                "namespace": meta["namespace"],
                "pod": None if one_shot else meta["name"],
                "job": lab.get("job-name") if one_shot else None,
                "project": lab.get("ecluse.io/project"), "user": lab.get("ecluse.io/user"),
                "name": lab.get("ecluse.io/sandbox"), "one_shot": one_shot,
                "ip": (pod.get("status") or {}).get("podIP"),
                "port": next((p["containerPort"] for p in ctr.get("ports") or []), None),
                "allowed_ports": [int(p) for p in ports.split(",") if p],
                "phase": "running",
            }
            st["alive"] = (pod.get("status") or {}).get("phase") in (None, "Pending", "Running")
            out.append(st)
        return out

    def list(self) -> list[dict[str, Any]]:
        """:meth:`list_async` for synchronous callers (the spawner runs it in a thread)."""
        return asyncio.run(self.list_async())

    def adopt(self, project: str, user: str, name: str = "workspace") -> dict[str, Any] | None:
        """The state of the running sandbox of ``user`` in ``project`` (after a hub
        restart without its saved state), or None."""
        for st in self.list():
            if (st.get("project"), st.get("user"), st.get("name") or "workspace") == (
                    project, user, name or "workspace") and st["alive"]:
                return st
        return None
