"""Unit tests (no hub, no sandbox): the read/export policy and the generated config."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from ecluse.config import load_settings
from ecluse.dask.sizing import sizing
from ecluse.sandbox import UserIdentity


@pytest.fixture(scope="module")
def policy(workspace_extension):
    from ecluse_workspace import policy

    return policy


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    project, home, outside = tmp_path / "project", tmp_path / "home", tmp_path / "data"
    for d in (project, home, outside):
        d.mkdir()
    (project / "t.csv").write_text("a,b\n1,2\n")
    (outside / "secret.csv").write_text("x\n")
    (project / "link.csv").symlink_to(outside / "secret.csv")
    (project / "inner.csv").symlink_to(project / "t.csv")
    (home / "proj").symlink_to(project)
    os.mkfifo(project / "fifo")
    return {"project": project, "home": home, "outside": outside, "root": tmp_path}


def _open(policy, tree, path, **limits):
    return policy.open_for_export(
        path, root_dir=str(tree["root"]), allowed_roots=[str(tree["project"]), str(tree["home"])],
        limits=policy.ExportLimits(**limits) if limits else policy.ExportLimits())


def test_export_accepts_regular_files_inside_the_roots(policy, tree):
    for p in ("project/t.csv", str(tree["project"] / "t.csv"), "project/inner.csv",
              "home/proj/t.csv"):
        f = _open(policy, tree, p)
        try:
            assert f.size == 8 and os.read(f.fd, 100) == b"a,b\n1,2\n"
        finally:
            f.close()


@pytest.mark.parametrize(("path", "code"), [
    ("project/link.csv", "outside_workspace"),
    ("project/../data/secret.csv", "outside_workspace"),
    ("home/proj/../../data/secret.csv", "outside_workspace"),
    ("/etc/passwd", "outside_workspace"),
    ("project/fifo", "special_file"),
    ("project", "not_a_file"),
    ("project/none.csv", "not_found"),
    ("", "invalid_path"),
    ("project/t.csv\0", "invalid_path"),
])
def test_export_refusals(policy, tree, path, code):
    with pytest.raises(policy.Refused) as e:
        _open(policy, tree, path)
    assert e.value.code == code and e.value.message


def test_export_size_and_count_limits(policy, tree):
    with pytest.raises(policy.Refused) as e:
        _open(policy, tree, "project/t.csv", max_file_bytes=4)
    assert e.value.status == 413
    roots = [str(tree["project"]), str(tree["home"])]
    with pytest.raises(policy.Refused) as e:
        policy.open_all_for_export(["project/t.csv"] * 3, root_dir=str(tree["root"]),
                                   allowed_roots=roots, limits=policy.ExportLimits(max_files=2))
    assert e.value.code == "too_many_files"
    with pytest.raises(policy.Refused) as e:
        policy.open_all_for_export(["project/t.csv", "home/proj/t.csv"],
                                   root_dir=str(tree["root"]), allowed_roots=roots,
                                   limits=policy.ExportLimits())
    assert e.value.code == "duplicate_name"


def test_read_policy(policy, tree):
    p = policy.ReadPolicy(max_text_bytes=100)
    d = tree["home"]
    (d / "a.py").write_text("print(1)\n")
    (d / "b.txt").write_text("x" * 200)
    (d / "c.xyz").write_bytes(b"\0\1\2")
    (d / "d.parquet").write_bytes(b"PAR1")
    (d / "e.csv.gz").write_bytes(b"x")
    p.check(str(d / "a.py"))
    p.check(str(d))
    p.check(str(d / "missing.py"))
    for name, code in (("b.txt", "too_large"), ("c.xyz", "binary_file"),
                       ("d.parquet", "data_file"), ("e.csv.gz", "data_file")):
        with pytest.raises(policy.Refused) as e:
            p.check(str(d / name))
        assert e.value.code == code and "Request export" in e.value.message
    with pytest.raises(policy.Refused):
        p.check(str(d / "a.py"), requested_format="base64")
    with pytest.raises(policy.Refused):
        p.check(str(tree["project"] / "fifo"))


def test_proxy_rule(workspace_extension):
    from ecluse_workspace.guard import REFUSED_URL, proxy_refused

    assert proxy_refused("proxy/9000/x", []) and proxy_refused("proxy/8787/status", [])
    assert not proxy_refused("proxy/8787/status", [8787])
    assert proxy_refused("proxy/localhost:8787/status", [8787])
    assert proxy_refused("proxy/absolute/8787/", [])
    for url in ("files/x", "files", "view/a", "nbconvert/html/a", "api/nbconvert"):
        assert REFUSED_URL.match(url)
    assert not REFUSED_URL.match("api/contents/files/x")


def test_generated_config_is_read_only_and_complete(make_config, workspace_extension):
    from ecluse.hub import workspace

    settings = load_settings(make_config())
    d = workspace.config_dir(settings)
    server = json.loads((d / "jupyter_server_config.json").read_text())["ServerApp"]
    assert server["authorizer_class"] == "ecluse_workspace.guard.EcluseAuthorizer"
    assert server["jpserver_extensions"]["ecluse_workspace"] is True
    page = json.loads((d / "labconfig" / "page_config.json").read_text())
    for plugin in workspace.LAB_DISABLED_PLUGINS:
        assert page["disabledExtensions"][plugin] and page["lockedExtensions"][plugin]
    assert (d / "migrated").exists()
    for f in d.rglob("*"):
        assert not (f.stat().st_mode & 0o022), f  # nobody but root writes
    project = settings.projects["cardio-los"]
    user = UserIdentity("alice", 20001, 20000)
    env = workspace.workspace_env(settings, project, user, None, sizing(project))
    assert env["JUPYTER_CONFIG_DIR"] == "/etc/jupyter"
    assert env["JUPYTER_CONFIG_PATH"] == "/etc/jupyter/locale/en:/etc/jupyter"
    assert env["ECLUSE_AIRLOCK_URL"].endswith(f":{settings.airlock.port}/services/airlock/")
    (mount, venv_cfg) = workspace.workspace_mounts(settings, project, user)
    assert mount.target == "/etc/jupyter" and mount.read_only and Path(mount.source) == d
    # the local backend's environment reads the user site in workspaces (pip install
    # --user), through a read-only copy of its pyvenv.cfg; the host's file is unchanged
    assert "PYTHONNOUSERSITE" not in env
    assert env["PATH"].startswith(f"{sys.prefix}/bin:")
    host_cfg = Path(sys.prefix) / "pyvenv.cfg"
    assert venv_cfg.target == str(host_cfg) and venv_cfg.read_only
    key = "include-system-site-packages"
    made = Path(venv_cfg.source).read_text().splitlines()
    assert f"{key} = true" in made and not made[-1].startswith(" ")
    assert ([ln for ln in made if not ln.startswith(key)]
            == [ln for ln in host_cfg.read_text().splitlines() if not ln.startswith(key)])
    assert f"{key} = false" in host_cfg.read_text()
    assert not (Path(venv_cfg.source).stat().st_mode & 0o022)


def test_nothing_phones_home_in_the_generated_config(make_config, workspace_extension):
    """No news feed, no update check, the announcements plugin disabled and locked."""
    from ecluse.hub import workspace

    settings = load_settings(make_config())
    d = workspace.config_dir(settings)
    lab = json.loads((d / "jupyter_server_config.json").read_text())["LabApp"]
    assert lab["news_url"] is None
    assert lab["check_for_updates_class"].endswith("NeverCheckForUpdate")
    page = json.loads((d / "labconfig" / "page_config.json").read_text())
    plugin = "@jupyterlab/apputils-extension:announcements"
    assert page["disabledExtensions"][plugin] and page["lockedExtensions"][plugin]
    defaults = json.loads((d / "labconfig" / "default_setting_overrides.json").read_text())
    assert defaults["@jupyterlab/apputils-extension:notification"] == {
        "checkForUpdates": False, "fetchNews": "false"}


def test_each_workspace_locale_has_its_read_only_folder(make_config, workspace_extension):
    from ecluse.hub import workspace

    settings = load_settings(make_config())
    d = workspace.config_dir(settings)
    for locale in workspace.LAB_LOCALES.values():
        f = d / "locale" / locale / "labconfig" / "default_setting_overrides.json"
        assert json.loads(f.read_text()) == {workspace.TRANSLATION_PLUGIN: {"locale": locale}}
        assert workspace.locale_config_path(locale) == f"/etc/jupyter/locale/{locale}"
    for f in d.rglob("*"):
        assert not (f.stat().st_mode & 0o022), f
    project = settings.projects["cardio-los"]
    user = UserIdentity("alice", 20001, 20000)
    env = workspace.workspace_env(settings, project, user, None, sizing(project), "fr_FR")
    assert env["JUPYTER_CONFIG_PATH"] == "/etc/jupyter/locale/fr_FR:/etc/jupyter"
    with pytest.raises(ValueError, match="unsupported workspace locale"):
        workspace.workspace_env(settings, project, user, None, sizing(project), "../../x")


@pytest.mark.parametrize(("choice", "accept", "expected"), [
    (None, "fr-FR,fr;q=0.9,en-US;q=0.8,en;q=0.7", "fr_FR"),
    (None, "fr", "fr_FR"),
    (None, "en-US,en;q=0.9,fr;q=0.8", "en"),
    (None, "de-DE,de;q=0.9,fr;q=0.5,en;q=0.4", "fr_FR"),  # first one a workspace has
    (None, "en;q=0.5, fr;q=0.8", "fr_FR"),  # by quality, not by order
    (None, "fr;q=0, en", "en"),  # q=0: not acceptable
    (None, "de, *;q=0.1", "en"),
    (None, "", "en"),
    (None, None, "en"),
    (None, "fr;q=abc", "en"),
    ("fr_FR", "en-US", "fr_FR"),  # the user's choice wins
    ("fr-FR", None, "fr_FR"),
    ("en", "fr-FR", "en"),
    ("xx", "fr-FR", "fr_FR"),  # an unknown choice falls back to the browser
    ("../../etc", None, "en"),
])
def test_choose_locale(choice, accept, expected):
    from ecluse.hub.workspace import choose_locale

    assert choose_locale(choice, accept) == expected


def test_every_string_of_the_extension_has_its_french_translation():
    """Each ``trans.__('…')`` of the JupyterLab extension (every ``src/*.ts``) is in the
    French catalogue of its gettext domain (``ecluse_workspace``), and the catalogue has
    nothing else."""
    import re

    ext = Path(__file__).resolve().parents[2] / "extensions" / "ecluse-workspace"
    index = (ext / "src" / "index.ts").read_text()
    assert "load(DOMAIN)" in index and "const DOMAIN = 'ecluse_workspace'" in index
    # every file of the UI (check.ts and the like get their bundle from index.ts)
    source = "\n".join(p.read_text() for p in sorted((ext / "src").glob("*.ts")))
    strings = set(re.findall(r"trans\.__\(\s*'((?:[^'\\]|\\.)*)'", source))
    assert len(strings) > 15, strings
    catalogue = json.loads((ext / "ecluse_workspace" / "locale" / "fr_FR" / "LC_MESSAGES"
                            / "ecluse_workspace.json").read_text())
    assert catalogue[""]["domain"] == "ecluse_workspace"
    messages = {k for k in catalogue if k}
    assert strings - {"Écluse"} <= messages, sorted(strings - messages)
    assert messages <= strings, sorted(messages - strings)
    for msgid in messages:
        (msgstr,) = catalogue[msgid]
        # the same placeholders, translated
        assert sorted(re.findall(r"%\d", msgid)) == sorted(re.findall(r"%\d", msgstr)), msgid
