"""The workspace server is non-dumpable: a kernel of the same uid cannot read or patch it.

Issue 12, item 2 (the in-server half). The export guard runs inside the
workspace server, as the researcher's uid, next to their kernels and
terminals; this kernel has no Yama, so without ``PR_SET_DUMPABLE`` 0 any
process of the user could open ``/proc/<server pid>/mem`` and rewrite the
guard (or read the server's hub token from ``/proc/<pid>/environ``). The
attack runs inside a real sandboxed workspace, from a terminal (what a
researcher types), against the server process and, as a control, against
another process of the same uid that is dumpable.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from ecluse.dev.testing import run_in_terminal

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]

ATTACK = r"""
import json, os, signal, subprocess, time
me = os.getuid()
def owner(pid):
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None
def cmdline(pid):
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
    except OSError:
        return ""
server = [int(p) for p in os.listdir("/proc") if p.isdigit()
          and "ecluse-singleuser" in cmdline(int(p)) and int(p) != os.getpid()]
def attempt(pid):
    out = {}
    for what in ("mem", "environ"):
        try:
            with open(f"/proc/{pid}/{what}", "rb") as fh:
                if what == "mem":
                    maps = open(f"/proc/{pid}/maps").read().splitlines()
                    start = int(maps[0].split("-")[0], 16)
                    fh.seek(start)
                data = fh.read(64)
            out[what] = "read %d bytes" % len(data)
        except OSError as e:
            out[what] = "refused: " + (e.strerror or str(e))
    try:
        with open(f"/proc/{pid}/mem", "r+b") as fh:
            out["mem-write"] = "opened for writing"
    except OSError as e:
        out["mem-write"] = "refused: " + (e.strerror or str(e))
    return out
control = subprocess.Popen(["sleep", "60"])
time.sleep(0.2)
res = {"uid": me, "server": server, "server_uid": [owner(p) for p in server],
       "attack": {p: attempt(p) for p in server}, "control": attempt(control.pid)}
control.kill()
print("RESULT" + json.dumps(res) + "END")
"""


@pytest.fixture(scope="module")
def ws(workspace_hub, ldap_passwords):
    from .helpers import start_workspace_now

    return start_workspace_now(workspace_hub, ldap_passwords, "alice", "cardio-los")


def _run(ws, code: str) -> dict:
    put = ws.request("PUT", "api/contents/home/alice/attack.py",
                     json={"type": "file", "format": "text", "content": code})
    assert put.status_code in (200, 201), put.text
    out = asyncio.run(run_in_terminal(ws.url, ws.token, "python3 ~/attack.py", timeout=60))
    flat = out.replace("\r", "").replace("\n", "")
    start = flat.rfind("RESULT{")
    assert start >= 0, out[-2000:]
    return json.loads(flat[start + len("RESULT"):flat.index("END", start)])


def test_a_process_of_the_same_uid_cannot_read_or_patch_the_server(ws):
    res = _run(ws, ATTACK)
    assert res["server"], res  # the server was found (same PID namespace, same uid)
    # the control: a dumpable process of the same uid is open to it (no Yama here),
    # so the refusal below is the server's own doing
    assert res["control"]["mem"].startswith("read"), res
    for pid, attempt in res["attack"].items():
        assert attempt["mem"].startswith("refused"), (pid, attempt)
        assert attempt["mem-write"].startswith("refused"), (pid, attempt)
        assert attempt["environ"].startswith("refused"), (pid, attempt)
    assert res["uid"] in res["server_uid"], res  # the server itself, not only bwrap
    # and the server still works
    assert ws.get("api/status").status_code == 200


def test_the_launcher_refuses_to_start_when_it_cannot_be_made_non_dumpable(workspace_extension):
    probe = (
        "import ecluse_workspace.singleuser as s\n"
        "def broken():\n"
        "    raise s.NotDumpableError('prctl(PR_SET_DUMPABLE, 0) failed: test')\n"
        "s.make_non_dumpable = broken\n"
        "raise SystemExit(s.main(['--version']))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1 and "refusing to start" in out.stderr


def test_make_non_dumpable(workspace_extension):
    probe = ("import ctypes, ecluse_workspace.singleuser as s\n"
             "libc = ctypes.CDLL(None)\n"
             "before = libc.prctl(3, 0, 0, 0, 0)\n"
             "s.make_non_dumpable()\n"
             "print(before, libc.prctl(3, 0, 0, 0, 0))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.split() == ["1", "0"], out.stderr
