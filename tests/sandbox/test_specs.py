"""The docker and kubernetes backends: specifications asserted field by field.

No engine runs here; these tests need neither root nor Docker nor a cluster.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ecluse.config import Dataset, LDAPSettings, Project, Quota, SandboxSettings, Settings
from ecluse.sandbox import Sandbox, SandboxSpec, UserIdentity, backend_class, get_backend
from ecluse.sandbox.docker import DockerSandbox
from ecluse.sandbox.kubernetes import KubernetesSandbox


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
                       ["jupyterhub-singleuser", "--port=8888"], env={"JUPYTERHUB_USER": "alice"},
                       port=8888, allowed_ports=[8081, 8082, 8081])


def test_backend_selection(settings):
    for name, cls in (("docker", DockerSandbox), ("kubernetes", KubernetesSandbox)):
        settings.sandbox.backend = name
        assert isinstance(get_backend(settings), cls)
    with pytest.raises(Exception, match="unknown sandbox backend"):
        backend_class("podman")


async def test_base_class_requires_the_backend_methods(spec):
    base = Sandbox()
    for call in (base.launch(spec), base.poll({}), base.terminate({}), base.release({}),
                 base.read_logs({})):
        with pytest.raises(NotImplementedError):
            await call
    with pytest.raises(NotImplementedError):
        base.host_address()
    with pytest.raises(NotImplementedError):
        base.prepare_project_dirs(spec.project, spec.user)


def test_docker_container_spec(settings, spec):
    out = DockerSandbox(settings=settings).container_spec(spec)
    s, net = out["spawner"], out["network"]
    assert s["image"] == "ecluse/workspace:1.2"
    assert s["cmd"] == ["jupyterhub-singleuser", "--port=8888"]
    assert s["port"] == 8888
    assert s["volumes"] == {
        "/srv/data/stays": {"bind": "/data/stays", "mode": "ro"},
        "/srv/data/icd": {"bind": "/data/icd_10", "mode": "ro"},
        "/srv/ecluse/projects/covid-los/shared": {"bind": "/project", "mode": "rw"},
        # approved imports: a read-only mount of its own over /project
        "/srv/ecluse/projects/covid-los/inbox": {"bind": "/project/inbox", "mode": "ro"},
        "/srv/ecluse/projects/covid-los/home/alice": {"bind": "/home/alice", "mode": "rw"},
    }
    assert s["environment"]["HOME"] == "/home/alice"
    assert s["environment"]["JUPYTERHUB_USER"] == "alice"
    assert s["mem_limit"] == 4 * 2**30 and s["cpu_limit"] == 2
    assert s["network_name"] == net["name"] == "ecluse-covid-los-alice"
    assert s["use_internal_ip"] is True
    ck = s["extra_create_kwargs"]
    assert ck["user"] == "5001:5000" and ck["working_dir"] == "/home/alice"
    assert ck["labels"]["ecluse.project"] == "covid-los"
    hc = s["extra_host_config"]
    assert hc["group_add"] == ["7001"]
    assert hc["cap_drop"] == ["ALL"]
    assert hc["security_opt"][0] == "no-new-privileges:true"
    assert hc["security_opt"][1].startswith("seccomp=")  # the local backend's filter
    assert '"ptrace"' in hc["security_opt"][1]
    assert hc["privileged"] is False and hc["read_only"] is True
    assert hc["tmpfs"]["/tmp"] == "rw,nosuid,nodev,size=1g"
    assert hc["tmpfs"]["/sys/fs/cgroup"].startswith("ro,")
    assert hc["mem_limit"] == hc["memswap_limit"] == 4 * 2**30
    assert hc["nano_cpus"] == 2_000_000_000
    assert hc["pids_limit"] == 256
    assert hc["network_mode"] == "ecluse-covid-los-alice"
    assert hc["ipc_mode"] == "private" and hc["dns"] == []
    assert "cap_add" not in hc and "devices" not in hc
    assert net["driver"] == "bridge"
    assert net["options"]["com.docker.network.bridge.enable_ip_masquerade"] == "false"
    assert net["options"]["com.docker.network.bridge.enable_icc"] == "false"
    assert net["allowed_ports"] == [8081, 8082]


def test_docker_seccomp_profile_denies_what_the_local_filter_denies():
    from ecluse.sandbox.seccomp import ALLOWED_SOCKET_FAMILIES, DENIED, docker_profile

    p = docker_profile("x86_64")
    assert p["defaultAction"] == "SCMP_ACT_ALLOW" and p["architectures"] == ["SCMP_ARCH_X86_64"]
    denied = {n for r in p["syscalls"] if "args" not in r for n in r["names"]}
    assert denied == set(DENIED) | {"clone3"}
    families = {a["value"] for r in p["syscalls"] if "socket" in r["names"]
                for a in r["args"] if a["op"] == "SCMP_CMP_EQ"}
    assert families == set(range(17)) - set(ALLOWED_SOCKET_FAMILIES)
    assert any(a["op"] == "SCMP_CMP_GT" and a["value"] == 16
               for r in p["syscalls"] if "socket" in r["names"] for a in r["args"])
    clone = [r["args"][0]["value"] for r in p["syscalls"] if r["names"] == ["clone"]]
    assert len(clone) == 8  # every namespace flag


def test_kubespawner_config(settings, spec):
    k = KubernetesSandbox(settings=settings)
    c = k.kubespawner_config(spec)
    assert c["namespace"] == "ecluse-covid-los"
    assert c["image"] == "ecluse/workspace:1.2"
    assert (c["uid"], c["gid"], c["supplemental_gids"]) == (5001, 5000, [7001])
    assert c["working_dir"] == "/home/alice" and c["port"] == 8888
    assert c["cpu_limit"] == 2 and c["mem_limit"] == 4 * 2**30
    assert c["automount_service_account_token"] is False
    assert c["allow_privilege_escalation"] is False
    assert c["container_security_context"] == {
        "allowPrivilegeEscalation": False, "privileged": False, "readOnlyRootFilesystem": True,
        "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"}}
    assert c["pod_security_context"] == {
        "runAsUser": 5001, "runAsGroup": 5000, "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"}, "supplementalGroups": [7001]}
    assert c["volumes"] == [
        {"name": "data-stays", "persistentVolumeClaim": {"claimName": "data-stays",
                                                         "readOnly": True}},
        {"name": "data-icd-10", "persistentVolumeClaim": {"claimName": "data-icd_10",
                                                          "readOnly": True}},
        {"name": "project", "persistentVolumeClaim": {"claimName": "project-shared"}},
        {"name": "inbox", "persistentVolumeClaim": {"claimName": "project-inbox",
                                                    "readOnly": True}},
        {"name": "home", "persistentVolumeClaim": {"claimName": "homes"}},
        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
    ]
    assert c["volume_mounts"] == [
        {"name": "data-stays", "mountPath": "/data/stays", "readOnly": True},
        {"name": "data-icd-10", "mountPath": "/data/icd_10", "readOnly": True},
        {"name": "project", "mountPath": "/project"},
        {"name": "inbox", "mountPath": "/project/inbox", "readOnly": True},
        {"name": "home", "mountPath": "/home/alice", "subPath": "alice"},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    assert c["extra_labels"]["app.kubernetes.io/component"] == "ecluse-sandbox"
    assert c["extra_pod_config"]["hostNetwork"] is False


def test_pod_manifest(settings, spec):
    pod = KubernetesSandbox(settings=settings).pod_manifest(spec, name="batch-1")
    assert pod["kind"] == "Pod" and pod["metadata"]["name"] == "batch-1"
    assert pod["metadata"]["namespace"] == "ecluse-covid-los"
    ps = pod["spec"]
    assert ps["restartPolicy"] == "Never" and ps["automountServiceAccountToken"] is False
    assert ps["hostNetwork"] is ps["hostPID"] is ps["hostIPC"] is False
    assert ps["securityContext"]["runAsUser"] == 5001
    (ctr,) = ps["containers"]
    assert ctr["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert ctr["resources"]["limits"] == {"cpu": "2.0", "memory": str(4 * 2**30)}
    assert {"name": "HOME", "value": "/home/alice"} in ctr["env"]
    assert ctr["ports"] == [{"containerPort": 8888, "protocol": "TCP"}]
    assert [m["mountPath"] for m in ctr["volumeMounts"]] == [
        "/data/stays", "/data/icd_10", "/project", "/project/inbox", "/home/alice", "/tmp"]


def test_network_policy(settings, spec):
    pol = KubernetesSandbox(settings=settings).network_policy(spec)
    assert pol["kind"] == "NetworkPolicy" and pol["metadata"]["namespace"] == "ecluse-covid-los"
    s = pol["spec"]
    assert s["policyTypes"] == ["Ingress", "Egress"]
    # workspaces only: one-shot pods (batch Jobs) have a deny-all policy of their own
    assert s["podSelector"] == {
        "matchLabels": {"app.kubernetes.io/component": "ecluse-sandbox"},
        "matchExpressions": [{"key": "ecluse.io/one-shot", "operator": "NotIn", "values": ["1"]}]}
    (ing,) = s["ingress"]
    assert ing["ports"] == [{"protocol": "TCP", "port": 8888}]
    assert ing["from"][0]["podSelector"]["matchExpressions"][0]["values"] == ["hub", "proxy"]
    (eg,) = s["egress"]  # no DNS rule, no ipBlock: nothing else is reachable
    assert eg["ports"] == [{"protocol": "TCP", "port": 8081}, {"protocol": "TCP", "port": 8082}]
    assert eg["to"][0]["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "ecluse"}}
    assert all("ipBlock" not in t for t in eg["to"])
    # no allowed port: egress is an empty list (deny all)
    spec.allowed_ports = []
    assert KubernetesSandbox(settings=settings).network_policy(spec)["spec"]["egress"] == []
    # DNS only when asked for
    k = KubernetesSandbox(settings=settings, allow_dns=True)
    assert k.network_policy(spec)["spec"]["egress"][0]["ports"][0] == {"protocol": "UDP",
                                                                       "port": 53}


def test_resource_quota_and_namespace(settings, spec):
    k = KubernetesSandbox(settings=settings, max_sandboxes=5)
    rq = k.resource_quota("covid-los", spec.project.quota)
    assert rq["metadata"] == {"name": "ecluse-quota", "namespace": "ecluse-covid-los"}
    hard = rq["spec"]["hard"]
    assert hard["pods"] == "5" and hard["limits.cpu"] == "10.0"
    assert hard["limits.memory"] == str(5 * 4 * 2**30)
    assert hard["requests.storage"] == str(50 * 2**30)
    assert hard["services.nodeports"] == "0"
    ns = k.namespace_manifest("covid-los")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert [m["kind"] for m in k.manifests(spec)] == ["Namespace", "NetworkPolicy",
                                                       "ResourceQuota"]


def test_base_image_uses_the_hosts_debian_mirror(tmp_path):
    from ecluse.sandbox.engine import DEFAULT_MIRROR, base_key, host_debian_mirror

    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    assert host_debian_mirror(apt) == DEFAULT_MIRROR
    (apt / "sources.list").write_text(
        "# comment\ndeb [signed-by=/k.gpg] http://mirror.hospital.fr/debian/ bookworm main\n")
    assert host_debian_mirror(apt) == "http://mirror.hospital.fr/debian"
    (apt / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://apt.hospital.fr/debian/\nSuites: bookworm bookworm-updates\n")
    assert host_debian_mirror(apt) == "http://apt.hospital.fr/debian"
    # the cache key follows every input of the root filesystem
    assert base_key("http://a/debian") != base_key("http://b/debian")
    assert base_key("http://a/debian") != base_key("http://a/debian", ("python3",))
    assert base_key("http://a/debian") == base_key("http://a/debian")


def test_sandbox_host_address_per_backend(settings):
    from ecluse.sandbox import sandbox_host_address

    settings.sandbox.subnet = "10.213.0.0/16"
    for backend in ("local", "docker"):
        settings.sandbox.backend = backend
        assert sandbox_host_address(settings, ensure=False) == "10.213.0.1"
    settings.sandbox.backend = "kubernetes"
    assert sandbox_host_address(settings) is None


def test_hub_side_host_addresses_follow_the_backend(settings, monkeypatch):
    """The hub API, the airlock (spawner) and the Dask gateway listen on the sandbox
    host address for every backend whose sandboxes run on this host, docker included."""
    import ecluse.sandbox as sandbox_pkg
    from ecluse.dask.gateway import host_address
    from ecluse.hub.hubconfig import hub_bind_ip

    settings.sandbox.subnet = "10.213.0.0/16"
    settings.hub.spawner = "ecluse"
    # no interface is created here: ensure=True resolves like ensure=False
    real = sandbox_pkg.sandbox_host_address
    monkeypatch.setattr(sandbox_pkg, "sandbox_host_address",
                        lambda s, ensure=True, caller="hub": real(s, ensure=False))
    for backend in ("local", "docker"):
        settings.sandbox.backend = backend
        assert host_address(settings) == "10.213.0.1"
        assert hub_bind_ip(settings) == "10.213.0.1"
    settings.sandbox.backend = "kubernetes"
    assert host_address(settings) == "0.0.0.0"
    assert hub_bind_ip(settings) == "127.0.0.1"
