"""The package mirror from a real local sandbox: the mirror's port is the one new port a
workspace reaches, pip installs an allowed package through it, a refused name never
reaches the (local, recording) upstream, and the mirror's backend and the upstream stay
out of reach.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ecluse.cli import main
from ecluse.config import load_settings
from ecluse.dev.ldapserver import free_port
from ecluse.mirror.hub import workspace_pip_env
from ecluse.sandbox.local import LocalSandbox
from tests.sandbox.conftest import BOB
from tests.support.pypi import LocalIndex

PROJECTS = {"projects": {
    "covid-los": {"title": "Length of stay", "ldap_group": "p-covid", "gid": 7001},
    "onco-surv": {"title": "Oncology survival", "ldap_group": "p-onco", "gid": 7002},
}}


@pytest.fixture
def mirror(tmp_path: Path, deployment) -> Iterator[dict]:
    upstream = LocalIndex(tmp_path / "upstream")
    upstream.add("alpha", "1.0", requires=("beta>=1.0",))
    upstream.add("beta", "1.0")
    upstream.add("secretpkg", "1.0")
    upstream.start()
    host = LocalSandbox(settings=deployment).host_address()
    port, backend_port = free_port(), free_port()
    (tmp_path / "projects.yaml").write_text(yaml.safe_dump(PROJECTS))
    cfg = tmp_path / "ecluse.yaml"
    cfg.write_text(yaml.safe_dump({
        "state_dir": "state", "projects_file": "projects.yaml",
        "ldap": {"uri": "ldap://127.0.0.1:1", "security": "none", "base_dn": "dc=test",
                 "bind_dn": "cn=svc,dc=test", "user_search_base": "ou=people,dc=test",
                 "group_search_base": "ou=groups,dc=test"},
        "mirror": {"enabled": True, "upstream": upstream.url, "port": port,
                   "backend_port": backend_port}}))
    proc = subprocess.Popen([sys.executable, "-m", "ecluse", "mirror", "--config", str(cfg),
                             "serve", "--listen", f"{host}:{port}"], stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, "ecluse mirror serve exited at start"
            try:
                urllib.request.urlopen(f"http://{host}:{port}/x/simple/", timeout=2)
            except urllib.error.HTTPError:
                break
            except OSError:
                assert time.monotonic() < deadline, "the mirror's front never answered"
                time.sleep(0.3)
        assert main(["packages", "--config", str(cfg), "allow", "covid-los", "alpha"]) == 0
        upstream.paths.clear()
        yield {"settings": load_settings(str(cfg)), "host": host, "port": port,
               "backend_port": backend_port, "upstream": upstream}
    finally:
        proc.terminate()
        proc.wait(30)
        upstream.stop()


PIP = """
import json, subprocess, sys
p = subprocess.run([sys.executable, "-m", "pip", "install", "--no-cache-dir",
                    "--target", "/tmp/pkgs", {names}], capture_output=True, text=True)
sys.path.insert(0, "/tmp/pkgs")
try:
    import alpha, beta
    got = [alpha.VERSION, beta.VERSION]
except ImportError:
    got = None
print(json.dumps({{"rc": p.returncode, "err": p.stderr[-2000:], "got": got}}))
"""


def _env(mirror: dict, project: str) -> dict[str, str]:
    env = workspace_pip_env(mirror["settings"], project, mirror["host"])
    env["PIP_CONFIG_FILE"] = os.devnull
    return env


async def test_pip_installs_an_allowed_package_in_a_sandbox(run_py, mirror, escape):
    result, out = await run_py(PIP.format(names='"alpha"'), env=_env(mirror, "covid-los"),
                               allowed_ports=[mirror["port"]], timeout=300)
    assert out and out["rc"] == 0, (result.stderr, out)
    assert out["got"] == ["1.0", "1.0"]

    result, out = await run_py(PIP.format(names='"secretpkg"'), env=_env(mirror, "covid-los"),
                               allowed_ports=[mirror["port"]], timeout=300)
    assert out and out["rc"] != 0, result.stderr
    assert "No matching distribution found for secretpkg" in out["err"]
    assert escape("a refused package name reaching the upstream index",
                  mirror["upstream"].asked_about("secretpkg") == [])


async def test_another_projects_workspace_gets_nothing_of_its_list(run_py, mirror, onco):
    result, out = await run_py(PIP.format(names='"alpha"'), project=onco, user=BOB,
                               env=_env(mirror, "onco-surv"),
                               allowed_ports=[mirror["port"]], timeout=300)
    assert out and out["rc"] != 0, result.stderr
    assert "No matching distribution found for alpha" in out["err"]
    assert mirror["upstream"].paths == []


async def test_the_backend_and_the_upstream_are_out_of_reach(run_py, mirror, escape):
    """Only the front's port is opened: proxpi (loopback, and its port on the host
    address) and the upstream's port are not, even to a sandbox holding a valid token."""
    upstream_port = int(mirror["upstream"].url.split(":")[2].split("/")[0])
    code = f"""
import json, socket
out = {{}}
for name, port in (("backend", {mirror["backend_port"]}), ("upstream", {upstream_port})):
    for host in ("127.0.0.1", "{mirror["host"]}"):
        s = socket.socket(); s.settimeout(3)
        try:
            s.connect((host, port)); out[f"{{name}}@{{host}}"] = "open"
        except OSError as e:
            out[f"{{name}}@{{host}}"] = type(e).__name__
        finally:
            s.close()
print(json.dumps(out))
"""
    result, out = await run_py(code, allowed_ports=[mirror["port"]], timeout=120)
    assert out is not None, result.stderr
    for what, outcome in out.items():
        assert escape(f"sandbox to the mirror's {what}", outcome != "open"), out
    assert mirror["upstream"].paths == []
