"""The workspace image, built for real FROM the debootstrap base and run on the tests'
own engine: non-root, FROM the base, the Écluse extension loaded, nothing installable
at run time, no build-stage CA left in it. (The export guard needs a hub: it refuses a
download in tests/sandbox/test_docker_hub.py.)"""

from __future__ import annotations

import contextlib
import json
import re

import pytest

pytestmark = pytest.mark.root


def _run(docker_engine, image: str, argv: list[str], **kw) -> str:
    engine, _ = docker_engine
    with contextlib.closing(engine.client(timeout=300)) as client:
        out = client.containers.run(image, argv, remove=True, network_mode="none",
                                    read_only=True,
                                    tmpfs={"/tmp": "", "/home/researcher": "uid=1000,gid=1000"},
                                    cap_drop=["ALL"], security_opt=["no-new-privileges"],
                                    stdout=True, stderr=True, **kw)
    return out.decode()


def test_the_image_runs_as_a_non_root_user(docker_engine, workspace_image):
    engine, base = docker_engine
    with contextlib.closing(engine.client()) as client:
        attrs = client.images.get(workspace_image).attrs
        layers = client.images.get(base).attrs["RootFS"]["Layers"]
    assert attrs["Config"]["User"] == "researcher"
    assert attrs["RootFS"]["Layers"][:len(layers)] == layers  # FROM the debootstrap base
    assert _run(docker_engine, workspace_image, ["id", "-u"]).split() == ["1000"]


CHECKS = r"""
import json, os, subprocess, sys, sysconfig
def ok(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0
    except OSError:
        return False
def writable(d):
    try:
        open(os.path.join(d, "evil.py"), "w").close()
        return True
    except OSError:
        return False
ext = subprocess.run(["jupyter", "server", "extension", "list"], capture_output=True, text=True)
print(json.dumps({
    "apt": ok(["apt-get", "install", "-y", "curl"]),
    "pip": ok([sys.executable, "-m", "pip", "--version"]),
    "system_pip": ok(["/usr/bin/python3", "-m", "pip", "--version"]),
    "ensurepip": ok([sys.executable, "-m", "ensurepip", "--user"]),
    "venv": ok([sys.executable, "-m", "venv", "/tmp/v"]),
    "site": [d for d in sys.path if d and os.path.isdir(d) and writable(d)],
    "env_dir_writable": writable(sys.prefix),
    "ca_in_image": any(os.path.exists(p) for p in ("/tmp/build-ca.crt", "/build-ca.crt")),
    "pip_cert": os.environ.get("PIP_CERT"),
    "extensions": ext.stdout + ext.stderr,
    "guard_config": json.load(open("/etc/jupyter/jupyter_server_config.json")),
    "guard_config_writable": os.access("/etc/jupyter/jupyter_server_config.json", os.W_OK)
        or os.access("/etc/jupyter", os.W_OK),
}))
"""


def test_extension_loaded_and_nothing_installable_at_run_time(docker_engine, workspace_image,
                                                              escape):
    out = json.loads(_run(docker_engine, workspace_image,
                          ["python3", "-c", CHECKS]).strip().splitlines()[-1])
    listed = re.sub(r"\x1b\[[0-9;]*m", "", out["extensions"])
    assert "ecluse_workspace enabled" in listed, listed
    assert re.search(r"ecluse_workspace [\d.]+ OK", listed), listed
    assert (out["guard_config"]["ServerApp"]["authorizer_class"]
            == "ecluse_workspace.guard.EcluseAuthorizer")
    for what in ("apt", "pip", "system_pip", "ensurepip", "venv", "env_dir_writable",
                 "guard_config_writable"):
        escape(f"install a package or change the guard at run time ({what})", not out[what])
        assert not out[what], (what, out)
    assert out["site"] == [], out["site"]
    assert not out["ca_in_image"] and out["pip_cert"] is None  # build stage only
