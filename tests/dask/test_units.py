"""Sizing from quotas, the warehouse generator, the gateway's wiring (no sandboxes)."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pandas as pd
import pytest
from dask_gateway_server.backends.db_base import DBBackendBase
from traitlets.utils.importstring import import_item

from ecluse.config import Project, Quota
from ecluse.dask.front import DashboardDenied, backend_owner, check_owner, check_path
from ecluse.dask.gateway import (
    SERVICE_NAME,
    DaskSettings,
    SandboxBackend,
    cluster_limits,
    gateway_config,
    project_options,
)
from ecluse.dask.hub import gateway_service_spec
from ecluse.dask.sizing import dask_command_prefix, dask_env, sizing
from ecluse.dev.warehouse import SIZES, generate, omop_tables


def _project(**quota) -> Project:
    return Project(slug="cardio-los", title="t", ldap_group="g", quota=Quota(**quota))


@pytest.mark.parametrize(("quota", "workers", "threads"), [
    ({"cpu": 1, "memory": "2G", "dask_workers": 2}, 2, 1),
    ({"cpu": 4, "memory": "8G", "dask_workers": 2}, 2, 2),
    ({"cpu": 1, "memory": "512M", "dask_workers": 4}, 1, 1),   # 256 MiB per worker at least
    ({"cpu": 2, "memory": "1G", "dask_workers": 0}, 1, 2),
])
def test_sizing_fits_the_quota(quota, workers, threads):
    p = _project(**quota)
    s = sizing(p)
    assert (s.workers, s.threads_per_worker) == (workers, threads)
    assert s.total_worker_memory + s.scheduler_memory <= p.quota.memory
    assert s.worker_memory >= 256 * 2**20
    env = dask_env(p)
    assert env["DASK_LABEXTENSION__FACTORY__KWARGS__N_WORKERS"] == str(workers)
    assert int(env["ECLUSE_DASK_WORKER_MEMORY"]) * workers <= p.quota.memory
    assert "DASK_TEMPORARY_DIRECTORY" not in env
    assert dask_env(p, "alice")["DASK_TEMPORARY_DIRECTORY"] == "/home/alice/.cache/dask-spill"
    assert dask_command_prefix(p)[1] == f"--rss={s.total_worker_memory}"


def test_cluster_limits_fit_the_quota():
    p = _project(cpu=1, memory="2G", dask_workers=2)
    lim = cluster_limits(p)
    assert lim["cluster_max_workers"] == 2
    assert lim["cluster_max_memory"] <= p.quota.memory
    assert lim["scheduler_memory"] + 2 * lim["worker_memory"] <= lim["cluster_max_memory"]


class _User:
    def __init__(self, name, groups):
        self.name, self.groups = name, groups


def test_options_require_membership():
    class S:
        projects = {"cardio-los": _project()}

    opts = project_options(S())
    ok = opts.get_configuration(opts.parse_options({"project": "cardio-los"}),
                                _User("alice", ["cardio-los"]))
    assert ok["cluster_max_workers"] == 2 and ok["environment"]["ECLUSE_PROJECT"] == "cardio-los"
    with pytest.raises(ValueError, match="not a member of project 'cardio-los'"):
        opts.get_configuration(opts.parse_options({"project": "cardio-los"}), _User("x", []))
    with pytest.raises(ValueError, match="Choose a project"):
        opts.get_configuration(opts.parse_options({}), _User("x", ["cardio-los"]))


def test_gateway_config_uses_dask_subcommands_and_hub_service_name(settings):
    ds = DaskSettings(proxy_port=9999, api_port=9998, proxy_http_port=9997)
    c = gateway_config(settings, address="10.9.0.1", dask=ds, prefix="/services/dask-gateway")
    assert c.SandboxClusterConfig.scheduler_cmd[-1] == "scheduler"  # `dask scheduler`
    assert c.SandboxClusterConfig.worker_cmd[-1] == "worker"
    assert c.JupyterHubAuthenticator.jupyterhub_service_name == SERVICE_NAME
    # the class the gateway will load is ours, a dask-gateway database backend
    assert import_item(c.DaskGateway.backend_class) is SandboxBackend
    assert issubclass(SandboxBackend, DBBackendBase)


def test_only_the_scheduler_proxy_and_the_api_listener_face_sandboxes(settings):
    """The proxy's HTTP listener (unauthenticated dashboards) is on loopback; sandboxes get
    the scheduler (TLS) listener and the front's API listener on the host address."""
    from traitlets.config import Config

    from ecluse.dask.gateway import host_address
    from ecluse.dask.hub import gateway_client_env
    from ecluse.hub.hubconfig import configure_spawner

    ds = DaskSettings(proxy_port=9999, api_port=9998, proxy_http_port=9997)
    c = gateway_config(settings, address="10.9.0.1", dask=ds, prefix="/services/dask-gateway")
    assert c.Proxy.address == "127.0.0.1:9997"
    assert c.Proxy.tcp_address == "10.9.0.1:9999"
    assert c.SandboxBackend.api_url == "http://10.9.0.1:9998/services/dask-gateway/api"
    s = settings.model_copy(update={"dask": ds})
    addr = host_address(s, ensure=False)
    env = gateway_client_env(s, addr)
    assert env["DASK_GATEWAY__ADDRESS"] == f"http://{addr}:9998/services/{SERVICE_NAME}"
    assert env["DASK_GATEWAY__PROXY_ADDRESS"] == f"gateway://{addr}:9999"
    hub = Config()
    configure_spawner(hub, s.model_copy(update={"hub": s.hub.model_copy(
        update={"spawner": "ecluse"})}))
    ports = hub.EcluseSpawner.extra_allowed_ports
    assert {9998, 9999} <= set(ports) and 9997 not in ports
    assert settings.dask.front_port not in ports


def test_service_url_is_the_front_with_an_identify_only_oauth_client(settings):
    spec = gateway_service_spec(settings)
    port = settings.dask.front_port
    assert spec["url"] == f"http://127.0.0.1:{port}"  # CHP's target: never the gateway proxy
    assert spec["command"][spec["command"].index("--front") + 1] == f"127.0.0.1:{port}"
    assert spec["oauth_client_id"] == f"service-{SERVICE_NAME}"
    assert spec["oauth_redirect_uri"] == f"/services/{SERVICE_NAME}/oauth_callback"
    assert spec["oauth_client_allowed_scopes"] == []


def test_service_user_runs_the_gateway_as_that_user_or_fails_closed(settings):
    """``dask.service_user``: the hub (root) starts the gateway as that system user, from
    ``/``; a user that does not exist stops the hub's configuration with the key's name
    (never a gateway started as root instead)."""
    assert "user" not in gateway_service_spec(settings)  # unset: the hub's own user
    as_nobody = settings.model_copy(update={"dask": settings.dask.model_copy(
        update={"service_user": "nobody"})})
    spec = gateway_service_spec(as_nobody)
    assert (spec["user"], spec["cwd"]) == ("nobody", "/")
    missing = settings.model_copy(update={"dask": settings.dask.model_copy(
        update={"service_user": "ecluse-no-such-user"})})
    with pytest.raises(ValueError, match="dask.service_user 'ecluse-no-such-user' is not a user"):
        gateway_service_spec(missing)


class _Db:
    def __init__(self, clusters):
        self.clusters = clusters

    def get_cluster(self, name):
        if name == "broken":
            raise RuntimeError("database is locked")
        owner = self.clusters.get(name)
        return None if owner is None else type("C", (), {"username": owner})()


@pytest.mark.parametrize(("user", "cluster", "status", "reason"), [
    ("alice", "c1", None, None),
    ("bob", "c1", 403, "not-owner"),
    ("alice", "nope", 404, "unknown-cluster"),
    ("alice", "broken", 503, "lookup-error"),   # fail closed
    ("alice", "ownerless", 503, "lookup-error"),
])
def test_dashboard_owner_rule(user, cluster, status, reason):
    owner_of = backend_owner(type("B", (), {"db": _Db({"c1": "alice", "ownerless": ""})})())
    if status is None:
        check_owner(user, cluster, owner_of)
        return
    with pytest.raises(DashboardDenied) as e:
        check_owner(user, cluster, owner_of)
    assert (e.value.status, e.value.reason) == (status, reason)


P = "/services/dask-gateway/clusters/"


@pytest.mark.parametrize(("path", "name"), [
    (P + "c1/../c2/status", "c1"),
    (P + "c1/%2e%2e/c2/status", "c1"),
    (P + "c1/%2E%2e/c2/status", "c1"),
    (P + "c1/.%2fc2/status", "c1"),
    (P + "c1/..\\c2/status", "c1"),
    (P + "c1/./status", "c1"),
    (P + "../status", ".."),
    (P + "c1%2f..%2fc2/status", "c1/../c2"),
])
def test_dashboard_paths_that_could_reach_another_cluster_are_refused(path, name):
    with pytest.raises(DashboardDenied) as e:
        check_path(path, name)
    assert e.value.status == 400


def test_dashboard_paths_of_one_cluster_pass():
    for path in ("c1/status", "c1/individual-progress", "c1/status/ws", "c1/info/main/logs.html",
                 "ns.0f3a/statics/css/base.css"):
        check_path(P + path, path.split("/")[0])


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.parquet")):
        h.update(pd.read_parquet(p).to_csv().encode())
    return h.hexdigest()


def test_warehouse_is_deterministic_and_realistic(tmp_path):
    a = generate("cardio-los", "omop", tmp_path / "a", "small")
    b = generate("cardio-los", "omop", tmp_path / "b", "small")
    assert a == b and _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert generate("cardio-los", "omop", tmp_path / "a", "small") is None  # already there
    assert generate("cardio-los", "unknown", tmp_path / "c") is None
    t = omop_tables(SIZES["small"])
    visits = t["visit_occurrence"]
    assert visits.person_id.between(1, SIZES["small"].persons).all()
    assert (visits.visit_end_date >= visits.visit_start_date).all()
    los = (visits.visit_end_date - visits.visit_start_date).dt.days
    assert 2 < los.mean() < 15 and los.max() > 20  # right-skewed
    assert t["condition_occurrence"].condition_source_value.str.match(r"^[A-Z]\d\d").all()
    assert set(t["measurement"].visit_occurrence_id) <= set(visits.visit_occurrence_id)


def test_exposure_cube_and_cohort(tmp_path):
    import xarray as xr

    generate("air-quality", "exposure", tmp_path / "exposure", "small")
    generate("air-quality", "cohort", tmp_path / "cohort", "small")
    ds = xr.open_zarr(tmp_path / "exposure" / "exposure.zarr", consolidated=False)
    s = SIZES["small"]
    assert ds.pm25.shape == (s.days, s.lat, s.lon) and ds.pm25.dtype == "float32"
    assert bool(ds.pm25.isnull().any()) and float(ds.pm25.max()) > 0
    patients = pd.read_parquet(tmp_path / "cohort" / "patients.parquet")
    communes = pd.read_parquet(tmp_path / "cohort" / "communes.parquet")
    assert set(patients.commune_code) <= set(communes.commune_code)


def test_production_options_place_clusters_per_project():
    from ecluse.dask.gateway import production_options

    class S:
        projects = {"cardio-los": _project()}

    for backend, expected in (("kubernetes", {"namespace": "ecluse-cardio-los"}),
                              ("slurm", {"account": "ecluse-cardio-los",
                                         "qos": "ecluse-cardio-los"})):
        opts = production_options(S(), backend)
        conf = opts.get_configuration(opts.parse_options({"project": "cardio-los"}),
                                      _User("alice", ["cardio-los"]))
        assert expected.items() <= conf.items() and conf["cluster_max_workers"] == 2
        with pytest.raises(ValueError, match="not a member"):
            opts.get_configuration(opts.parse_options({"project": "cardio-los"}),
                                   _User("x", []))


class _Audit:
    def __init__(self):
        self.records = []

    def record(self, event, **kw):
        self.records.append((event, kw))


async def test_api_listener_forwards_the_api_only():
    """The front's API listener: the API as is (the gateway's own auth: cookies and
    Authorization both ways), dashboards 403 and audited, ambiguous paths 400."""
    import requests
    from tornado import web
    from tornado.httpserver import HTTPServer

    from ecluse.dask.front import DASHBOARD_REFUSED, ApiFront, make_api_app
    from ecluse.dev.ldapserver import free_port

    seen = []

    class Upstream(web.RequestHandler):
        def get(self, *a):
            seen.append((self.request.path, self.request.headers.get("Authorization"),
                         self.request.headers.get("Cookie")))
            self.set_header("Set-Cookie", "dask-gateway=abc")
            self.finish({"path": self.request.path})

        post = get

    up_port, port = free_port(), free_port()
    upstream = HTTPServer(web.Application([(r".*", Upstream)]))
    upstream.listen(up_port, "127.0.0.1")
    audit = _Audit()
    front = ApiFront(upstream=f"http://127.0.0.1:{up_port}", prefix="/services/dask-gateway",
                     audit=audit)
    server = HTTPServer(make_api_app(front))
    server.listen(port, "127.0.0.1")
    base = f"http://127.0.0.1:{port}/services/dask-gateway"
    try:
        def get(path, **kw):
            return requests.get(base + path, timeout=10, allow_redirects=False, **kw)

        r = await asyncio.to_thread(get, "/api/v1/clusters/", headers={
            "Authorization": "jupyterhub tok", "Cookie": "dask-gateway=abc"})
        assert r.status_code == 200 and r.json()["path"] == "/services/dask-gateway/api/v1/clusters/"
        assert seen[-1][1:] == ("jupyterhub tok", "dask-gateway=abc")
        assert r.headers["Set-Cookie"] == "dask-gateway=abc"
        n = len(seen)
        r = await asyncio.to_thread(get, "/clusters/c1/status")
        assert r.status_code == 403 and r.json()["message"] == DASHBOARD_REFUSED
        assert audit.records[-1][0] == "dask.dashboard"
        assert audit.records[-1][1]["reason"] == "sandbox-address"
        assert audit.records[-1][1]["cluster"] == "c1"
        def raw(path):  # http.client sends the path as is (requests removes dot segments)
            import http.client

            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("GET", "/services/dask-gateway" + path)
                return conn.getresponse().status
            finally:
                conn.close()

        for path in ("/api/../clusters/c1/status", "/api/%2e%2e/clusters/c1/status",
                     "/api/v1/%2fclusters", "/api/./v1/clusters/"):
            assert await asyncio.to_thread(raw, path) == 400, path
        assert (await asyncio.to_thread(get, "/")).status_code == 404
        r = await asyncio.to_thread(requests.get, f"http://127.0.0.1:{port}/clusters/c1/status",
                                    timeout=10)
        assert r.status_code == 404
        assert len(seen) == n  # none of those reached the gateway
    finally:
        server.stop()
        upstream.stop()


def test_gateway_ports_come_from_the_configuration_only(make_config, monkeypatch):
    """The ports workspaces may reach (the hub's holes in their firewall) and the gateway's
    listeners have one source, the configuration: no environment variable moves them."""
    from ecluse.config import load_settings
    from ecluse.hub.hubconfig import configure_spawner

    settings = load_settings(make_config(**{"hub.spawner": "ecluse", "dask.gateway": True}))
    for var in ("ECLUSE_DASK_PROXY_PORT", "ECLUSE_DASK_API_PORT", "ECLUSE_DASK_PROXY_HTTP_PORT"):
        monkeypatch.setenv(var, "1")
    ds = settings.dask
    assert (ds.proxy_port, ds.api_port, ds.proxy_http_port) == (
        settings.dask.proxy_port, settings.dask.api_port, settings.dask.proxy_http_port)
    assert not {"ECLUSE_DASK_PROXY_PORT", "ECLUSE_DASK_API_PORT"} & set(
        gateway_service_spec(settings)["environment"])

    from traitlets.config import Config

    c = Config()
    configure_spawner(c, settings)
    assert 1 not in c.EcluseSpawner.extra_allowed_ports
    assert settings.dask.proxy_port in c.EcluseSpawner.extra_allowed_ports
