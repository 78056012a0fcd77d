"""The hub role's state volume tasks (``hub_state_volume``), run for real on a loop device.

The deployment itself (tests/deploy/test_playbook.py) uses the ``device`` mode;
here the shell commands of the tasks are rendered as Ansible would and run
against a real block device: a blank device gets a filesystem, one that has
a filesystem is never reformatted, and the mount is idempotent.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import jinja2
import pytest
import yaml

from tests.support.mounts import unmount_under

ANSIBLE = Path(__file__).resolve().parents[2] / "ansible"
TASKS = yaml.safe_load((ANSIBLE / "roles/hub/tasks/configure.yml").read_text())
MiB = 1024 * 1024


def _task(name: str) -> dict:
    return next(t for t in TASKS if t["name"] == name)


def _render(template: str, **variables) -> str:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    env.filters["quote"] = lambda v: shlex.quote(str(v))
    env.filters["to_json"] = lambda v: __import__("json").dumps(v)
    return env.from_string(template).render(**variables)


def _sh(task: str, **variables) -> str:
    cmd = _render(_task(task)["ansible.builtin.shell"]["cmd"], **variables)
    r = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture
def device(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("the state device tests need root (loop devices, mount)")
    image = tmp_path / "device.img"
    with open(image, "wb") as fh:
        fh.truncate(32 * MiB)
    dev = subprocess.run(["losetup", "-f", "--show", str(image)], check=True,
                         capture_output=True, text=True).stdout.strip()
    try:
        yield dev
    finally:
        unmount_under(tmp_path)
        subprocess.run(["losetup", "-d", dev], capture_output=True)


def test_a_blank_device_is_formatted_once_and_mounted_once(device, tmp_path):
    state = tmp_path / "state"
    (state / "db").mkdir(parents=True)
    v = {"hub_state_device": device, "ecluse_state_dir": str(state)}
    assert "created" in _sh("Give the state device an ext4 filesystem when it has none", **v)
    assert "mounted" in _sh("Mount the state device", **v)
    (state / "db" / "audit.sqlite").write_text("the audit log")
    # a second deploy: nothing formatted, nothing mounted again
    assert "created" not in _sh("Give the state device an ext4 filesystem when it has none", **v)
    assert "mounted" not in _sh("Mount the state device", **v)
    opts = [line.split() for line in open("/proc/self/mounts")
            if line.split()[1] == str(state / "db")]
    assert len(opts) == 1 and {"nosuid", "nodev"} <= set(opts[0][3].split(","))
    subprocess.run(["umount", str(state / "db")], check=True)
    # unmounted (a reboot without fstab): formatting is still refused, the data is there
    assert "created" not in _sh("Give the state device an ext4 filesystem when it has none", **v)
    assert "mounted" in _sh("Mount the state device", **v)
    assert (state / "db" / "audit.sqlite").read_text() == "the audit log"


def test_the_modes_map_to_the_settings():
    template = (ANSIBLE / "roles/hub/templates/ecluse.yaml.j2").read_text()
    block = template[template.index("state_volume:"):template.index("hub:")]
    for role_mode, mode in (("device", "mounted"), ("image", "image"), ("none", "none")):
        data = yaml.safe_load(_render(block, hub_state_volume=role_mode,
                                      hub_state_image_size="2G"))
        assert data["state_volume"] == {"mode": mode, "size": "2G"}


def test_device_tasks_run_in_the_device_mode_only():
    for name in ("Give the state device an ext4 filesystem when it has none",
                 "Mount the state device", "Persist the state device's mount in /etc/fstab"):
        assert "hub_state_volume == 'device'" in str(_task(name)["when"])
