"""The package mirror end to end on loopback: ``ecluse packages`` then ``ecluse mirror
serve`` (proxpi behind our front) and a real ``pip install`` through it, against a
local upstream index that records every request.

What must hold: an allowed package installs with its pinned closure; a refused one does
not, with pip's clear error, and the upstream never sees its name; a newer upstream
version is not served; project A's list is not project B's; no token, a forged token
or a file outside the closure are refused by the front.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecluse.cli import main
from ecluse.config import load_settings
from ecluse.dev.ldapserver import free_port
from ecluse.mirror.allowlist import mirror_key, project_token
from ecluse.mirror.hub import workspace_pip_env
from tests.mirror.conftest import write_config


@pytest.fixture
def mirror(tmp_path: Path, upstream) -> Iterator[dict]:
    port, backend_port = free_port(), free_port()
    cfg = write_config(tmp_path, enabled=True, upstream=upstream.url, port=port,
                       backend_port=backend_port)
    proc = subprocess.Popen([sys.executable, "-m", "ecluse", "mirror", "--config", str(cfg),
                             "serve", "--listen", f"127.0.0.1:{port}"],
                            stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, "ecluse mirror serve exited at start"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/x/simple/", timeout=2)
            except urllib.error.HTTPError:
                break  # the front answers (403: no valid token)
            except OSError:
                assert time.monotonic() < deadline, "the mirror's front never answered"
                time.sleep(0.3)
        settings = load_settings(str(cfg))
        yield {"cfg": cfg, "port": port, "settings": settings,
               "key": mirror_key(settings.mirror.resolved_data_dir(settings.state_dir))}
    finally:
        proc.terminate()
        proc.wait(30)


def _index(mirror: dict, project: str) -> str:
    return f"http://127.0.0.1:{mirror['port']}/{project_token(mirror['key'], project)}/simple/"


def pip_install(mirror: dict, project: str, target: Path, *names: str):
    """``pip install`` as a workspace of ``project`` would: the environment the spawner
    gives it (:func:`workspace_pip_env`), and no other configuration of this machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(workspace_pip_env(mirror["settings"], project, "127.0.0.1"))
    env["PIP_CONFIG_FILE"] = os.devnull
    assert env["PIP_INDEX_URL"] == _index(mirror, project)
    return subprocess.run([sys.executable, "-m", "pip", "install", "--no-cache-dir",
                           "--target", str(target), *names],
                          env=env, capture_output=True, text=True, timeout=300)


def _allow(mirror: dict, project: str, requirement: str) -> None:
    assert main(["packages", "--config", str(mirror["cfg"]), "allow", project,
                 requirement]) == 0


def test_an_allowed_package_installs_with_its_closure_and_a_refused_one_never_leaves(
        mirror, upstream, tmp_path, capsys):
    _allow(mirror, "cardio-los", "alpha")
    assert "allowed alpha==1.0 for cardio-los: alpha==1.0, beta==1.0" in capsys.readouterr().out
    got = pip_install(mirror, "cardio-los", tmp_path / "t1", "alpha")
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "t1" / "alpha" / "__init__.py").exists()
    assert "VERSION = '1.0'" in (tmp_path / "t1" / "beta" / "__init__.py").read_text()

    upstream.paths.clear()
    refused = pip_install(mirror, "cardio-los", tmp_path / "t2", "secretpkg")
    assert refused.returncode != 0
    assert "No matching distribution found for secretpkg" in refused.stderr
    assert not (tmp_path / "t2" / "secretpkg").exists()
    # the front decided alone: the name never reached proxpi, so never the upstream
    assert upstream.asked_about("secretpkg") == []


def test_the_closure_is_pinned_a_newer_upstream_version_is_not_served(mirror, upstream,
                                                                      tmp_path):
    _allow(mirror, "cardio-los", "alpha")
    upstream.add("beta", "2.0")
    got = pip_install(mirror, "cardio-los", tmp_path / "t", "alpha", "beta>=2")
    assert got.returncode != 0
    assert "beta>=2" in got.stderr
    got = pip_install(mirror, "cardio-los", tmp_path / "t", "alpha")
    assert got.returncode == 0, got.stderr
    assert "VERSION = '1.0'" in (tmp_path / "t" / "beta" / "__init__.py").read_text()
    # the 2.0 file itself, asked by name, is refused
    url = _index(mirror, "cardio-los").replace("/simple/", "/files/beta/")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url + "beta-2.0-py3-none-any.whl", timeout=30)
    assert e.value.code == 404
    assert b"not a pinned file of beta" in e.value.read()


def test_project_a_list_is_not_project_b(mirror, upstream, tmp_path):
    _allow(mirror, "cardio-los", "alpha")
    upstream.paths.clear()
    got = pip_install(mirror, "air-quality", tmp_path / "t", "alpha")
    assert got.returncode != 0
    assert "No matching distribution found for alpha" in got.stderr
    assert upstream.paths == []
    with urllib.request.urlopen(_index(mirror, "air-quality"), timeout=30) as r:
        assert b"alpha" not in r.read()
    with urllib.request.urlopen(_index(mirror, "cardio-los"), timeout=30) as r:
        assert b'href="alpha/"' in r.read()


@pytest.mark.parametrize("token", ["cardio-los", "air-quality.0123456789abcdef0123456789abcdef",
                                   "nosuch.0123456789abcdef0123456789abcdef"])
def test_no_valid_token_no_answer(mirror, upstream, token):
    _allow(mirror, "cardio-los", "alpha")
    upstream.paths.clear()
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://127.0.0.1:{mirror['port']}/{token}/simple/alpha/",
                               timeout=30)
    assert e.value.code == 403
    assert upstream.paths == []


def test_the_json_index_lists_only_pinned_files(mirror, upstream):
    _allow(mirror, "cardio-los", "alpha")
    upstream.add("alpha", "0.9")
    req = urllib.request.Request(_index(mirror, "cardio-los") + "alpha/",
                                 headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        data = json.loads(r.read())
    assert [f["filename"] for f in data["files"]] == ["alpha-1.0-py3-none-any.whl"]
    assert data["files"][0]["url"] == "../../files/alpha/alpha-1.0-py3-none-any.whl"
    assert len(data["files"][0]["hashes"]["sha256"]) == 64


def test_revoke_takes_the_package_off_at_once(mirror, upstream, tmp_path, capsys):
    _allow(mirror, "cardio-los", "gamma")
    assert main(["packages", "--config", str(mirror["cfg"]), "revoke", "cardio-los",
                 "gamma"]) == 0
    got = pip_install(mirror, "cardio-los", tmp_path / "t", "gamma")
    assert got.returncode != 0
    assert main(["packages", "--config", str(mirror["cfg"]), "list", "cardio-los"]) == 0
    assert "no package allowed" in capsys.readouterr().out
