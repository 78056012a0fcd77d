"""The Makefile's virtualenv is made from the distribution's Python, and made anew when an
older checkout's was made from another interpreter (pyenv under /root, mode 0700, which the
services' own users cannot run)."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "venv-base.py"


def base_check(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(folder)], capture_output=True,
                          text=True, timeout=60)


def test_a_virtualenv_of_another_interpreter_is_made_anew(tmp_path):
    (tmp_path / "pyvenv.cfg").write_text(
        "home = /root/.pyenv/versions/3.11.7/bin\nversion = 3.11.7\n")
    proc = base_check(tmp_path)
    assert proc.returncode == 1
    assert "was made from /root/.pyenv/versions/3.11.7/bin" in proc.stderr
    assert base_check(tmp_path / "missing").returncode == 1


def test_a_virtualenv_of_this_interpreter_is_kept(tmp_path):
    venv.EnvBuilder(with_pip=False).create(tmp_path / "env")
    proc = base_check(tmp_path / "env")
    assert proc.returncode == 0, proc.stderr


def test_the_makefile_prefers_the_distributions_python():
    proc = subprocess.run(["make", "-s", "-C", str(REPO), "--eval",
                           "print-python: ; @echo $(PYTHON)", "print-python"],
                          capture_output=True, text=True, timeout=60)
    expected = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else "python3"
    assert proc.stdout.strip() == expected, proc.stderr
