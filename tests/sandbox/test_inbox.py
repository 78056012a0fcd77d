"""``/project/inbox``: a project's approved imports, a read-only mount of its own in every
backend (issue 24 item 1). The attack: a workspace writing into its inbox."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .conftest import both_backends

pytestmark = [pytest.mark.root, both_backends]


def _deliver(deployment, covid) -> Path:
    """What the airlock's delivery leaves: ``inbox/<request>/`` root:project, read-only."""
    inbox = Path(deployment.projects_root) / covid.slug / "inbox"
    inbox.mkdir(mode=0o750, parents=True, exist_ok=True)
    os.chown(inbox, 0, covid.gid)
    req = inbox / "im-0123456789abcdef"
    req.mkdir(mode=0o550, exist_ok=True)
    (req / "ref.csv").write_text("code,label\n1,a\n")
    (req / "MANIFEST.sha256").write_text("00  ref.csv\n")
    for p in (req / "ref.csv", req / "MANIFEST.sha256"):
        os.chown(p, 0, covid.gid)
        p.chmod(0o440)
    os.chown(req, 0, covid.gid)
    req.chmod(0o550)
    return req


async def test_a_workspace_reads_its_inbox_and_cannot_write_into_it(run_py, backend, covid,
                                                                    deployment, escape):
    _deliver(deployment, covid)

    code = """
import json, os
def attempt(fn):
    try:
        fn(); return "done"
    except OSError as e:
        return e.strerror
req = "/project/inbox/im-0123456789abcdef"
mounts = [line.split() for line in open("/proc/self/mountinfo")]
inbox = [m for m in mounts if m[4] == "/project/inbox"]
out = {
    "read": open(req + "/ref.csv").read(),
    "mount_options": inbox[0][5].split(",") if inbox else None,
    "new_file": attempt(lambda: open("/project/inbox/new.csv", "w").close()),
    "overwrite": attempt(lambda: open(req + "/ref.csv", "w").close()),
    "append": attempt(lambda: open(req + "/ref.csv", "a").close()),
    "new_in_request": attempt(lambda: open(req + "/x", "w").close()),
    "remove": attempt(lambda: os.unlink(req + "/ref.csv")),
    "rename_inbox": attempt(lambda: os.rename("/project/inbox", "/project/old")),
    "remove_inbox": attempt(lambda: os.rmdir("/project/inbox")),
    "chmod": attempt(lambda: os.chmod(req, 0o777)),
    "mkdir": attempt(lambda: os.mkdir("/project/inbox/d")),
    "project_still_writable": attempt(lambda: open("/project/mine.txt", "w").close()),
}
print(json.dumps(out))
"""
    result, out = await run_py(code)
    assert out is not None, result
    assert out["read"] == "code,label\n1,a\n"
    assert out["mount_options"] is not None and "ro" in out["mount_options"], out
    for what in ("new_file", "overwrite", "append", "new_in_request", "remove",
                 "rename_inbox", "remove_inbox", "chmod", "mkdir"):
        assert escape(f"write into /project/inbox: {what}", out[what] != "done"), (what, out)
    assert out["project_still_writable"] == "done"
    host = Path(deployment.projects_root) / covid.slug
    assert not (host / "inbox" / "new.csv").exists()
    assert (host / "inbox" / "im-0123456789abcdef" / "ref.csv").read_text() == \
        "code,label\n1,a\n"


async def test_a_member_link_named_inbox_does_not_redirect_the_mount(run_py, backend, covid,
                                                                     deployment):
    """A member who left a link called ``inbox`` in the shared folder (pointing at their
    home) gets it moved aside; the mount goes on the real mount point."""
    pdir = Path(deployment.projects_root) / covid.slug
    (pdir / "shared").mkdir(parents=True, exist_ok=True)
    link = pdir / "shared" / "inbox"
    if link.exists() or link.is_symlink():
        if link.is_dir() and not link.is_symlink():
            link.rmdir()
        else:
            link.unlink()
    link.symlink_to("/tmp")
    # the other backend's case may have moved a link aside in this folder already
    moved_before = sorted(n.name for n in (pdir / "shared").glob("inbox.*"))
    _deliver(deployment, covid)
    result, out = await run_py("""
import json, os
print(json.dumps({"inbox": sorted(os.listdir("/project/inbox")),
                  "moved": sorted(n for n in os.listdir("/project") if n.startswith("inbox."))}))
""")
    assert out["inbox"] == ["im-0123456789abcdef"], result
    new = sorted(set(out["moved"]) - set(moved_before))
    assert len(new) == 1 and new[0].startswith("inbox.moved-"), (out, moved_before, result)
    assert not (pdir / "shared" / "inbox").is_symlink()
