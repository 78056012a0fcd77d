"""Policies of the container images, checked with a Dockerfile parser."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

dockerfile_parse = pytest.importorskip(
    "dockerfile_parse", reason="install the test extra: pip install -e '.[test]'")

REPO = Path(__file__).resolve().parents[2]
IMAGES = ["workspace", "hub"]


def parse(name: str):
    parser = dockerfile_parse.DockerfileParser(str(REPO / "images" / name / "Dockerfile"))
    return parser.structure


def stages(structure) -> list[list[dict]]:
    out: list[list[dict]] = []
    for instr in structure:
        if instr["instruction"] == "FROM":
            out.append([])
        if out:
            out[-1].append(instr)
    return out


@pytest.mark.parametrize("name", IMAGES)
def test_base_images_are_pinned(name):
    froms = [i["value"].split()[0] for i in parse(name) if i["instruction"] == "FROM"]
    assert froms
    stage_names = {i["value"].split()[-1] for i in parse(name)
                   if i["instruction"] == "FROM" and " AS " in i["value"].upper()}
    args = dict(i["value"].split("=", 1) for i in parse(name)
                if i["instruction"] == "ARG" and "=" in i["value"])
    for image in froms:
        if image in stage_names:
            continue
        if image.startswith("${"):  # the debootstrap base, or the workspace image FROM it,
            # tagged by their inputs (ecluse.sandbox.images)
            assert args.get(image[2:-1], "").startswith(
                ("ecluse/base:bookworm", "ecluse/workspace")), image
            continue
        assert "@sha256:" in image or re.search(r":[^:/]*\d[^:/]*$", image), \
            f"{name}: base image {image!r} is not pinned to a versioned tag or digest"
        assert not image.endswith(":latest")


@pytest.mark.parametrize("name", IMAGES)
def test_final_stage_runs_as_a_non_root_user(name):
    final = stages(parse(name))[-1]
    users = [i["value"].strip() for i in final if i["instruction"] == "USER"]
    assert users, f"{name}: the final stage sets no USER"
    assert users[-1].split(":")[0] not in ("root", "0")


@pytest.mark.parametrize("name", IMAGES)
def test_no_add_from_urls(name):
    for i in parse(name):
        if i["instruction"] == "ADD":
            assert not re.search(r"(https?|ftp|git)://|git@", i["value"]), i["content"]


@pytest.mark.parametrize("name", IMAGES)
def test_nothing_is_installed_at_run_time(name):
    for i in parse(name):
        if i["instruction"] in ("CMD", "ENTRYPOINT"):
            assert not re.search(r"\b(pip|conda|mamba|apt-get|apt|npm|uv)\b", i["value"]), \
                i["content"]


def _one_install_step(structure, packages: str, chmod: str | None) -> str:
    """The one RUN that installs the environment from the bind-mounted wheels only (no
    index: the build has no network; RUN --mount: the wheels are in no layer), pip run
    from its own wheel, compiled, with the modes set in the same step."""
    assert not [i for i in structure if i["instruction"] == "COPY" and "wheels" in i["value"]]
    assert not any("--from" in i["value"] for i in structure if i["instruction"] == "COPY")
    runs = [i["value"] for i in structure if i["instruction"] == "RUN"
            and "--find-links" in i["value"]]
    assert len(runs) == 1, runs
    run = runs[0]
    for part in ("--mount=type=bind,source=wheels,target=/tmp/wheels",
                 "$(echo /tmp/wheels/pip-*.whl)/pip", "--no-index --find-links /tmp/wheels",
                 f"-r /tmp/requirements.txt {packages}", "test -x /opt/ecluse/venv/bin/pip",
                 "compileall", *([chmod] if chmod else [])):
        assert part in run, part
    if chmod:
        assert run.index("install") < run.index(chmod)
    return run


def test_workspace_installs_the_extension_and_the_stack():
    structure = parse("workspace")
    assert len(stages(structure)) == 1  # one stage: nothing copied from a build stage
    run = _one_install_step(structure, "ecluse-workspace", "chmod -R a-w /opt/ecluse/venv")
    assert "python3 -m venv --without-pip /opt/ecluse/venv" in run
    assert "import ecluse_workspace" in run
    # resolved against the hub's pins: the hub image, FROM this one, only adds packages
    assert "source=images/hub/requirements.txt,target=/tmp/constraints.txt" in run
    assert "-c /tmp/constraints.txt" in run
    assert (REPO / "extensions/build.sh").exists()
    requirements = (REPO / "images/workspace/requirements.txt").read_text()
    # papermill: batch runs; dask-gateway: the client, and its scheduler preload in clusters
    for pkg in ("jupyterlab", "pandas", "pyarrow", "dask", "xarray", "zarr", "papermill",
                "dask-labextension", "dask-gateway", "jupyterhub"):
        assert re.search(rf"^{re.escape(pkg)}(\[[^\]]+\])?==", requirements, re.M), pkg


def test_workspace_pins_agree_with_the_hubs():
    """Every pin of the workspace is the hub's (the workspace is resolved against the hub's
    pins as constraints: a different one could not be installed)."""
    hub = {re.split(r"==", ln)[0].lower().replace("_", "-"): ln.split("==")[1]
           for ln in (REPO / "images/hub/requirements.txt").read_text().splitlines()
           if "==" in ln and not ln.startswith("#")}
    for ln in (REPO / "images/workspace/requirements.txt").read_text().splitlines():
        if "==" in ln and not ln.startswith("#"):
            name, version = ln.split("==")
            name = re.sub(r"\[.*\]", "", name).lower().replace("_", "-")
            assert hub.get(name) == version, (name, version, hub.get(name))


def test_the_hubs_pins_cover_ecluses_dependencies():
    """The hub image installs Écluse from the wheels of its pins only (no index): every
    dependency of pyproject.toml must be pinned there, or the build fails."""
    import tomllib

    pinned = {ln.split("==")[0].lower().replace("_", "-")
              for ln in (REPO / "images/hub/requirements.txt").read_text().splitlines()
              if "==" in ln and not ln.startswith("#")}
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    missing = []
    for dep in deps:
        name = re.match(r"[A-Za-z0-9_.-]+", dep).group(0).lower().replace("_", "-")
        if name not in pinned:
            missing.append(dep)
    assert not missing, f"pin these in images/hub/requirements.txt: {missing}"


def test_workspace_cannot_install_packages_or_change_the_guard():
    structure = parse("workspace")
    runs = [i["value"] for i in structure if i["instruction"] == "RUN"]
    install = _one_install_step(structure, "ecluse-workspace", "chmod -R a-w /opt/ecluse/venv")
    # pip in the workspace environment (installed from its wheel, checked) for researchers'
    # pip install --user, which the environment's pyvenv.cfg allows (user site read); none
    # in the system Python
    assert "venv --without-pip" in install and "test -x /opt/ecluse/venv/bin/pip" in install
    assert "grep -qx 'include-system-site-packages = true'" in install
    assert "pip uninstall -y pip" in " ".join(runs)
    # read-only in the installing step, checked there; no later recursive chmod or chown
    # of the environment (that would copy it up into one more layer)
    assert "find /opt/ecluse/venv -perm /222" in install
    later = " ".join(runs[runs.index(install) + 1:])
    assert not re.search(r"(chmod|chown) -R[^&;]*/opt/ecluse/venv", later), later
    assert "chown -R root:root /etc/jupyter" in later and "chmod 0555 /etc/jupyter" in later
    env = " ".join(i["value"] for i in structure if i["instruction"] == "ENV")
    for setting in ("JUPYTER_CONFIG_DIR=/etc/jupyter", "PIP_NO_INDEX=1"):
        assert setting in env
    # kernels and terminals read the user site; the server, which holds the guard, never:
    # python -s (ecluse_workspace.singleuser refuses to start otherwise)
    assert "PYTHONNOUSERSITE" not in env
    cmd = [json.loads(i["value"]) for i in structure if i["instruction"] == "CMD"]
    assert cmd == [["/opt/ecluse/venv/bin/python", "-s", "/opt/ecluse/venv/bin/ecluse-singleuser"]]
    # the hub image, FROM this one, does not read a user site
    hub_env = " ".join(i["value"] for i in parse("hub") if i["instruction"] == "ENV")
    assert "PYTHONNOUSERSITE=1" in hub_env
    config = (REPO / "images/workspace/jupyter_server_config.json").read_text()
    assert "ecluse_workspace.guard.EcluseAuthorizer" in config


def test_workspace_image_phones_nobody():
    """The image's JupyterLab: no news feed, no update check, the announcements plugin
    disabled and locked: the same configuration as the hub generates for workspaces."""
    from ecluse.hub import workspace

    config = json.loads((REPO / "images/workspace/jupyter_server_config.json").read_text())
    assert config["LabApp"]["news_url"] is None
    assert config["LabApp"]["check_for_updates_class"].endswith("NeverCheckForUpdate")
    labconfig = REPO / "images/workspace/labconfig"
    assert json.loads((labconfig / "page_config.json").read_text()) == workspace.page_config()
    assert (json.loads((labconfig / "default_setting_overrides.json").read_text())
            == workspace.LAB_SETTING_DEFAULTS)
    copies = [i["value"] for i in stages(parse("workspace"))[-1] if i["instruction"] == "COPY"]
    assert "images/workspace/labconfig/ /etc/jupyter/labconfig/" in copies, copies
    # and the French language pack
    requirements = (REPO / "images/workspace/requirements.txt").read_text()
    assert re.search(r"^jupyterlab-language-pack-fr-fr==", requirements, re.M | re.I)


def test_hub_image_has_jupyterhub_the_proxy_and_ecluse():
    structure = parse("hub")
    assert len(stages(structure)) == 1
    # FROM the workspace image (its environment shared), given by `ecluse images build`
    args = dict(i["value"].split("=", 1) for i in structure
                if i["instruction"] == "ARG" and "=" in i["value"])
    assert args["BASE"].startswith("ecluse/workspace"), args
    # the pinned dependencies and Écluse's wheel, from the wheels only, in one step; the
    # workspace's files are read-only, pip's are not group- or world-writable (checked)
    install = _one_install_step(structure, "ecluse", "find /opt/ecluse/venv -perm /022")
    runs = [i["value"] for i in structure if i["instruction"] == "RUN"]
    later = " ".join(runs[runs.index(install) + 1:])
    # no chmod or chown layer after the install, and no package manager (no network)
    assert not re.search(r"\b(chmod|chown|apt-get|pip)\b", later), later
    requirements = (REPO / "images/hub/requirements.txt").read_text()
    workspace = (REPO / "images/workspace/requirements.txt").read_text()
    for pkg in ("jupyterhub", "jupyterlab"):  # the same on both sides
        pin = re.search(rf"^{pkg}==\S+$", requirements, re.M)
        assert pin and pin.group(0) in workspace.splitlines(), pkg
    # the proxy from package-lock.json (node_modules), checked at build time
    copies = [i["value"] for i in structure if i["instruction"] == "COPY"]
    assert any(v.startswith("node_modules/ ") for v in copies)
    assert "configurable-http-proxy --version" in later
    # the route filter enforces the workspace's route allow-list and content rule on the
    # hub too: the extension's Python package is in the (workspace's) environment
    assert "import ecluse.hub.hubconfig, ecluse_workspace, jupyterhub" in install
    # the workspace's user is not the hub's
    assert "userdel --remove researcher" in " ".join(runs)
    # the CA bundle: the build stage only
    assert not any("build-ca" in v for v in copies)
    config = (REPO / "images/hub/jupyterhub_config.py").read_text()
    assert "configure_from_env(c)" in config and "secret" not in config.lower()
