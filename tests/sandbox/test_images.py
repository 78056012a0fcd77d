"""The workspace and hub images, built for real FROM the debootstrap base and run on the
tests' own engine. Workspace: non-root, FROM the base, the Écluse extension loaded,
nothing installable at run time, no build-stage CA left in it. (The export guard needs a
hub: it refuses a download in tests/sandbox/test_docker_hub.py.) Hub: non-root, FROM the
base, JupyterHub, the proxy and Écluse run, its jupyterhub_config.py loads a deployment's
configuration, no build-stage CA left in it."""

from __future__ import annotations

import contextlib
import json
import re
import zipfile
from pathlib import Path

import pytest

from ecluse.sandbox import images

pytestmark = pytest.mark.root


def _run(docker_engine, image: str, argv: list[str], *,
         tmpfs: dict | None = None, **kw) -> str:
    engine, _ = docker_engine
    with contextlib.closing(engine.client(timeout=300)) as client:
        out = client.containers.run(
            image, argv, remove=True, network_mode="none", read_only=True,
            tmpfs=tmpfs or {"/tmp": "", "/home/researcher": "uid=1000,gid=1000"},
            cap_drop=["ALL"], security_opt=["no-new-privileges"],
            stdout=True, stderr=True, **kw)
    return out.decode()


def _non_root_from_the_base(docker_engine, image: str, user: str, uid: str, **kw) -> None:
    engine, base = docker_engine
    with contextlib.closing(engine.client()) as client:
        attrs = client.images.get(image).attrs
        layers = client.images.get(base).attrs["RootFS"]["Layers"]
    assert attrs["Config"]["User"] == user
    assert attrs["RootFS"]["Layers"][:len(layers)] == layers  # FROM the debootstrap base
    assert _run(docker_engine, image, ["id", "-u"], **kw).split() == [uid]


def test_the_image_runs_as_a_non_root_user(docker_engine, workspace_image):
    _non_root_from_the_base(docker_engine, workspace_image, "researcher", "1000")


def _tree(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*")}


def test_the_extensions_wheel_is_built_on_the_host_from_the_context(tmp_path):
    """The build has no network: the extension arrives as a wheel built on the host from
    the context's files (its prebuilt JupyterLab assets in it), the source tree untouched."""
    ext = images.REPO / "extensions/ecluse-workspace"
    before = _tree(ext)
    images.local_wheels(images.workspace_context(), images.RECIPES["workspace"], tmp_path)
    (wheel,) = tmp_path.glob("ecluse_workspace-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "ecluse_workspace/guard.py" in names, names
    assert any(n.endswith("/labextensions/@ecluse/workspace/package.json") for n in names), names
    assert _tree(ext) == before


def _environment_in_one_layer(docker_engine, image: str, *, adds: bool = False) -> None:
    """The environment (/opt/ecluse/venv) is made in one layer, and no later layer is
    more than a small fraction of it: no chmod or chown copied the environment up into
    another. ``adds``: the hub's, whose one later step installs the packages the
    workspace's environment lacks (new files only: less than half of it) and whose
    ``COPY`` steps add the proxy (files of their own, nothing of the environment)."""
    engine, _ = docker_engine
    with contextlib.closing(engine.client()) as client:
        history = list(reversed(client.images.get(image).history()))  # oldest first
    env = [i for i, h in enumerate(history)
           if "venv --without-pip /opt/ecluse/venv" in h["CreatedBy"]]
    assert len(env) == 1, [h["CreatedBy"] for h in history]
    size = history[env[0]]["Size"]
    assert size > 100e6, size  # the whole environment (not a layer of it)
    later = [(h["CreatedBy"], h["Size"]) for h in history[env[0] + 1:]
             if h["Size"] > 0.02 * size]
    if adds:
        installs = [(c, n) for c, n in later if "--find-links /tmp/wheels" in c]
        assert len(installs) == 1 and installs[0][1] < 0.5 * size, (installs, size)
        later = [(c, n) for c, n in later if (c, n) not in installs and not (
            c.lstrip().startswith("COPY") and "/opt/ecluse/venv" not in c)]
    assert not later, f"layers after the environment's ({size / 1e6:.0f} MB): {later}"


def test_the_environment_is_one_layer_no_chmod_copies_it_up(docker_engine, workspace_image):
    _environment_in_one_layer(docker_engine, workspace_image)


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
    for what in ("apt", "system_pip", "ensurepip", "venv", "env_dir_writable",
                 "guard_config_writable"):
        escape(f"install a package or change the guard at run time ({what})", not out[what])
        assert not out[what], (what, out)
    # the environment's pip, for pip install --user (into ~/.local; the environment is
    # read-only, checked above)
    assert out["pip"], out
    assert out["site"] == [], out["site"]
    assert not out["ca_in_image"] and out["pip_cert"] is None  # build stage only


# ------------------------------------------------------------------- the hub image

HUB_TMPFS = {"/tmp": "", "/var/lib/ecluse": "uid=990,gid=990,mode=0700"}

HUB_CONFIG = """
state_dir: /var/lib/ecluse
projects_file: /etc/ecluse/deployment/projects.yaml
hub: {ip: 0.0.0.0, port: 8000, public_url: "https://tre.example-hospital.fr",
      spawner: ecluse}
ldap: {embedded: false, uri: "ldaps://ldap.example-hospital.fr", security: ldaps,
       base_dn: "dc=h", bind_dn: "cn=svc,dc=h", bind_password_env: ECLUSE_LDAP_BIND_PASSWORD,
       user_search_base: "ou=people,dc=h", group_search_base: "ou=groups,dc=h"}
# the hub image runs where the cluster starts workspaces (a docker hub needs the host)
sandbox: {backend: kubernetes}
audit: {key_dir: /tmp/audit-keys, checkpoint_file: /tmp/audit-checkpoints.jsonl}
"""

#: loads the image's own jupyterhub_config.py as JupyterHub does (nothing started)
LOAD_CONFIG = r"""
import json, os
from jupyterhub.app import JupyterHub
app = JupyterHub()
app.load_config_file("/etc/ecluse/jupyterhub_config.py")
c = app.config
print(json.dumps({
    "authenticator": str(c.JupyterHub.authenticator_class),
    "spawner": str(c.JupyterHub.spawner_class),
    "bind": [c.JupyterHub.ip, c.JupyterHub.port],
    "proxy": list(c.ConfigurableHTTPProxy.command),
    "services": sorted(s["name"] for s in c.JupyterHub.services),
    "secret_modes": sorted({oct(os.stat(os.path.join(d, f)).st_mode & 0o777)
                            for d, _, files in os.walk("/var/lib/ecluse") for f in files
                            if "secret" in d}),
    "ca_in_image": any(os.path.exists(p) for p in ("/tmp/build-ca.crt", "/build-ca.crt")),
    "pip_cert": os.environ.get("PIP_CERT"),
}))
"""


@pytest.mark.docker_full
def test_the_hub_image_runs_as_a_non_root_user_from_the_base(docker_engine, hub_image):
    _non_root_from_the_base(docker_engine, hub_image, "ecluse", "990", tmpfs=HUB_TMPFS)


@pytest.mark.docker_full
def test_the_hub_environment_is_one_layer_no_chmod_copies_it_up(docker_engine, hub_image,
                                                                workspace_image):
    """FROM the workspace image: its environment's layer shared, the hub's packages added
    in one layer of new files."""
    _environment_in_one_layer(docker_engine, hub_image, adds=True)
    engine, _ = docker_engine
    with contextlib.closing(engine.client()) as client:
        ws = client.images.get(workspace_image).attrs["RootFS"]["Layers"]
        assert client.images.get(hub_image).attrs["RootFS"]["Layers"][:len(ws)] == ws


@pytest.mark.docker_full
def test_the_hub_image_runs_jupyterhub_the_proxy_and_ecluse(docker_engine, hub_image):
    out = _run(docker_engine, hub_image, ["sh", "-c",
               "jupyterhub --version && configurable-http-proxy --version "
               "&& ecluse --help"], tmpfs=HUB_TMPFS).splitlines()
    assert out[0].strip() == "6.1.1", out  # as images/hub/requirements.txt pins it
    assert re.fullmatch(r"\d+\.\d+\.\d+", out[1].strip()), out
    assert out[2].startswith("usage: ecluse "), out


@pytest.mark.docker_full
def test_the_hub_image_loads_a_deployments_configuration(docker_engine, hub_image, tmp_path):
    conf = tmp_path / "etc"
    conf.mkdir()
    (conf / "ecluse.yaml").write_text(HUB_CONFIG)
    (conf / "projects.yaml").write_text(
        "projects:\n  cardio-los: {title: Cardio, ldap_group: proj-cardio}\n")
    conf.chmod(0o755)
    for f in conf.iterdir():
        f.chmod(0o644)
    out = _run(docker_engine, hub_image, ["python3", "-c", LOAD_CONFIG], tmpfs=HUB_TMPFS,
               volumes={str(conf): {"bind": "/etc/ecluse/deployment", "mode": "ro"}},
               environment={"ECLUSE_CONFIG": "/etc/ecluse/deployment/ecluse.yaml",
                            "ECLUSE_LDAP_BIND_PASSWORD": "from-the-env-file"})
    loaded = json.loads(out.strip().splitlines()[-1])
    assert loaded["authenticator"] == "ecluse" and loaded["spawner"] == "ecluse", loaded
    assert loaded["bind"] == ["0.0.0.0", 8000], loaded
    assert loaded["proxy"] == ["/usr/local/bin/configurable-http-proxy"], loaded
    assert "airlock" in loaded["services"], loaded
    # the install-time secrets were generated in the state folder, owner-only
    assert loaded["secret_modes"] == ["0o600"], loaded
    assert not loaded["ca_in_image"] and loaded["pip_cert"] is None  # build stage only
