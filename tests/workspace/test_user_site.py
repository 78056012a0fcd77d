"""The user site reaches kernels and terminals, never the workspace server (issue 24).

Researchers ``pip install --user`` into ``~/.local/lib/python3.X/site-packages``;
Python runs a ``.pth`` file and ``usercustomize.py`` found there at the start of
every interpreter that reads it. The export guard lives in the workspace server,
so the server must never read it. The attack runs in a real workspace (hub,
bubblewrap sandbox): a ``.pth`` and ``usercustomize.py`` planted from a terminal
log every process that loads them, the workspace is restarted, and the log names
the kernel and the terminal's Python (the control) but never the server, whose
command line is ``python -s …/ecluse-singleuser``.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from ecluse.dev.testing import run_in_kernel, run_in_terminal

pytestmark = [pytest.mark.root, pytest.mark.timeout(400)]

PLANT = r"""
import os, site
user_site = site.getusersitepackages()
os.makedirs(user_site, exist_ok=True)
log = os.path.expanduser("~/user-site-loaded")
line = ("import os; open(%r, 'a').write(open('/proc/self/cmdline', 'rb').read()"
        ".replace(bytes(1), b' ').decode() + '|%s\\n')")
open(os.path.join(user_site, "zz-evil.pth"), "w").write(line % (log, "pth") + "\n")
open(os.path.join(user_site, "usercustomize.py"), "w").write(line % (log, "usercustomize") + "\n")
print("RESULT" + user_site + "END")
"""

INSPECT = r"""
import json, os
def cmdline(pid):
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
    except OSError:
        return []
# the interpreter running the launcher (not bwrap, whose arguments name it too)
server = [[a.decode() for a in cmdline(p) if a] for p in os.listdir("/proc") if p.isdigit()
          and any(a.endswith(b"ecluse-singleuser") for a in cmdline(p))
          and os.path.basename(cmdline(p)[0]).startswith(b"python")]
log = os.path.expanduser("~/user-site-loaded")
loaded = open(log).read().splitlines() if os.path.exists(log) else []
print("RESULT" + json.dumps({"server": server, "loaded": loaded}) + "END")
"""


def _result(out: str) -> str:
    flat = out.replace("\r", "").replace("\n", "")
    start = flat.rfind("RESULT")
    assert start >= 0, out[-2000:]
    return flat[start + len("RESULT"):flat.index("END", start)]


def _terminal(ws, name: str, code: str) -> str:
    put = ws.request("PUT", f"api/contents/home/alice/{name}",
                     json={"type": "file", "format": "text", "content": code})
    assert put.status_code in (200, 201), put.text
    return _result(asyncio.run(run_in_terminal(ws.url, ws.token, f"python3 ~/{name}",
                                               timeout=90)))


def _restart(hub, ws, passwords):
    from .helpers import start_workspace_now

    r = ws.client.api("DELETE", "/users/alice/servers/cardio-los", ws.token)
    assert r.status_code in (202, 204), r.text
    deadline = time.monotonic() + 120
    while ws.client.api("GET", "/users/alice", ws.token).json()["servers"].get("cardio-los"):
        assert time.monotonic() < deadline, "the workspace did not stop"
        time.sleep(0.5)
    return start_workspace_now(hub, passwords, "alice", "cardio-los")


def test_the_user_site_reaches_kernels_never_the_server(workspace_hub, ldap_passwords,
                                                         start_workspace):
    ws = start_workspace("alice", "cardio-los")
    user_site = _terminal(ws, "plant.py", PLANT)
    assert user_site.startswith("/home/alice/.local/lib/python3"), user_site
    # a server started with the user site in place (what a researcher's next start is)
    ws = _restart(workspace_hub, ws, ldap_passwords)
    kernel = json.loads(asyncio.run(run_in_kernel(ws.url, ws.token, (
        "import json, site, sys\n"
        "print(json.dumps([bool(site.ENABLE_USER_SITE), site.getusersitepackages() in sys.path]))"
    ))).strip().splitlines()[-1])
    res = json.loads(_terminal(ws, "inspect.py", INSPECT))
    # the running server: python -s, the launcher
    assert len(res["server"]) == 1, res
    (argv,) = res["server"]
    assert argv[1] == "-s" and argv[2].endswith("/bin/ecluse-singleuser"), argv
    # the kernel reads the user site, and the planted files ran in it and in the
    # terminal's python (the control), never in the server
    assert kernel == [True, True], kernel
    loaded = res["loaded"]
    assert any("ipykernel" in ln and ln.endswith("|pth") for ln in loaded), loaded
    assert any("ipykernel" in ln and ln.endswith("|usercustomize") for ln in loaded), loaded
    assert any("inspect.py" in ln for ln in loaded), loaded
    assert not [ln for ln in loaded if "ecluse-singleuser" in ln], loaded
    assert ws.get("api/status").status_code == 200
