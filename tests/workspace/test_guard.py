"""Bypass tests of the export guard and the export API, on a real sandboxed workspace.

Every export channel is tried over HTTP with alice's valid token: the answer
is 403, names the airlock, and carries nothing of the file. The export API
is attacked with symlinks, ``..``, absolute paths, FIFOs, devices, folders
and files over the limit. One workspace (alice, cardio-los) serves the module.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import requests

from ecluse.dev.testing import project_token_scopes, run_in_terminal

from .helpers import past_the_filter

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]

SECRET = "NIR-1850775123456-ROWLEVEL"
CSV = f"patient_id,age,los\n{SECRET},71,12\n"
NOTEBOOK = {
    "cells": [{"cell_type": "code", "execution_count": None, "id": "c1", "metadata": {},
               "outputs": [], "source": "print(1 + 1)"}],
    "metadata": {}, "nbformat": 4, "nbformat_minor": 5,
}


def put_file(ws, path: str, content: str, fmt: str = "text") -> None:
    r = ws.request("PUT", f"api/contents/{path}",
                   json={"type": "file", "format": fmt, "content": content})
    assert r.status_code in (200, 201), r.text


@pytest.fixture(scope="module")
def ws(workspace_hub, ldap_passwords):
    from .helpers import HubClient, Workspace

    c = HubClient(workspace_hub.url)
    assert c.login("alice", ldap_passwords["alice"]).status_code == 302
    token = c.new_token("alice", project_token_scopes("cardio-los"))
    c.api("POST", "/users/alice/servers/cardio-los", token)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        s = c.api("GET", "/users/alice", token).json()["servers"].get("cardio-los")
        if s and s["ready"]:
            break
        time.sleep(0.3)
    else:
        raise AssertionError("workspace did not start")
    w = Workspace(c, token, f"{workspace_hub.url}{s['url']}", "alice")
    put_file(w, "project/secret.csv", CSV)
    put_file(w, "project/secret.py", f"ROWS = {SECRET!r}\n")
    put_file(w, "home/alice/notes.md", "# notes\nnothing secret\n")
    put_file(w, "home/alice/big.txt", ("x" * 1023 + "\n") * 3 * 1024)  # 3 MiB of text
    r = w.request("PUT", "api/contents/home/alice/nb.ipynb",
                  json={"type": "notebook", "content": NOTEBOOK})
    assert r.status_code in (200, 201), r.text
    out = asyncio.run(run_in_terminal(w.url, token, " && ".join([
        "mkfifo /project/pipe.csv",
        "ln -s /data/stays/stays.csv /project/link.csv",
        "ln -s /etc/passwd ~/pw.txt",
        "ln -s /project ~/proj",
        f"printf '\\000\\001{SECRET}' > /project/blob.txt",
        "truncate -s 700M /project/huge.csv",
        "(cd /project && nohup python3 -m http.server 9000 >/dev/null 2>&1 &)",
        "K=~/.local/share/jupyter/kernels/evil && mkdir -p $K && cp /project/secret.csv $K/",
        "echo '{\"argv\":[\"python3\"],\"display_name\":\"e\",\"language\":\"python\"}'"
        " > $K/kernel.json",
        "L=~/.local/share/jupyter/labextensions/evil/static && mkdir -p $L",
        "cp /project/secret.csv $L/ && echo '{\"name\":\"evil\"}' > $L/../package.json",
        "echo setup-ok",
    ])))
    assert "setup-ok" in out, out
    return w


CHANNELS = [
    "files/project/secret.csv",
    "files/project/secret.csv?download=1",
    "files/project/secret.py?download=1",
    "files/home/alice/nb.ipynb",
    "files/home/alice/notes.md",
    "files//project/secret.csv",
    "files/home/alice/proj/secret.csv",
    "view/project/secret.csv",
    "view/home/alice/nb.ipynb",
    "nbconvert/html/home/alice/nb.ipynb",
    "nbconvert/html/home/alice/nb.ipynb?download=true",
    "nbconvert/script/home/alice/nb.ipynb?download=true",
    "nbconvert/asciidoc/home/alice/nb.ipynb",
    "api/nbconvert",
    "api/contents/project/secret.csv",
    "api/contents/project/secret.csv?type=file&format=text",
    "api/contents/project/secret.csv?type=file&format=base64",
    "api/contents/project/link.csv",
    "api/contents/home/alice/proj/secret.csv",
    "api/contents/project/blob.txt",
    "api/contents/project/secret.py?format=base64",
    "api/contents/home/alice/big.txt",
    "api/contents/project/huge.csv",
    "api/contents/project/pipe.csv",
    "api/contents/data/stays/stays.csv",
    "proxy/9000/secret.csv",
    "proxy/absolute/9000/secret.csv",
    "proxy/localhost:9000/secret.csv",
    "proxy/9000/",
    "kernelspecs/evil/secret.csv",
    "kernelspecs/python3/kernel.json",
]


@pytest.mark.parametrize("channel", CHANNELS)
def test_export_channel_is_refused(ws, channel):
    r = ws.get(channel, timeout=20)
    assert r.status_code == 403, (channel, r.status_code, r.text[:300])
    assert SECRET not in r.text and "cardio-los-1" not in r.text
    assert "airlock" in r.text.lower() or "Request export" in r.text
    head = ws.request("HEAD", channel.split("?")[0], timeout=20)
    assert head.status_code in (403, 405), (channel, head.status_code)


def test_user_data_dir_is_not_served(ws):
    for url in ("lab/extensions/evil/static/secret.csv", "lab/extensions/evil/package.json"):
        r = ws.get(url)
        assert r.status_code != 200 and SECRET not in r.text, url
    assert ws.get("kernelspecs/python3/logo-64x64.png").status_code == 200


def test_posting_a_notebook_to_nbconvert_is_refused(ws):
    r = ws.request("POST", "nbconvert/html", data=json.dumps({"content": NOTEBOOK}))
    assert r.status_code == 403 and "airlock" in r.text.lower()


def test_notebooks_code_and_text_still_open_and_save(ws):
    r = ws.get("api/contents/home/alice/nb.ipynb")
    assert r.status_code == 200 and r.json()["content"]["cells"][0]["source"] == "print(1 + 1)"
    r = ws.get("api/contents/home/alice/notes.md")
    assert r.status_code == 200 and "nothing secret" in r.json()["content"]
    # the user chose to write data into code: that is the screen channel (threat model)
    assert ws.get("api/contents/project/secret.py").status_code == 200
    listing = ws.get("api/contents/project").json()
    assert {"secret.csv", "huge.csv"} <= {c["name"] for c in listing["content"]}
    meta = ws.get("api/contents/project/secret.csv?content=0")
    assert meta.status_code == 200 and meta.json()["content"] is None
    put_file(ws, "home/alice/notes.md", "# notes\nedited\n")
    assert "edited" in ws.get("api/contents/home/alice/notes.md").json()["content"]
    nb = dict(NOTEBOOK, cells=[dict(NOTEBOOK["cells"][0], source="print(2)")])
    r = ws.request("PUT", "api/contents/home/alice/nb.ipynb",
                   json={"type": "notebook", "content": nb})
    assert r.status_code == 200
    # copying a data file inside the workspace is fine (nothing leaves)
    r = ws.request("POST", "api/contents/home/alice", json={"copy_from": "project/secret.csv"})
    assert r.status_code == 201, r.text


def test_lab_page_disables_download_and_export_plugins(ws):
    r = ws.get("lab", timeout=30)
    assert r.status_code == 200
    for plugin in ("@jupyterlab/docmanager-extension:download",
                   "@jupyterlab/filebrowser-extension:download",
                   "@jupyterlab/filebrowser-extension:open-browser-tab",
                   "@jupyterlab/notebook-extension:export"):
        assert plugin in r.text, plugin


def export(ws, paths, **kw):
    body = {"paths": paths, "title": "Table", "justification": "Paper, table 2"} | kw
    return ws.request("POST", "ecluse/export", json=body, timeout=60)


@pytest.mark.parametrize(("paths", "status", "code"), [
    (["project/link.csv"], 403, "outside_workspace"),
    (["home/alice/pw.txt"], 403, "outside_workspace"),
    (["project/../data/stays/stays.csv"], 403, "outside_workspace"),
    (["home/alice/../../data/stays/stays.csv"], 403, "outside_workspace"),
    (["../../../../etc/passwd"], 403, "outside_workspace"),
    (["/data/stays/stays.csv"], 403, "outside_workspace"),
    (["/etc/jupyter/jupyter_server_config.json"], 403, "outside_workspace"),
    (["/dev/zero"], 403, "outside_workspace"),
    (["/proc/self/environ"], 403, "outside_workspace"),
    (["project/pipe.csv"], 400, "special_file"),
    (["project"], 400, "not_a_file"),
    (["project/huge.csv"], 413, "too_large"),
    (["project/nope.csv"], 404, "not_found"),
    (["project/secret.csv", "home/alice/proj/secret.csv"], 400, "duplicate_name"),
    (["project/secret.csv\x00.txt"], 400, "invalid_path"),
    ([], 400, "no_files"),
])
def test_export_api_refuses(ws, paths, status, code):
    t0 = time.monotonic()
    r = export(ws, paths)
    assert time.monotonic() - t0 < 20  # a FIFO does not block the server
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and err["message"]
    assert SECRET not in r.text and "root:x:0" not in r.text


def test_export_api_needs_title_and_justification(ws):
    assert export(ws, ["project/secret.csv"], title="").json()["error"]["code"] == "invalid_input"
    r = export(ws, ["project/secret.csv"], justification=" ")
    assert r.status_code == 400 and "justification" in r.json()["error"]["message"]


def test_export_streams_files_to_the_airlock_with_the_users_token(ws, workspace_hub):
    r = export(ws, ["project/secret.csv", "home/alice/notes.md"], files={
        "home/alice/notes.md": {"context": "Notes on the method", "controls": "no figures"}})
    assert r.status_code == 201, r.text
    data = r.json()
    assert data["state"] == "submitted", data
    verdicts = {f["name"]: f["verdict"] for f in data["files"]}
    assert verdicts["secret.csv"] == "block"
    assert data["url"].endswith(f"/services/airlock/requests/{data['id']}")
    airlock = f"{workspace_hub.url}/services/airlock/api/v1"
    req = requests.get(f"{airlock}/requests/{data['id']}", timeout=30,
                       headers={"Authorization": f"token {ws.token}"}).json()
    assert req["requester"] == "alice" and req["project"] == "cardio-los"
    assert {f["name"] for f in req["files"]} == {"secret.csv", "notes.md"}
    import hashlib

    sha = {f["name"]: f["sha256"] for f in req["files"]}
    assert sha["secret.csv"] == hashlib.sha256(CSV.encode()).hexdigest()
    # the panel's listing
    listing = ws.get("ecluse/requests").json()
    mine = [x for x in listing["requests"] if x["id"] == data["id"]]
    assert mine and {f["verdict"] for f in mine[0]["files"]} >= {"block"}


def test_export_streams_its_progress_per_file(ws, workspace_hub):
    """``"progress": true``: one JSON line per step (what the export dialog shows): the
    files, the bytes sent of each, ``checking`` while the airlock checks it in the
    background, its verdict, and last the answer (submitted once every file is judged)."""
    r = export(ws, ["project/secret.csv"], progress=True)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/x-ndjson")
    events = [json.loads(line) for line in r.text.splitlines() if line.strip()]
    size = len(CSV.encode())
    assert events[0] == {"files": [{"path": "project/secret.csv", "name": "secret.csv",
                                    "size": size}]}
    sent = [e["sent"] for e in events if "sent" in e]
    assert sent[0] == 0 and sent[-1] == size and sent == sorted(sent)
    verdicts = [e["verdict"] for e in events if "verdict" in e]
    assert verdicts[0] == "checking" and verdicts[-1] == "block", verdicts
    result = events[-1]["result"]
    assert result["state"] == "submitted"
    assert [f["verdict"] for f in result["files"]] == ["block"]


def test_export_sets_context_and_supporting_files_and_keeps_a_draft_without_context(
        ws, workspace_hub):
    airlock = f"{workspace_hub.url}/services/airlock/api/v1"
    auth = {"Authorization": f"token {ws.token}"}
    # a file the checks cannot judge (free text), with nothing said about it: the draft is
    # kept with every file, and the answer says which file lacks what
    r = export(ws, ["home/alice/notes.md", "project/secret.csv"],
               files={"project/secret.csv": {"supporting": True}})
    assert r.status_code == 201, r.text
    data = r.json()
    assert data["state"] == "draft"
    assert "notes.md" in data["submit_refused"] and "no context" in data["submit_refused"]
    files = {f["name"]: f for f in data["files"]}
    assert files["notes.md"]["needs_context"] and files["secret.csv"]["supporting"]
    req = requests.get(f"{airlock}/requests/{data['id']}", headers=auth, timeout=30).json()
    assert req["state"] == "draft"
    assert {f["name"]: f["supporting"] for f in req["files"]} == {
        "notes.md": False, "secret.csv": True}
    # given them, the same export is submitted, the texts on the airlock's files
    r = export(ws, ["home/alice/notes.md"], files={"home/alice/notes.md": {
        "context": "Method notes for the paper", "controls": "no figures in it"}})
    assert r.status_code == 201 and r.json()["state"] == "submitted", r.text
    req = requests.get(f"{airlock}/requests/{r.json()['id']}", headers=auth, timeout=30).json()
    assert [(f["context"], f["controls"]) for f in req["files"]] == [
        ("Method notes for the paper", "no figures in it")]
    # descriptions of paths not exported, or of the wrong shape, are refused
    bad = export(ws, ["home/alice/notes.md"], files={"project/secret.csv": {"context": "x"}})
    assert bad.status_code == 400 and "not among the paths" in bad.json()["error"]["message"]
    bad = export(ws, ["home/alice/notes.md"], files={"home/alice/notes.md": {"supporting": 1}})
    assert bad.status_code == 400


def test_other_users_cannot_use_the_workspace_or_its_export_api(ws, workspace_hub,
                                                                 ldap_passwords):
    from .helpers import HubClient

    c = HubClient(workspace_hub.url)
    c.login("bob", ldap_passwords["bob"])
    token = c.new_token("bob")
    r = requests.post(ws.url + "ecluse/export", json={"paths": ["project/secret.csv"]},
                      headers={"Authorization": f"token {token}"}, timeout=30,
                      allow_redirects=False)
    assert r.status_code in (302, 403)


def test_user_config_cannot_turn_the_guard_off(ws, workspace_hub):
    override = {
        "ServerApp": {"authorizer_class": "jupyter_server.auth.authorizer.AllowAllAuthorizer",
                      "contents_manager_class":
                          "jupyter_server.services.contents.largefilemanager.LargeFileManager",
                      "jpserver_extensions": {"ecluse_workspace": False}},
    }
    labconf = {"disabledExtensions": {"@jupyterlab/docmanager-extension:download": False}}
    cmd = " && ".join([
        "mkdir -p ~/.jupyter/labconfig",
        f"echo '{json.dumps(override)}' > ~/.jupyter/jupyter_server_config.json",
        f"echo '{json.dumps(labconf)}' > ~/.jupyter/labconfig/page_config.json",
        "(touch /etc/jupyter/x 2>/dev/null && echo etc-writable || echo etc-readonly)",
        "echo $JUPYTER_CONFIG_DIR",
    ])
    out = asyncio.run(run_in_terminal(ws.url, ws.token, cmd))
    assert "etc-readonly" in out and "etc-writable" not in out.replace("echo etc-writable", "")
    c = ws.client
    assert c.api("DELETE", "/users/alice/servers/cardio-los", ws.token).status_code in (202, 204)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        s = c.api("GET", "/users/alice", ws.token).json()["servers"].get("cardio-los")
        if not s or not (s["ready"] or s["pending"]):
            break
        time.sleep(0.3)
    r = c.api("POST", "/users/alice/servers/cardio-los", ws.token)
    assert r.status_code in (201, 202), r.text
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if ws.get("api/status").status_code == 200:
            break
        time.sleep(0.5)
    r = ws.get("files/project/secret.csv?download=1")
    assert r.status_code == 403 and SECRET not in r.text
    assert ws.get("api/contents/project/secret.csv").status_code == 403
    assert ws.request("POST", "ecluse/export", json={}).status_code == 400  # still loaded
    assert "@jupyterlab/docmanager-extension:download" in ws.get("lab").text


# ---- default deny at the router (issue 12, item 1)

UNLISTED = [
    ("GET", "dask/dashboard-check/http%3A%2F%2F127.0.0.1%3A9000%2F"),
    ("GET", "dask/dashboard-check/http://127.0.0.1:9000/"),
    ("GET", "dask/dashboard/0b6e9f1c-1f2b-4c1e-9a3e-1234567890ab/individual-plots.json"),
    ("GET", "server-proxy/servers-info"),
    ("GET", "api/spec.yaml"),
    ("GET", "metrics"),
    ("GET", "lab/api/extensions"),
    ("GET", "lab/api/news"),
    ("POST", "lab/api/build"),
    ("GET", "api/contents/project%2Fsecret.csv"),
    ("OPTIONS", "api/contents/project/secret.csv"),
    ("GET", "no/such/route"),
]


@pytest.mark.parametrize(("method", "path"), UNLISTED)
@pytest.mark.parametrize("wall", ["host filter", "in-server guard alone"])
def test_routes_outside_the_allow_list_are_refused(ws, workspace_hub, wall, method, path):
    """dask-labextension's dashboard-check fetches any URL inside the sandbox and returns
    what it answered (here a ``python -m http.server`` in /project): refused before its
    handler runs, like every route not on the allow-list — by the host's route filter in
    front of the workspace, and by the server's own guard when reached past the filter."""
    put_file(ws, "project/individual-plots.json", json.dumps({"rows": SECRET}))
    client = ws if wall == "host filter" else past_the_filter(workspace_hub, ws)
    r = client.request(method, path, timeout=20)
    assert r.status_code == 403, (path, r.status_code, r.text[:300])
    assert SECRET not in r.text
    body = r.json()
    assert "airlock" in body["message"].lower()
    if wall == "host filter":
        assert "route allow-list" in body["message"] and body["reason"] != "export-guard"
    else:
        assert body["reason"] == "export-guard" and \
            "not one the Écluse workspace serves" in body["message"]


def test_the_allow_list_keeps_jupyterlab_working(ws):
    r = ws.get("")  # the server's root sends the browser to JupyterLab
    assert r.status_code == 302 and "/lab" in r.headers["Location"], r.status_code
    for path in ("lab", "api/status", "api/kernelspecs", "api/sessions", "api/me",
                 "lab/api/settings", "lab/api/workspaces", "lab/api/translations",
                 "ecluse/config", "ecluse/requests", "dask/clusters",
                 "api/contents/home/alice?content=1"):
        r = ws.get(path)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])


def test_a_parquet_file_renamed_ipynb_is_refused(ws):
    """The issue's first finding: row-level Parquet renamed notes.ipynb, read as base64."""
    import base64

    from tests.support import canary

    parquet = canary.data_files()["canary.parquet"]
    put_file(ws, "home/alice/notes.ipynb", base64.b64encode(parquet).decode(), "base64")
    for q in ("?type=file&format=base64", "?type=file&format=text", "", "?type=notebook"):
        r = ws.get(f"api/contents/home/alice/notes.ipynb{q}")
        assert r.status_code in (400, 403), (q, r.status_code)
        assert not canary.leaks(r.content, canary.needles({"p": parquet})), q


def test_images_still_open_in_the_image_viewer(ws):
    import base64
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b""))
    put_file(ws, "home/alice/figure.png", base64.b64encode(png).decode(), "base64")
    r = ws.get("api/contents/home/alice/figure.png?type=file&format=base64")
    assert r.status_code == 200, r.text[:300]
    assert base64.b64decode(r.json()["content"]) == png
