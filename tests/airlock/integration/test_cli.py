"""``ecluse airlock migrate`` and ``ecluse airlock list`` on a real config."""

from __future__ import annotations

import yaml

from ecluse.cli import main

from ..hubstack import ECLUSE_YAML, PROJECTS


def test_migrate_then_list(tmp_path, capsys):
    (tmp_path / "projects.yaml").write_text(yaml.safe_dump(PROJECTS))
    cfg = tmp_path / "ecluse.yaml"
    cfg.write_text(yaml.safe_dump(ECLUSE_YAML))
    assert main(["airlock", "--config", str(cfg), "migrate"]) == 0
    assert "revision 0001" in capsys.readouterr().out
    assert (tmp_path / "state" / "airlock.sqlite").exists()
    assert main(["airlock", "list", "--config", str(cfg), "--json"]) == 0
    assert capsys.readouterr().out == ""
    assert oct((tmp_path / "state" / "airlock").stat().st_mode & 0o777) == oct(0o700)


def test_serve_outside_the_hub_says_what_is_missing(tmp_path, capsys, monkeypatch):
    for k in ("JUPYTERHUB_API_TOKEN", "JUPYTERHUB_API_URL", "JUPYTERHUB_SERVICE_PREFIX"):
        monkeypatch.delenv(k, raising=False)
    (tmp_path / "projects.yaml").write_text(yaml.safe_dump(PROJECTS))
    cfg = tmp_path / "ecluse.yaml"
    cfg.write_text(yaml.safe_dump(ECLUSE_YAML))
    assert main(["airlock", "serve", "--config", str(cfg)]) == 2
    assert "JupyterHub-managed service: missing JUPYTERHUB_API_TOKEN" in capsys.readouterr().err
