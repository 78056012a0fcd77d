"""The kubernetes backend's objects: built with the real libraries, loaded into the API's
models, their isolation checked — and the checks caught on altered objects.

Every object Écluse would submit (pod, Job, NetworkPolicy, ResourceQuota,
LimitRange, claims, namespace) is built by the backend (KubeSpawner's
``make_pod``/``make_pvc`` underneath), loaded into the ``kubernetes`` client's
model (no unknown field, right types: :func:`tests.support.kubeapi.model_problems`),
and checked by :mod:`ecluse.sandbox.k8s_checks`. The attack cases alter one
property each, the way a careless operator or a hostile change would, and the
check must name it; the backend refuses to launch such an object. No cluster
is needed.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from ecluse.config import Dataset, LDAPSettings, Project, Quota, SandboxSettings, Settings
from ecluse.sandbox import SandboxError, SandboxSpec, UserIdentity
from ecluse.sandbox.k8s_checks import (
    network_policy_problems,
    one_shot_policy_problems,
    pod_problems,
    quota_problems,
)
from ecluse.sandbox.kubernetes import KubernetesSandbox
from tests.support.kubeapi import load_model, model_problems

NS = "ecluse-covid-los"
MODELS = {"Pod": "V1Pod", "Job": "V1Job", "NetworkPolicy": "V1NetworkPolicy",
          "ResourceQuota": "V1ResourceQuota", "LimitRange": "V1LimitRange",
          "PersistentVolumeClaim": "V1PersistentVolumeClaim", "Namespace": "V1Namespace"}


@pytest.fixture
def settings(tmp_path) -> Settings:
    ldap = LDAPSettings(uri="ldap://127.0.0.1:3890", base_dn="dc=t", bind_dn="cn=s,dc=t",
                        user_search_base="ou=p,dc=t", group_search_base="ou=g,dc=t")
    return Settings(state_dir=tmp_path / "state", ldap=ldap,
                    sandbox=SandboxSettings(projects_root=Path("/srv/ecluse/projects"),
                                            image="ecluse/workspace:1.2"))


@pytest.fixture
def spec() -> SandboxSpec:
    project = Project(slug="covid-los", title="LOS", ldap_group="p-covid", gid=7001,
                      datasets=[Dataset(name="stays", path=Path("/srv/data/stays")),
                                Dataset(name="icd_10", path=Path("/srv/data/icd"))],
                      quota=Quota(cpu=2, memory="4G", disk="50G", pids=256))
    return SandboxSpec(project, UserIdentity("alice", 5001, 5000),
                       ["jupyterhub-singleuser", "--port=8888"],
                       env={"JUPYTERHUB_USER": "alice"}, port=8888,
                       allowed_ports=[8081, 8082, 8786])


@pytest.fixture
def k(settings) -> KubernetesSandbox:
    return KubernetesSandbox(settings=settings)


def everything(k: KubernetesSandbox, spec: SandboxSpec) -> list[dict]:
    return [*k.project_objects(spec), k.build_pod(spec, "k0123456789"),
            k.build_job(spec, "k9876543210")]


def pod_check(pod: dict) -> list[str]:
    return pod_problems(pod, namespace=NS, project="covid-los")


def policy_check(pol: dict, **kw) -> list[str]:
    return network_policy_problems(pol, namespace=NS, hub_namespaces={"ecluse"}, **kw)


# ------------------------------------------------------------------ the models

def test_every_object_loads_into_the_api_models(k, spec):
    objs = everything(k, spec)
    assert [o["kind"] for o in objs] == [
        "Namespace", "NetworkPolicy", "NetworkPolicy", "NetworkPolicy", "ResourceQuota",
        "LimitRange", "PersistentVolumeClaim", "PersistentVolumeClaim", "PersistentVolumeClaim",
        "Pod", "Job"]
    assert [o["metadata"]["name"] for o in objs if o["kind"] == "NetworkPolicy"] == [
        "ecluse-sandboxes", "ecluse-one-shot", "ecluse-dask"]
    for obj in objs:
        model = load_model(obj, MODELS[obj["kind"]])
        assert model.metadata.name == obj["metadata"]["name"]
    pod = load_model(objs[-2], "V1Pod")
    ctr = pod.spec.containers[0]
    assert ctr.args == ["jupyterhub-singleuser", "--port=8888"]  # make_pod: the image's entrypoint
    assert ctr.security_context.capabilities.drop == ["ALL"]
    assert pod.spec.security_context.run_as_user == 5001
    assert pod.spec.security_context.supplemental_groups == [7001]
    assert pod.spec.automount_service_account_token is False
    assert pod.spec.restart_policy == "Never"
    job = load_model(objs[-1], "V1Job")
    assert job.spec.backoff_limit == 0
    assert job.spec.template.spec.containers[0].image == "ecluse/workspace:1.2"


def test_the_model_check_catches_unknown_fields_and_wrong_types(k, spec):
    """The schema check itself: a typo'd field, a string where a number goes, a list
    where a mapping goes, a missing required field — each named."""
    pod = k.build_pod(spec, "k0123456789")
    typo = copy.deepcopy(pod)
    typo["spec"]["securityContext"]["runAsNonroot"] = True
    assert model_problems(typo, "V1Pod") == [
        ".spec.securityContext.runAsNonroot: unknown field of V1PodSecurityContext"]
    wrong = copy.deepcopy(pod)
    wrong["spec"]["securityContext"]["runAsUser"] = "5001"
    assert model_problems(wrong, "V1Pod") == [
        ".spec.securityContext.runAsUser: '5001' is not int"]
    wrong = copy.deepcopy(pod)
    wrong["metadata"]["labels"] = ["ecluse.io/project=covid-los"]
    assert "expected a mapping" in model_problems(wrong, "V1Pod")[0]
    missing = copy.deepcopy(pod)
    del missing["spec"]["containers"]
    assert model_problems(missing, "V1Pod")  # containers is required
    with pytest.raises(AssertionError, match="runAsNonroot"):
        load_model(typo, "V1Pod")


# -------------------------------------------------------------- isolation: pods

def test_the_backend_objects_pass_every_check(k, spec):
    objs = {o["kind"]: o for o in everything(k, spec) if o["kind"] != "NetworkPolicy"}
    policies = {o["metadata"]["name"]: o for o in k.project_objects(spec)
                if o["kind"] == "NetworkPolicy"}
    assert pod_check(k.build_pod(spec, "k0123456789")) == []
    assert pod_check(objs["Job"]) == []
    assert policy_check(policies["ecluse-sandboxes"]) == []
    assert one_shot_policy_problems(policies["ecluse-one-shot"], namespace=NS) == []
    assert quota_problems(objs["ResourceQuota"], objs["LimitRange"], namespace=NS) == []
    pod = k.build_pod(spec, "k0123456789")
    sc = pod["spec"]["containers"][0]["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    data = [m for m in pod["spec"]["containers"][0]["volumeMounts"]
            if m["mountPath"].startswith("/data/")]
    assert [(m["mountPath"], m["readOnly"]) for m in data] == [
        ("/data/stays", True), ("/data/icd_10", True)]
    claims = {v["name"]: v["persistentVolumeClaim"] for v in pod["spec"]["volumes"]
              if "persistentVolumeClaim" in v}
    assert claims["project"] == {"claimName": "project-shared"}
    assert claims["data-stays"] == {"claimName": "data-stays", "readOnly": True}
    home = next(m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["name"] == "home")
    assert (home["mountPath"], home["subPath"]) == ("/home/alice", "alice")


POD_ATTACKS = [
    ("no policy label", lambda p: p["metadata"]["labels"].pop("app.kubernetes.io/component"),
     "label app.kubernetes.io/component missing"),
    ("another component", lambda p: p["metadata"]["labels"].update(
        {"app.kubernetes.io/component": "hub"}), "would not select the pod"),
    ("another project's label", lambda p: p["metadata"]["labels"].update(
        {"ecluse.io/project": "onco-surv"}), "is not 'covid-los'"),
    ("no re-adoption label", lambda p: p["metadata"]["labels"].pop("ecluse.io/sandbox-id"),
     "label ecluse.io/sandbox-id missing"),
    ("another namespace", lambda p: p["metadata"].update({"namespace": "ecluse"}),
     "not 'ecluse-covid-los'"),
    ("root", lambda p: p["spec"]["securityContext"].update({"runAsUser": 0}),
     "is not a user account"),
    ("runAsNonRoot off", lambda p: p["spec"]["securityContext"].pop("runAsNonRoot"),
     "runAsNonRoot is not true"),
    ("unconfined seccomp", lambda p: p["spec"]["securityContext"].update(
        {"seccompProfile": {"type": "Unconfined"}}), "seccompProfile is not RuntimeDefault"),
    ("container seccomp unconfined", lambda p: p["spec"]["containers"][0]["securityContext"]
     .update({"seccompProfile": {"type": "Unconfined"}}), "seccomp profile Unconfined"),
    ("a capability kept", lambda p: p["spec"]["containers"][0]["securityContext"].update(
        {"capabilities": {"drop": ["NET_RAW"]}}), "capabilities not dropped"),
    ("a capability added", lambda p: p["spec"]["containers"][0]["securityContext"][
        "capabilities"].update({"add": ["SYS_ADMIN"]}), "capabilities added"),
    ("privileged", lambda p: p["spec"]["containers"][0]["securityContext"].update(
        {"privileged": True}), "privileged"),
    ("escalation", lambda p: p["spec"]["containers"][0]["securityContext"].update(
        {"allowPrivilegeEscalation": True}), "allowPrivilegeEscalation is not false"),
    ("writable root", lambda p: p["spec"]["containers"][0]["securityContext"].update(
        {"readOnlyRootFilesystem": False}), "root filesystem writable"),
    ("token mounted", lambda p: p["spec"].pop("automountServiceAccountToken"),
     "service-account token is mounted"),
    ("host network", lambda p: p["spec"].update({"hostNetwork": True}), "hostNetwork is on"),
    ("host path", lambda p: p["spec"]["volumes"].append(
        {"name": "root", "hostPath": {"path": "/"}}), "is a hostPath"),
    ("data claim writable", lambda p: p["spec"]["volumes"][0]["persistentVolumeClaim"].pop(
        "readOnly"), "claim not read-only"),
    ("data mount writable", lambda p: p["spec"]["containers"][0]["volumeMounts"][0].update(
        {"readOnly": False}), "data mount /data/stays not read-only"),
    ("no memory limit", lambda p: p["spec"]["containers"][0]["resources"]["limits"].pop(
        "memory"), "no cpu or memory limit"),
    ("restarts", lambda p: p["spec"].update({"restartPolicy": "Always"}), "a sandbox runs once"),
    ("host port", lambda p: p["spec"]["containers"][0]["ports"][0].update(
        {"hostPort": 8888}), "hostPort 8888"),
    ("a root sidecar", lambda p: p["spec"]["containers"].append(
        {"name": "side", "image": "busybox", "securityContext": {"runAsUser": 0}}),
     "container side: may run as root"),
]


@pytest.mark.parametrize("what,alter,found", POD_ATTACKS, ids=[a[0] for a in POD_ATTACKS])
def test_an_altered_pod_is_caught(k, spec, what, alter, found):
    pod = k.build_pod(spec, "k0123456789")
    alter(pod)
    problems = pod_check(pod)
    assert any(found in p for p in problems), (what, problems)
    # the same alteration in a Job's template
    job = k.build_job(spec, "k0123456789")
    tmpl = {"metadata": {**job["spec"]["template"]["metadata"], "namespace": NS},
            "spec": job["spec"]["template"]["spec"]}
    alter(tmpl)
    job["spec"]["template"] = {"metadata": {"labels": tmpl["metadata"].get("labels", {})},
                               "spec": tmpl["spec"]}
    job["metadata"]["namespace"] = tmpl["metadata"]["namespace"]
    assert pod_check(job), what


def test_a_job_that_retries_is_caught(k, spec):
    job = k.build_job(spec, "k0123456789")
    job["spec"]["backoffLimit"] = 6
    assert pod_check(job) == ["job retries a failed run (backoffLimit must be 0)"]


async def test_the_backend_refuses_to_submit_an_altered_object(k, spec, tmp_path):
    """A subclass whose pods lose their policy label never reaches the API (its
    kubeconfig names no server: a submitted object would fail differently)."""

    class PodsWithoutPolicyLabel(KubernetesSandbox):
        def build_pod(self, spec, sandbox_id, *, one_shot=False):
            pod = super().build_pod(spec, sandbox_id, one_shot=one_shot)
            pod["metadata"]["labels"].pop("app.kubernetes.io/component")
            return pod

    bad = PodsWithoutPolicyLabel(settings=k.settings, kubeconfig=str(tmp_path / "none"))
    with pytest.raises(SandboxError, match="would not isolate it") as e:
        await bad.launch(spec)
    assert "label app.kubernetes.io/component missing" in e.value.log_message


# ----------------------------------------------------------- isolation: network

def test_the_policy_allows_only_the_hub_side(k, spec):
    pol = k.network_policy(spec)
    s = pol["spec"]
    assert s["policyTypes"] == ["Ingress", "Egress"]
    for rule, way in ((s["ingress"][0], "from"), (s["egress"][0], "to")):
        for peer in rule[way]:
            assert peer["namespaceSelector"] == {
                "matchLabels": {"kubernetes.io/metadata.name": "ecluse"}}
            assert peer["podSelector"]
    (eg,) = s["egress"]
    assert [p["port"] for p in eg["ports"]] == [8081, 8082, 8786]
    comps = eg["to"][0]["podSelector"]["matchExpressions"][0]["values"]
    assert comps == ["hub", "airlock", "gateway", "traefik"]


POLICY_ATTACKS = [
    ("another project's namespace", lambda s: s["egress"][0]["to"][0].update(
        {"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "ecluse-onco-surv"}}}), "is not the hub side's"),
    ("pod to pod in the project", lambda s: s["ingress"][0]["from"].append(
        {"podSelector": {"matchLabels": {"app.kubernetes.io/component": "ecluse-sandbox"}}}),
     "a peer in the project's own namespace"),
    ("egress to the project's pods", lambda s: s["egress"][0]["to"].append({"podSelector": {}}),
     "a peer in the project's own namespace"),
    ("an outside address", lambda s: s["egress"].append(
        {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}), "an ipBlock peer"),
    ("egress left out", lambda s: s.update({"policyTypes": ["Ingress"]}),
     "a direction left out is open"),
    ("open egress rule", lambda s: s["egress"].append({}), "open to every destination"),
    ("open ingress rule", lambda s: s["ingress"].append({"ports": [{"port": 22}]}),
     "open to every source"),
    ("any namespace", lambda s: s["egress"][0]["to"][0].update({"namespaceSelector": {}}),
     "not one named namespace"),
    ("every hub-side pod", lambda s: s["egress"][0]["to"][0].pop("podSelector"),
     "every pod of ['ecluse']"),
    ("every port of the hub", lambda s: s["egress"][0].pop("ports"),
     "every port of the peer"),
    ("a narrower selection", lambda s: s.update({"podSelector": {"matchLabels": {
        "ecluse.io/user": "alice"}}}), "does not select every sandbox pod"),
    ("one-shot pods selected again", lambda s: s.update({"podSelector": {"matchLabels": {
        "app.kubernetes.io/component": "ecluse-sandbox"}}}), "does not leave one-shot pods out"),
    ("every pod of the namespace", lambda s: s.update({"podSelector": {}}),
     "does not leave one-shot pods out"),
    ("the exclusion turned around", lambda s: s["podSelector"]["matchExpressions"][0].update(
        {"values": ["0"]}), "does not leave one-shot pods out"),
    ("the exclusion made an Exists", lambda s: s["podSelector"]["matchExpressions"].__setitem__(
        0, {"key": "ecluse.io/one-shot", "operator": "Exists"}),
     "does not leave one-shot pods out"),
    ("DNS without allow_dns", lambda s: s["egress"].append(
        {"to": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "kube-system"}}, "podSelector": {
            "matchLabels": {"k8s-app": "kube-dns"}}}], "ports": [{"port": 53}]}),
     "is not the hub side's"),
]


@pytest.mark.parametrize("what,alter,found", POLICY_ATTACKS, ids=[a[0] for a in POLICY_ATTACKS])
def test_an_altered_policy_is_caught(k, spec, what, alter, found):
    pol = k.network_policy(spec)
    alter(pol["spec"])
    problems = policy_check(pol)
    assert any(found in p for p in problems), (what, problems)


def _selects(sel: dict, labels: dict[str, str]) -> bool:
    """A label selector's meaning (Kubernetes' semantics: ``NotIn`` and ``DoesNotExist``
    match a pod without the label)."""
    if any(labels.get(k) != v for k, v in (sel.get("matchLabels") or {}).items()):
        return False
    for e in sel.get("matchExpressions") or []:
        key, op, vals = e["key"], e["operator"], e.get("values") or []
        ok = {"In": key in labels and labels[key] in vals,
              "NotIn": labels.get(key) not in vals,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def test_a_one_shot_pod_is_selected_by_the_deny_all_policy_only(k, spec):
    """A batch run's pod is in ecluse-one-shot (no rule: no network, as on the local and
    docker backends) and not in ecluse-sandboxes (the hub side's ports); a workspace pod
    the other way round; a sandbox pod without the one-shot label stays a workspace's."""
    pol = {o["metadata"]["name"]: o["spec"]["podSelector"] for o in k.project_objects(spec)
           if o["kind"] == "NetworkPolicy"}
    job_pod = k.build_job(spec, "k9876543210")["spec"]["template"]["metadata"]["labels"]
    workspace = k.build_pod(spec, "k0123456789")["metadata"]["labels"]
    unlabelled = {k_: v for k_, v in workspace.items() if k_ != "ecluse.io/one-shot"}
    assert job_pod["ecluse.io/one-shot"] == "1"
    assert {n for n, sel in pol.items() if _selects(sel, job_pod)} == {"ecluse-one-shot"}
    for labels in (workspace, unlabelled):
        assert {n for n, sel in pol.items() if _selects(sel, labels)} == {"ecluse-sandboxes"}
    one_shot = k.one_shot_policy("covid-los")["spec"]
    assert one_shot["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in one_shot and "egress" not in one_shot


ONE_SHOT_ATTACKS = [
    ("egress to the hub side", lambda p: p["spec"].update({"egress": [
        {"to": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "ecluse"}}}], "ports": [{"port": 8081}]}]}),
     "it allows traffic"),
    ("egress anywhere", lambda p: p["spec"].update({"egress": [{}]}), "it allows traffic"),
    ("ingress from anywhere", lambda p: p["spec"].update({"ingress": [{}]}),
     "it allows traffic"),
    ("egress left out", lambda p: p["spec"].update({"policyTypes": ["Ingress"]}),
     "a direction left out is open"),
    ("no direction", lambda p: p["spec"].pop("policyTypes"), "both Ingress and Egress"),
    ("a narrower selection", lambda p: p["spec"].update({"podSelector": {"matchLabels": {
        "ecluse.io/one-shot": "1", "ecluse.io/user": "alice"}}}),
     "does not select every one-shot pod"),
    ("another label", lambda p: p["spec"]["podSelector"]["matchLabels"].update(
        {"ecluse.io/one-shot": "0"}), "does not select every one-shot pod"),
    ("another namespace", lambda p: p["metadata"].update({"namespace": "ecluse-onco-surv"}),
     "not 'ecluse-covid-los'"),
]


@pytest.mark.parametrize("what,alter,found", ONE_SHOT_ATTACKS,
                         ids=[a[0] for a in ONE_SHOT_ATTACKS])
def test_an_altered_one_shot_policy_is_caught(k, spec, what, alter, found):
    pol = k.one_shot_policy("covid-los")
    alter(pol)
    problems = one_shot_policy_problems(pol, namespace=NS)
    assert any(found in p for p in problems), (what, problems)


def test_a_missing_one_shot_policy_is_caught():
    assert one_shot_policy_problems(None, namespace=NS) == [
        "no NetworkPolicy ecluse-one-shot in 'ecluse-covid-los': one-shot pods would have "
        "the network"]


class OneShotPodsReachTheHub(KubernetesSandbox):
    """A project whose one-shot policy lets its runs reach the hub API."""

    def one_shot_policy(self, slug):
        pol = super().one_shot_policy(slug)
        pol["spec"]["egress"] = [{"to": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "ecluse"}}, "podSelector": {}}]}]
        return pol


class WithoutOneShotPolicy(KubernetesSandbox):
    """A project made without the one-shot policy (its runs' pods, left out of the
    workspaces' policy, would be selected by none: the whole network)."""

    def project_objects(self, spec):
        return [o for o in super().project_objects(spec)
                if o["metadata"]["name"] != "ecluse-one-shot"]


class SandboxesPolicySelectsOneShot(KubernetesSandbox):
    """A workspaces' policy that selects one-shot pods again (the hub side's ports)."""

    def network_policy(self, spec):
        pol = super().network_policy(spec)
        pol["spec"]["podSelector"].pop("matchExpressions")
        return pol


@pytest.mark.parametrize("cls,found", [
    (OneShotPodsReachTheHub, "ecluse-one-shot: it allows traffic"),
    (WithoutOneShotPolicy, "no NetworkPolicy ecluse-one-shot"),
    (SandboxesPolicySelectsOneShot, "does not leave one-shot pods out"),
])
@pytest.mark.parametrize("one_shot", [True, False], ids=["job", "pod"])
async def test_the_backend_refuses_a_launch_whose_one_shot_pods_have_the_network(
        k, spec, tmp_path, cls, found, one_shot):
    """Refused before the API is asked (the kubeconfig names no server: a submitted
    object would fail differently), for a workspace's launch as for a run's."""
    bad = cls(settings=k.settings, kubeconfig=str(tmp_path / "none"))
    with pytest.raises(SandboxError, match="would not isolate it") as e:
        await bad.launch(spec, one_shot=one_shot)
    assert found in e.value.log_message


def test_dns_only_when_allowed(settings, spec):
    k = KubernetesSandbox(settings=settings, allow_dns=True)
    pol = k.network_policy(spec)
    assert policy_check(pol, allow_dns=True) == []
    assert any("kube-system" in p for p in policy_check(pol))


# ------------------------------------------------------------ quota and claims

def test_quota_limits_and_claims(k, spec):
    objs = {(o["kind"], o["metadata"]["name"]): o for o in k.project_objects(spec)}
    hard = objs[("ResourceQuota", "ecluse-quota")]["spec"]["hard"]
    assert hard["persistentvolumeclaims"] == "5"  # project, homes, inbox, two datasets
    assert hard["requests.storage"] == str(50 * 2**30 + 10 * 2**30 + 10 * 2**30)
    assert hard["services.loadbalancers"] == hard["services.nodeports"] == "0"
    lim = objs[("LimitRange", "ecluse-limits")]["spec"]["limits"][0]
    assert lim["max"] == {"cpu": "2.0", "memory": str(4 * 2**30)}
    shared = objs[("PersistentVolumeClaim", "project-shared")]
    assert shared["spec"]["resources"]["requests"] == {"storage": str(50 * 2**30)}
    assert shared["spec"]["accessModes"] == ["ReadWriteMany"]
    assert objs[("PersistentVolumeClaim", "homes")]["metadata"]["namespace"] == NS
    # attacks: a quota without claims limit, node ports allowed, a LimitRange elsewhere
    rq, lr = objs[("ResourceQuota", "ecluse-quota")], objs[("LimitRange", "ecluse-limits")]
    bad = copy.deepcopy(rq)
    bad["spec"]["hard"]["services.nodeports"] = "2"
    assert quota_problems(bad, lr, namespace=NS) == [
        "ResourceQuota: services.nodeports = 2 (must be 0)"]
    bad = copy.deepcopy(rq)
    del bad["spec"]["hard"]["persistentvolumeclaims"]
    assert quota_problems(bad, lr, namespace=NS) == ["ResourceQuota: no persistentvolumeclaims"]
    bad = copy.deepcopy(lr)
    bad["metadata"]["namespace"] = "default"
    assert quota_problems(rq, bad, namespace=NS) == [
        "LimitRange not in namespace 'ecluse-covid-los'"]


def test_prepare_project_dirs_names_the_claims(k, spec):
    with pytest.raises(SandboxError, match="PersistentVolumeClaims"):
        k.prepare_project_dirs(spec.project, spec.user)


def test_settings_configure_the_backend(settings, spec):
    """sandbox.kubernetes sets the backend's values; an unknown key fails closed."""
    settings.sandbox.kubernetes = {"hub_namespace": "jhub", "storage_class": "cephfs",
                                   "home_size": "20Gi"}
    settings.sandbox.start_timeout = 240
    k = KubernetesSandbox(settings=settings)
    assert (k.hub_namespace, k.storage_class, k.start_timeout) == ("jhub", "cephfs", 240.0)
    homes = next(o for o in k.project_objects(spec) if o["metadata"]["name"] == "homes")
    assert homes["spec"]["storageClassName"] == "cephfs"
    assert homes["spec"]["resources"]["requests"] == {"storage": "20Gi"}
    assert k.network_policy(spec)["spec"]["ingress"][0]["from"][0]["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "jhub"}}
    settings.sandbox.kubernetes = {"hub_namespaec": "jhub"}
    with pytest.raises(SandboxError, match="settings are wrong") as e:
        KubernetesSandbox(settings=settings)
    assert "unknown setting(s) hub_namespaec" in e.value.log_message
