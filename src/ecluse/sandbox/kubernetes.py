"""The ``kubernetes`` backend: the sandbox specification as KubeSpawner configuration.

No Kubernetes client is imported; every method is a pure function of the
specification:

* :meth:`KubernetesSandbox.kubespawner_config` — values for KubeSpawner
  traits (``namespace``, ``uid``, ``gid``, ``supplemental_gids``,
  ``volumes``, ``volume_mounts``, ``container_security_context``, limits...);
* :meth:`KubernetesSandbox.pod_manifest` — the same as a ``v1/Pod`` (batch
  runs, Dask workers);
* :meth:`KubernetesSandbox.namespace_manifest`,
  :meth:`KubernetesSandbox.network_policy` and
  :meth:`KubernetesSandbox.resource_quota` — the project namespace (Pod
  Security "restricted"), a NetworkPolicy that lets sandbox pods be reached
  from the hub and proxy only and reach only the hub API and airlock ports
  (no DNS, no other pod, no outside address), and a ResourceQuota.

Storage: each dataset is a read-only PersistentVolumeClaim, the project
folder one claim, the homes one claim mounted with ``subPath: <user>``, the project's
inbox of approved imports one claim mounted read-only at ``/project/inbox``
(claim names are templates, see the traits).
"""

from __future__ import annotations

from typing import Any

from traitlets import Bool, Dict, Integer, Unicode, default

from .base import INBOX_TARGET, Sandbox, SandboxSpec, sandbox_env

COMPONENT = "ecluse-sandbox"


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

    @default("image")
    def _image_default(self) -> str:
        return self.settings.sandbox.image if self.settings else "ecluse/workspace:0.1.0"

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
        return vols, mounts

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
        """Ingress from hub and proxy only; egress to the allowed hub/airlock ports only."""
        hub_ns = {"matchLabels": {"kubernetes.io/metadata.name": self.hub_namespace}}
        ingress_from = [{"namespaceSelector": hub_ns, "podSelector": {"matchExpressions": [
            {"key": "app.kubernetes.io/component", "operator": "In",
             "values": ["hub", "proxy"]}]}}]
        egress_to = [{"namespaceSelector": hub_ns, "podSelector": {"matchExpressions": [
            {"key": "app.kubernetes.io/component", "operator": "In",
             "values": ["hub", "airlock"]}]}}]
        policy: dict[str, Any] = {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "ecluse-sandboxes", "namespace": self.namespace(spec)},
            "spec": {
                "podSelector": {"matchLabels": {"app.kubernetes.io/component": COMPONENT}},
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

    async def launch(self, spec: SandboxSpec, *, one_shot: bool = False) -> dict[str, Any]:
        raise NotImplementedError(
            "the kubernetes backend only describes pods: configure KubeSpawner with "
            "KubernetesSandbox.kubespawner_config(spec) and apply manifests(spec)")
