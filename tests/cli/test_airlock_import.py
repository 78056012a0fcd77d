"""``ecluse airlock import load | deliver | list``: staff-side loads on the airlock's host.

Attack: a load by anyone but root (the platform's administrators) is refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from ecluse.airlock.ingress import IngressService
from ecluse.airlock.service import AirlockService
from ecluse.cli import main
from ecluse.config import load_settings
from tests.airlock.hubstack import ECLUSE_YAML

PROJECTS = {"projects": {"cardio-los": {
    "title": "Cardiac LOS", "ldap_group": "proj-cardio-los", "gid": 7201,
    "data_owner_group": "owners-cardio-los"}}}
CSV = b"code,label\nI21,infarction\n"


def write_config(folder: Path) -> Path:
    (folder / "projects.yaml").write_text(yaml.safe_dump(PROJECTS))
    cfg = folder / "ecluse.yaml"
    cfg.write_text(yaml.safe_dump(ECLUSE_YAML))
    return cfg


def test_a_load_by_anyone_but_root_is_refused(tmp_path):
    cfg = write_config(tmp_path)
    data = tmp_path / "labels.csv"
    data.write_bytes(CSV)
    os.chmod(tmp_path, 0o755)
    for p in (cfg, tmp_path / "projects.yaml", data):
        p.chmod(0o644)
    cmd = [sys.executable, "-m", "ecluse", "airlock", "--config", str(cfg), "import", "load",
           "cardio-los", str(data), "--title", "t", "--justification", "j"]
    done = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534",
                           "--clear-groups", *cmd], capture_output=True, text=True,
                          timeout=300, cwd="/")
    assert done.returncode == 2, done
    assert "refused: staff-side imports are run by the platform's administrators as root" \
        in done.stderr
    assert not (tmp_path / "state" / "airlock" / "quarantine").exists()


def test_root_loads_another_person_approves_and_it_is_delivered(tmp_path, capsys,
                                                                monkeypatch):
    assert os.geteuid() == 0, "staff-side loads run as root"
    cfg = write_config(tmp_path)
    data = tmp_path / "labels.csv"
    data.write_bytes(CSV)
    elf = tmp_path / "tool"
    elf.write_bytes(b"\x7fELF\x02\x01\x01" + b"\x00" * 100)
    monkeypatch.setenv("SUDO_USER", "sam")
    args = ["airlock", "--config", str(cfg), "import", "load", "cardio-los", "--title",
            "ICD-10 labels", "--justification", "reference table (public, WHO)"]
    assert main([*args, str(elf)]) == 1
    assert "executable content (elf) in a data import" in capsys.readouterr().err
    assert main([*args, str(data)]) == 0
    out = capsys.readouterr().out
    iid = out.strip().splitlines()[-1].split(":")[0]
    assert iid.startswith("im-") and "(not sam) approves it" in out
    settings = load_settings(str(cfg))
    service = AirlockService.from_settings(settings)
    try:
        ingress = IngressService.from_settings(settings, service)
        sam = service.identity("sam", ["staff"])
        try:
            ingress.decide(sam, iid, "approve")
            raise AssertionError("the loader approved their own load")
        except Exception as e:  # noqa: BLE001
            assert "you made import request" in str(e)
        ann = service.identity("ann", ["staff"])
        assert ingress.decide(ann, iid, "approve")["state"] == "delivered"
    finally:
        service.close()
    dest = Path(settings.projects_root) / "cardio-los" / "inbox" / iid
    assert (dest / "labels.csv").read_bytes() == CSV
    assert "labels.csv" in (dest / "MANIFEST.sha256").read_text()
    assert main(["airlock", "--config", str(cfg), "import", "list"]) == 0
    assert f"{iid}  delivered" in capsys.readouterr().out
