"""The package mirror from a real local sandbox: the mirror's port is the one new port a
workspace reaches, pip installs an allowed package through it, a refused name never
reaches the (local, recording) upstream, and the mirror's backend and the upstream stay
out of reach.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ecluse.cli import main
from ecluse.config import load_settings
from ecluse.dask.sizing import sizing
from ecluse.dev.ldapserver import free_port
from ecluse.hub.spawner import EcluseSpawner
from ecluse.hub.workspace import workspace_env, workspace_mounts
from ecluse.mirror.hub import workspace_pip_env
from ecluse.sandbox import IMAGE_PYTHON_ENV, SandboxSpec
from tests.sandbox.conftest import ALICE, BOB, TrackingDockerSandbox, both_backends
from tests.support.pypi import LocalIndex

PROJECTS = {"projects": {
    "covid-los": {"title": "Length of stay", "ldap_group": "p-covid", "gid": 7001},
    "onco-surv": {"title": "Oncology survival", "ldap_group": "p-onco", "gid": 7002},
}}


@pytest.fixture
def mirror(tmp_path: Path, deployment, backend) -> Iterator[dict]:
    upstream = LocalIndex(tmp_path / "upstream")
    upstream.add("alpha", "1.0", requires=("beta>=1.0",))
    upstream.add("beta", "1.0")
    upstream.add("secretpkg", "1.0")
    upstream.start()
    host = backend.host_address()
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


# ------------------------------------------------------------- pip install --user

@pytest.fixture
def clean_user_site(deployment, covid) -> Iterator[Path]:
    """Alice's ~/.local in covid-los, absent before and removed after (the homes are
    shared by the session's sandboxes)."""
    local = Path(deployment.projects_root) / covid.slug / "home" / ALICE.name / ".local"
    shutil.rmtree(local, ignore_errors=True)
    yield local
    shutil.rmtree(local, ignore_errors=True)
    assert not local.exists()


@pytest.fixture
def ws_backend(request, backend, deployment):
    """``backend`` running what workspaces run: on docker, the workspace image (the
    ``backend`` fixture's docker sandboxes run the bare base image)."""
    if backend.host_python:
        return backend
    engine, _ = request.getfixturevalue("docker_engine")
    return TrackingDockerSandbox(settings=deployment, docker_url=engine.url,
                                 image=request.getfixturevalue("workspace_image"))


def _server_cmd(backend, settings) -> list[str]:
    """The spawner's workspace server command for ``backend``."""
    spawner = EcluseSpawner(settings=settings)
    spawner._backend = backend
    return spawner.workspace_cmd


def _python(backend) -> str:
    """The workspace environment's Python (the image's on docker, whose PATH in a test
    sandbox is the system's)."""
    return backend.python if backend.host_python else str(IMAGE_PYTHON_ENV / "bin" / "python")


def _workspace(backend, settings, project, host: str, *, extra_env=None) -> dict:
    """What the spawner gives a workspace: its environment (no PYTHONNOUSERSITE) and its
    mounts (on the local backend, the environment's pyvenv.cfg that reads the user site;
    the image has its own)."""
    if not backend.host_python:  # the deployment's settings name the local backend
        settings = settings.model_copy(update={"sandbox": settings.sandbox.model_copy(
            update={"backend": "docker"})})
    env = workspace_env(settings, project, ALICE, host, sizing(project))
    env.update(extra_env or {})
    mounts = workspace_mounts(settings, project, ALICE) if backend.host_python else []
    return {"env": env, "extra_mounts": mounts}


async def _run(backend, project, code: str, *, timeout: float, **kw):
    spec = SandboxSpec(project, ALICE, [_python(backend), "-c", textwrap.dedent(code)], **kw)
    result = await backend.run(spec, timeout=timeout)
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("{")]
    return result, (json.loads(lines[-1]) if lines else None)


PIP_USER = """
import json, subprocess, sys
# a terminal's pip (the workspace's PATH)
p = subprocess.run(["pip", "install", "--user", "--no-cache-dir", "alpha"],
                   capture_output=True, text=True)
probe = "import alpha, beta, json; print(json.dumps([alpha.VERSION, beta.VERSION, alpha.__file__]))"
kernel = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
server = subprocess.run([sys.executable, "-s", "-c", probe], capture_output=True, text=True)
print(json.dumps({"rc": p.returncode, "err": p.stderr[-2000:],
                  "kernel": kernel.stdout.strip() and json.loads(kernel.stdout),
                  "kernel_err": kernel.stderr[-1000:], "server_rc": server.returncode}))
"""


@both_backends
async def test_pip_install_user_in_a_workspace(ws_backend, deployment, covid, mirror,
                                               clean_user_site):
    """``pip install --user`` of an allowed package through the mirror, with the
    workspace's own environment and mounts: a fresh Python (a kernel, a terminal's)
    imports it from the user site; ``python -s`` (the server's) does not."""
    ws = _workspace(ws_backend, deployment, covid, mirror["host"],
                    extra_env=_env(mirror, "covid-los"))
    result, out = await _run(ws_backend, covid, PIP_USER, timeout=300,
                             allowed_ports=[mirror["port"]], **ws)
    assert out and out["rc"] == 0, (result.stderr, out)
    assert out["kernel"], out
    version, beta_version, where = out["kernel"]
    assert [version, beta_version] == ["1.0", "1.0"]
    assert where.startswith(f"/home/{ALICE.name}/.local/lib/python"), where
    assert out["server_rc"] != 0  # not on the server's path
    # nothing outside the user's home: the environment is read-only
    assert "Permission denied" not in out["err"]


ATTACK = """
import json, os, subprocess, sys, site
cmd = {cmd}
marks = {{k: "/tmp/" + k for k in ("shadow", "pth", "usercustomize")}}
user_site = site.getusersitepackages()
os.makedirs(user_site)
# the server's interpreter and flags, the user site present
probe = "import json, site, sys; print(json.dumps([sys.flags.no_user_site, " \\
        "bool(site.ENABLE_USER_SITE), [p for p in sys.path if '.local' in p]]))"
flags = json.loads(subprocess.run([*cmd[:-1], "-c", probe], capture_output=True,
                                  text=True).stdout)
# the launcher without -s refuses to start
unflagged = subprocess.run([cmd[0], cmd[-1], "--help"], capture_output=True, text=True)
# a package named like the guard's, a .pth file and usercustomize in the user site
os.makedirs(os.path.join(user_site, "ecluse_workspace"))
for path, mark in ((os.path.join(user_site, "ecluse_workspace", "__init__.py"), "shadow"),
                   (os.path.join(user_site, "usercustomize.py"), "usercustomize")):
    open(path, "w").write(f"open({{marks[mark]!r}}, 'w').close()\\n")
open(os.path.join(user_site, "zz-evil.pth"), "w").write(
    f"import os; open({{marks['pth']!r}}, 'w').close()\\n")
server = subprocess.run([*cmd, "--help"], capture_output=True, text=True)
loaded_by_server = [k for k, m in marks.items() if os.path.exists(m)]
# the same .pth and usercustomize do run in a fresh Python (a kernel's): the planting
# works (there the environment's site-packages come before the user site: the shadow
# package is not imported)
subprocess.run([cmd[0], "-c", "pass"], capture_output=True)
loaded_by_kernel = [k for k, m in marks.items() if os.path.exists(m)]
print(json.dumps({{"flags": flags, "unflagged_rc": unflagged.returncode,
                  "unflagged_err": unflagged.stderr[-1000:], "server_rc": server.returncode,
                  "server_out": server.stdout[-300:] + server.stderr[-1500:],
                  "server": loaded_by_server, "kernel": loaded_by_kernel}}))
"""


@both_backends
async def test_the_user_site_never_reaches_the_workspace_server(ws_backend, deployment, covid,
                                                                escape, clean_user_site):
    """A module named like the guard's, a .pth file and usercustomize.py in the user site
    are not loaded by the workspace server's own command (the spawner's); its
    interpreter runs without the user site, and the launcher refuses to start with it."""
    cmd = _server_cmd(ws_backend, deployment)
    ws = _workspace(ws_backend, deployment, covid, ws_backend.host_address())
    result, out = await _run(ws_backend, covid, ATTACK.format(cmd=repr(cmd)), timeout=300,
                             **ws)
    assert out is not None, result.stderr
    no_user_site, enabled, on_path = out["flags"]
    assert escape("the user site on the workspace server's sys.path",
                  no_user_site == 1 and not enabled and on_path == []), out["flags"]
    assert out["unflagged_rc"] == 1 and "refusing to start" in out["unflagged_err"], out
    assert out["server_rc"] == 0, out["server_out"]
    for what in ("shadow", "pth", "usercustomize"):
        assert escape(f"the user site's {what} loaded by the workspace server",
                      what not in out["server"]), out
    assert sorted(out["kernel"]) == ["pth", "usercustomize"], out
