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
        if image.startswith("${"):  # the debootstrap base, tagged by its inputs
            assert args.get(image[2:-1], "").startswith("ecluse/base:bookworm"), image
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


def _one_install_step(build: list[dict], packages: str, chmod: str) -> str:
    """The build stage's one RUN that makes the environment without pip, installs from
    the context's wheels only (no index: the build has no network) and sets the modes."""
    copies = [i["value"] for i in build if i["instruction"] == "COPY"]
    assert "wheels/ /tmp/wheels/" in copies, copies
    runs = [i["value"] for i in build if i["instruction"] == "RUN"]
    assert len(runs) == 1, runs
    run = runs[0]
    for part in ("python3 -m venv --without-pip /opt/ecluse/venv", "$(echo /tmp/wheels/pip-*.whl)/pip",
                 "--no-index --find-links /tmp/wheels",
                 f"-r /tmp/requirements.txt {packages}", "! test -e /opt/ecluse/venv/bin/pip",
                 "compileall", chmod):
        assert part in run, part
    assert run.index("install") < run.index(chmod)
    return run


def test_workspace_installs_the_extension_and_the_stack():
    structure = parse("workspace")
    run = _one_install_step(stages(structure)[0], "ecluse-workspace",
                            "chmod -R a-w /opt/ecluse/venv")
    assert "import ecluse_workspace" in run
    assert (REPO / "extensions/build.sh").exists()
    requirements = (REPO / "images/workspace/requirements.txt").read_text()
    # papermill: batch runs; dask-gateway: the client, and its scheduler preload in clusters
    for pkg in ("jupyterlab", "pandas", "pyarrow", "dask", "xarray", "zarr", "papermill",
                "dask-labextension", "dask-gateway", "jupyterhub"):
        assert re.search(rf"^{re.escape(pkg)}(\[[^\]]+\])?==", requirements, re.M), pkg


def test_workspace_cannot_install_packages_or_change_the_guard():
    structure = parse("workspace")
    final = stages(structure)[-1]
    runs = " ".join(i["value"] for i in final if i["instruction"] == "RUN")
    build_runs = " ".join(i["value"] for i in stages(structure)[0] if i["instruction"] == "RUN")
    # no pip in the workspace environment (made without, checked), nor in the system Python
    assert "venv --without-pip" in build_runs and "! test -e /opt/ecluse/venv/bin/pip" in build_runs
    assert "pip uninstall -y pip" in runs
    # made read-only in the build stage (COPY --from keeps the modes), checked in the final
    # stage without a recursive chmod of the environment there (that would copy it up)
    assert "chmod -R a-w /opt/ecluse/venv" in build_runs
    assert "find /opt/ecluse/venv -perm /222" in runs
    assert not re.search(r"(chmod|chown) -R[^&;]*/opt/ecluse/venv", runs), runs
    assert "chown -R root:root /etc/jupyter" in runs and "chmod 0555 /etc/jupyter" in runs
    env = " ".join(i["value"] for i in final if i["instruction"] == "ENV")
    for setting in ("PYTHONNOUSERSITE=1", "JUPYTER_CONFIG_DIR=/etc/jupyter", "PIP_NO_INDEX=1"):
        assert setting in env
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
    build, final = stages(structure)
    build_runs = " ".join(i["value"] for i in build if i["instruction"] == "RUN")
    runs = " ".join(i["value"] for i in final if i["instruction"] == "RUN")
    # the pinned dependencies and Écluse's wheel, from the wheels only, in one step
    _one_install_step(build, "ecluse", "chmod -R go-w /opt/ecluse/venv")
    # no chmod or chown layer in the final stage, and no package manager (no network)
    assert not re.search(r"\b(chmod|chown|apt-get|pip)\b", runs), runs
    requirements = (REPO / "images/hub/requirements.txt").read_text()
    workspace = (REPO / "images/workspace/requirements.txt").read_text()
    for pkg in ("jupyterhub", "jupyterlab"):  # the same on both sides
        pin = re.search(rf"^{pkg}==\S+$", requirements, re.M)
        assert pin and pin.group(0) in workspace.splitlines(), pkg
    # the proxy from package-lock.json (node_modules), checked at build time
    copies = [i["value"] for i in final if i["instruction"] == "COPY"]
    assert any(v.startswith("node_modules/ ") for v in copies)
    assert "configurable-http-proxy --version" in runs
    # the route filter enforces the workspace's route allow-list and content rule on the
    # hub too: the extension's Python package is in the hub's environment
    assert "cp -r /tmp/ecluse_workspace /opt/ecluse/venv/lib/python3.11/site-packages/" \
        in build_runs
    # the CA bundle: the build stage only
    assert not any("build-ca" in v for v in copies)
    config = (REPO / "images/hub/jupyterhub_config.py").read_text()
    assert "configure_from_env(c)" in config and "secret" not in config.lower()
