"""The isolation properties of the Kubernetes objects Écluse submits, checked on the objects.

Pure functions on manifests (dicts in the API's camelCase form). Each returns
the list of what is wrong (empty: the object keeps the sandbox isolated). The
kubernetes backend runs them on every object before submitting it and refuses
to launch on any finding (fail closed); the tests run them on objects altered
the way an attacker or a careless operator would.

* :func:`pod_problems` — a sandbox pod (or a Job's pod template): non-root
  user, every capability dropped, no privilege escalation, ``RuntimeDefault``
  seccomp, read-only root filesystem, no service-account token, no host
  namespaces or host paths, data volumes read-only, the labels the project's
  NetworkPolicy selects and re-adoption needs, in the project's namespace.
* :func:`network_policy_problems` — the project's NetworkPolicy: both
  directions, selects every sandbox pod, peers only in the hub side's
  namespace (hub, proxy, airlock, gateway), no ``ipBlock``, no peer in the
  project's own namespace (pods of a project never reach each other), and
  one-shot pods left out of its selection;
* :func:`one_shot_policy_problems` — the project's ``ecluse-one-shot``
  NetworkPolicy: every one-shot pod (a batch run's Job), both directions, no
  rule (no network at all, as a one-shot run has on the other backends).
* :func:`quota_problems` — the ResourceQuota and LimitRange of a project.
"""

from __future__ import annotations

from typing import Any

COMPONENT = "ecluse-sandbox"
#: the label of a one-shot run's pod (a Job's: batch runs): ``"1"``, else ``"0"``
ONE_SHOT_LABEL = "ecluse.io/one-shot"
#: the name of the project's NetworkPolicy of its workspaces
SANDBOX_POLICY = "ecluse-sandboxes"
#: the name of the project's NetworkPolicy of its one-shot pods (deny all)
ONE_SHOT_POLICY = "ecluse-one-shot"
#: what leaves one-shot pods out of the workspaces' policy (a pod without the label
#: stays selected: ``NotIn`` matches a missing label)
ONE_SHOT_EXCLUDED = {"key": ONE_SHOT_LABEL, "operator": "NotIn", "values": ["1"]}
#: the workspaces' policy's podSelector: sandbox pods but one-shot ones
SANDBOX_SELECTOR = {"matchLabels": {"app.kubernetes.io/component": COMPONENT},
                    "matchExpressions": [ONE_SHOT_EXCLUDED]}
#: the one-shot policy's podSelector
ONE_SHOT_SELECTOR = {"matchLabels": {ONE_SHOT_LABEL: "1"}}
#: labels every sandbox pod carries: the NetworkPolicy selects on the first; a
#: restarted hub finds its pods by the others
REQUIRED_LABELS = ("app.kubernetes.io/component", "ecluse.io/project", "ecluse.io/user",
                   "ecluse.io/sandbox-id", "ecluse.io/backend")


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or []),
            *(spec.get("ephemeralContainers") or [])]


def pod_problems(pod: dict[str, Any], *, namespace: str, project: str) -> list[str]:
    """What keeps ``pod`` (a ``v1/Pod``, or a Job whose template is checked) from being
    an isolated sandbox of ``project`` in ``namespace``."""
    out: list[str] = []
    if pod.get("kind") == "Job":
        meta = pod.get("metadata") or {}
        if meta.get("namespace") != namespace:
            out.append(f"job in namespace {meta.get('namespace')!r}, not {namespace!r}")
        tmpl = ((pod.get("spec") or {}).get("template")) or {}
        if ((pod.get("spec") or {}).get("backoffLimit")) != 0:
            out.append("job retries a failed run (backoffLimit must be 0)")
        pod = {"kind": "Pod", "metadata": {**(tmpl.get("metadata") or {}),
                                           "namespace": meta.get("namespace")},
               "spec": tmpl.get("spec") or {}}
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    labels = meta.get("labels") or {}
    if meta.get("namespace") != namespace:
        out.append(f"pod in namespace {meta.get('namespace')!r}, not {namespace!r}")
    for key in REQUIRED_LABELS:
        if not labels.get(key):
            out.append(f"label {key} missing")
    if labels.get("app.kubernetes.io/component", COMPONENT) != COMPONENT:
        out.append(f"label app.kubernetes.io/component is not {COMPONENT!r}: the project's "
                   "NetworkPolicy would not select the pod")
    if labels.get("ecluse.io/project", project) != project:
        out.append(f"label ecluse.io/project {labels['ecluse.io/project']!r} is not {project!r}")
    if spec.get("automountServiceAccountToken") is not False:
        out.append("the service-account token is mounted (automountServiceAccountToken "
                   "must be false)")
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            out.append(f"{key} is on")
    if spec.get("restartPolicy") not in ("Never",):
        out.append(f"restartPolicy {spec.get('restartPolicy')!r}: a sandbox runs once")
    psc = spec.get("securityContext") or {}
    if psc.get("runAsNonRoot") is not True:
        out.append("pod securityContext.runAsNonRoot is not true")
    if not isinstance(psc.get("runAsUser"), int) or psc["runAsUser"] < 1000:
        out.append(f"pod securityContext.runAsUser {psc.get('runAsUser')!r} is not a user "
                   "account (>= 1000)")
    if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        out.append("pod seccompProfile is not RuntimeDefault")
    if spec.get("hostUsers") is True:
        out.append("hostUsers is on")
    readonly_claims = set()
    for vol in spec.get("volumes") or []:
        if "hostPath" in vol:
            out.append(f"volume {vol.get('name')!r} is a hostPath")
        pvc = vol.get("persistentVolumeClaim")
        if pvc and vol.get("name", "").startswith("data-"):
            if pvc.get("readOnly") is not True:
                out.append(f"data volume {vol['name']!r}: claim not read-only")
            readonly_claims.add(vol["name"])
    for c in _containers(spec):
        name = c.get("name")
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            out.append(f"container {name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"container {name}: allowPrivilegeEscalation is not false")
        if sc.get("readOnlyRootFilesystem") is not True:
            out.append(f"container {name}: root filesystem writable")
        if sc.get("runAsNonRoot") is False or sc.get("runAsUser") == 0:
            out.append(f"container {name}: may run as root")
        caps = sc.get("capabilities") or {}
        if caps.get("drop") != ["ALL"]:
            out.append(f"container {name}: capabilities not dropped (drop must be [ALL])")
        if caps.get("add"):
            out.append(f"container {name}: capabilities added: {caps['add']}")
        prof = (sc.get("seccompProfile") or {}).get("type")
        if prof not in (None, "RuntimeDefault"):
            out.append(f"container {name}: seccomp profile {prof}")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                out.append(f"container {name}: hostPort {port['hostPort']}")
        for m in c.get("volumeMounts") or []:
            if m.get("name") in readonly_claims and m.get("readOnly") is not True:
                out.append(f"container {name}: data mount {m.get('mountPath')} not read-only")
        limits = (c.get("resources") or {}).get("limits") or {}
        if not limits.get("memory") or not limits.get("cpu"):
            out.append(f"container {name}: no cpu or memory limit")
    return out


def _peer_problems(peers: list[dict[str, Any]], *, hub_namespaces: set[str],
                   namespace: str, direction: str) -> list[str]:
    out = []
    for peer in peers:
        if "ipBlock" in peer:
            out.append(f"{direction}: an ipBlock peer ({peer['ipBlock'].get('cidr')})")
            continue
        ns_sel = peer.get("namespaceSelector")
        if ns_sel is None:
            out.append(f"{direction}: a peer in the project's own namespace {namespace!r} "
                       "(pods of a project must not reach each other)")
            continue
        names = set((ns_sel.get("matchLabels") or {}).get("kubernetes.io/metadata.name", "")
                    .split()) if ns_sel.get("matchLabels") else set()
        if ns_sel.get("matchExpressions") or not names:
            out.append(f"{direction}: a namespaceSelector that is not one named namespace")
            continue
        if not names <= hub_namespaces:
            out.append(f"{direction}: namespace {sorted(names)} is not the hub side's "
                       f"({sorted(hub_namespaces)})")
        if not peer.get("podSelector") or peer["podSelector"] == {}:
            out.append(f"{direction}: every pod of {sorted(names)} is allowed (no podSelector)")
    return out


def network_policy_problems(policy: dict[str, Any], *, namespace: str,
                            hub_namespaces: set[str], allow_dns: bool = False) -> list[str]:
    """What lets a sandbox of ``namespace`` reach, or be reached by, anything but the hub
    side (pods of ``hub_namespaces``)."""
    out: list[str] = []
    meta = policy.get("metadata") or {}
    spec = policy.get("spec") or {}
    if policy.get("kind") != "NetworkPolicy":
        return [f"not a NetworkPolicy: {policy.get('kind')!r}"]
    if meta.get("namespace") != namespace:
        out.append(f"policy in namespace {meta.get('namespace')!r}, not {namespace!r}")
    if sorted(spec.get("policyTypes") or []) != ["Egress", "Ingress"]:
        out.append(f"policyTypes {spec.get('policyTypes')}: both Ingress and Egress needed "
                   "(a direction left out is open)")
    sel = spec.get("podSelector")
    if not isinstance(sel, dict):
        out.append(f"podSelector {sel} does not select every sandbox pod")
    else:
        exprs = sel.get("matchExpressions") or []
        others = [e for e in exprs if e != ONE_SHOT_EXCLUDED]
        rest = {k: v for k, v in sel.items() if k != "matchExpressions"}
        if others:
            rest["matchExpressions"] = others
        if len(others) == len(exprs):
            out.append(f"podSelector {sel} does not leave one-shot pods out (label "
                       f"{ONE_SHOT_LABEL} NotIn [1]): they have no network, only "
                       f"{ONE_SHOT_POLICY} may select them")
        if rest not in ({}, {"matchLabels": {"app.kubernetes.io/component": COMPONENT}}):
            out.append(f"podSelector {sel} does not select every sandbox pod")
    for rule in spec.get("ingress") or []:
        if not rule.get("from"):
            out.append("ingress: a rule without 'from' (open to every source)")
        out += _peer_problems(rule.get("from") or [], hub_namespaces=hub_namespaces,
                              namespace=namespace, direction="ingress")
    for rule in spec.get("egress") or []:
        dns = allow_dns and all(
            (p.get("namespaceSelector") or {}).get("matchLabels") == {
                "kubernetes.io/metadata.name": "kube-system"} for p in rule.get("to") or [{}]
        ) and {p.get("port") for p in rule.get("ports") or []} == {53}
        if dns:
            continue
        if not rule.get("to"):
            out.append("egress: a rule without 'to' (open to every destination)")
        out += _peer_problems(rule.get("to") or [], hub_namespaces=hub_namespaces,
                              namespace=namespace, direction="egress")
        if not rule.get("ports"):
            out.append("egress: a rule without ports (every port of the peer)")
    return out


def one_shot_policy_problems(policy: dict[str, Any] | None, *, namespace: str) -> list[str]:
    """What lets a one-shot pod of ``namespace`` send or receive anything: the policy
    must select every one-shot pod, in both directions, with no rule (none: one-shot pods,
    left out of the workspaces' policy, would be selected by no policy — open)."""
    if policy is None:
        return [f"no NetworkPolicy {ONE_SHOT_POLICY} in {namespace!r}: one-shot pods "
                "would have the network"]
    if policy.get("kind") != "NetworkPolicy":
        return [f"{ONE_SHOT_POLICY}: not a NetworkPolicy: {policy.get('kind')!r}"]
    meta = policy.get("metadata") or {}
    spec = policy.get("spec") or {}
    out: list[str] = []
    if meta.get("namespace") != namespace:
        out.append(f"{ONE_SHOT_POLICY}: in namespace {meta.get('namespace')!r}, "
                   f"not {namespace!r}")
    if spec.get("podSelector") not in ({}, ONE_SHOT_SELECTOR):
        out.append(f"{ONE_SHOT_POLICY}: podSelector {spec.get('podSelector')} does not "
                   "select every one-shot pod")
    if sorted(spec.get("policyTypes") or []) != ["Egress", "Ingress"]:
        out.append(f"{ONE_SHOT_POLICY}: policyTypes {spec.get('policyTypes')}: both Ingress "
                   "and Egress needed (a direction left out is open)")
    if spec.get("ingress") or spec.get("egress"):
        out.append(f"{ONE_SHOT_POLICY}: it allows traffic (ingress or egress rules)")
    return out


def quota_problems(quota: dict[str, Any], limit_range: dict[str, Any], *,
                   namespace: str) -> list[str]:
    """What lets a project's namespace use more than its share."""
    out: list[str] = []
    hard = (quota.get("spec") or {}).get("hard") or {}
    for key in ("pods", "limits.cpu", "limits.memory", "requests.storage",
                "persistentvolumeclaims", "services.nodeports", "services.loadbalancers"):
        if key not in hard:
            out.append(f"ResourceQuota: no {key}")
    for key in ("services.nodeports", "services.loadbalancers"):
        if hard.get(key) not in (None, "0"):
            out.append(f"ResourceQuota: {key} = {hard[key]} (must be 0)")
    for obj in (quota, limit_range):
        if (obj.get("metadata") or {}).get("namespace") != namespace:
            out.append(f"{obj.get('kind')} not in namespace {namespace!r}")
    limits = (limit_range.get("spec") or {}).get("limits") or []
    container = [lim for lim in limits if lim.get("type") == "Container"]
    if not container or not container[0].get("max") or not container[0].get("default"):
        out.append("LimitRange: no Container max and default")
    return out
