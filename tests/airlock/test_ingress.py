"""Import requests end to end on the service (``ecluse.airlock.ingress``): quarantine,
checks, two people, delivery into ``inbox/<request>`` with a manifest, every step audited.

Attacks: an approval by the requester (under their own name), by a member of another
project's data-owner group, by a plain member; a binary in a data import; a workspace
token opening an import."""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path

import pytest

from ecluse.airlock.errors import InvalidInput, PermissionDenied, PolicyViolation
from ecluse.airlock.ingress import DataOwners, IngressService
from ecluse.config import Project
from ecluse.settings.ingress import ImportSettings

ELF = b"\x7fELF\x02\x01\x01" + b"\x00" * 120
CSV = b"code,label\nI21,infarction\nI50,heart failure\n"

PROJECTS = {
    "cardio-los": Project(slug="cardio-los", title="Cardiac LOS", ldap_group="proj-cardio-los",
                          gid=7101, data_owner_group="owners-cardio-los"),
    "air-quality": Project(slug="air-quality", title="Air quality",
                           ldap_group="proj-air-quality", gid=7102,
                           data_owner_group="owners-air-quality"),
}


class DataOwnersFromGroups(DataOwners):
    """The directory's memberships from a table (a real :class:`DataOwners` otherwise)."""

    TABLE = {"olga": ["owners-cardio-los"], "gus": ["owners-air-quality", "proj-air-quality"],
             "alice": ["owners-cardio-los"]}

    def __init__(self) -> None:
        super().__init__(settings=None)

    def memberships(self, name: str) -> list[str]:
        return self.TABLE.get(name, [])


@pytest.fixture
def ingress(service, tmp_path: Path) -> IngressService:
    return IngressService(service, quarantine=tmp_path / "staging" / "quarantine",
                          projects_root=tmp_path / "projects", conf=ImportSettings(),
                          data_owners=DataOwnersFromGroups(), projects=PROJECTS)


def who(service, name: str, groups: list[str], projects=None):
    ident = service.identity(name, groups)
    return ident if projects is None else type(ident)(**{**ident.__dict__,
                                                         "projects": frozenset(projects)})




def audited(service, tmp_path: Path) -> list[tuple[str, str, str]]:
    out = []
    for line in (tmp_path / "audit.jsonl").read_text().splitlines():
        e = json.loads(line)
        if str(e.get("event", "")).startswith("airlock.import."):
            out.append((e["event"], e.get("actor"), e.get("outcome")))
    return out


def open_with(ingress, user, files: dict[str, bytes], *, code: bool = False) -> str:
    r = ingress.create(user, project="cardio-los", title="ICD-10 labels",
                       justification="reference table for the cohort", code=code)
    for name, data in files.items():
        ingress.add_file(user, r["id"], name, [data])
    return r["id"]


def test_an_upload_is_checked_approved_by_a_data_owner_and_delivered_read_only(
        service, ingress, tmp_path):
    bob = who(service, "bob", ["cardio-los"])
    olga = who(service, "olga", [])  # a data owner of cardio-los, not a member
    rid = open_with(ingress, bob, {"icd10.csv": CSV})
    detail = ingress.get(bob, rid)
    assert detail["files"][0]["verdict"] == "accepted" and detail["files"][0]["kind"] == "text"
    qdir = tmp_path / "staging" / "quarantine" / rid
    assert oct(os.stat(tmp_path / "staging" / "quarantine").st_mode & 0o777) == "0o700"
    assert len(list(qdir.iterdir())) == 1
    ingress.submit(bob, rid)
    done = ingress.decide(olga, rid, "approve")
    assert done["state"] == "delivered" and done["inbox"] == f"/project/inbox/{rid}"
    dest = tmp_path / "projects" / "cardio-los" / "inbox" / rid
    assert (dest / "icd10.csv").read_bytes() == CSV
    manifest = (dest / "MANIFEST.sha256").read_text()
    assert manifest == f"{hashlib.sha256(CSV).hexdigest()}  icd10.csv\n"
    st = os.stat(dest / "icd10.csv")
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, 7101, 0o440)
    assert os.stat(dest).st_mode & 0o777 == 0o550
    assert not qdir.exists()  # the quarantine copy is gone once delivered
    assert [e[0] for e in audited(service, tmp_path)] == [
        "airlock.import.created", "airlock.import.file_accepted", "airlock.import.submitted",
        "airlock.import.approved", "airlock.import.delivered"]


def test_a_binary_in_a_data_import_is_refused_and_blocks_submission(service, ingress, tmp_path):
    bob = who(service, "bob", ["cardio-los"])
    rid = open_with(ingress, bob, {"labels.csv": ELF})
    f = ingress.get(bob, rid)["files"][0]
    assert f["verdict"] == "refused" and "executable content (elf)" in f["reasons"][0]
    with pytest.raises(PolicyViolation, match="holds refused files"):
        ingress.submit(bob, rid)
    ingress.remove_file(bob, rid, f["id"])
    ingress.add_file(bob, rid, "labels.csv", [CSV])
    assert ingress.submit(bob, rid)["state"] == "submitted"
    kinds = [e for e in audited(service, tmp_path)]
    assert ("airlock.import.file_refused", "bob", "denied") in kinds
    assert ("airlock.import.denied", "bob", "denied") in kinds


def test_a_code_import_takes_scripts(service, ingress, tmp_path):
    bob = who(service, "bob", ["cardio-los"])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("repo/analysis.py", "print('hello')\n")
        zf.writestr("repo/run.sh", "#!/bin/sh\npython analysis.py\n")
    rid = open_with(ingress, bob, {"repo.zip": buf.getvalue()}, code=True)
    assert ingress.get(bob, rid)["files"][0]["verdict"] == "accepted"
    rid2 = open_with(ingress, bob, {"repo.zip": buf.getvalue()}, code=False)
    assert ingress.get(bob, rid2)["files"][0]["verdict"] == "refused"


def test_a_git_bundle_without_a_check_sandbox_is_refused(service, ingress):
    bob = who(service, "bob", ["cardio-los"])
    bundle = b"# v2 git bundle\n" + b"0" * 40 + b" refs/heads/main\n\nPACK\x00\x00\x00\x02"
    rid = open_with(ingress, bob, {"repo.bundle": bundle}, code=True)
    f = ingress.get(bob, rid)["files"][0]
    assert f["kind"] == "git-bundle" and f["verdict"] == "refused"
    assert "check sandbox" in f["reasons"][0]


def test_the_requester_never_approves_their_own_import(service, ingress, tmp_path):
    # alice is a member of cardio-los AND in its data-owner group: still not her own
    alice = who(service, "alice", ["cardio-los"])
    rid = open_with(ingress, alice, {"icd10.csv": CSV})
    ingress.submit(alice, rid)
    with pytest.raises(PermissionDenied, match="you made import request"):
        ingress.decide(alice, rid, "approve")
    assert ingress.get(alice, rid)["state"] == "submitted"
    assert not (tmp_path / "projects" / "cardio-los" / "inbox" / rid).exists()
    assert ("airlock.import.denied", "alice", "denied") in audited(service, tmp_path)


def test_another_projects_data_owner_and_a_plain_member_cannot_approve(service, ingress,
                                                                       tmp_path):
    bob = who(service, "bob", ["cardio-los"])
    rid = open_with(ingress, bob, {"icd10.csv": CSV})
    ingress.submit(bob, rid)
    gus = who(service, "gus", ["air-quality"])  # data owner of air-quality only
    with pytest.raises(Exception) as e:
        ingress.decide(gus, rid, "approve")
    assert type(e.value).__name__ in ("NotFound", "PermissionDenied")
    gus_in_both = who(service, "gus", ["air-quality", "cardio-los"])
    with pytest.raises(PermissionDenied, match="data owner of project cardio-los"):
        ingress.decide(gus_in_both, rid, "approve")
    erin = who(service, "erin", ["output-checkers", "cardio-los"])
    with pytest.raises(PermissionDenied):
        ingress.decide(erin, rid, "approve")
    sam = who(service, "sam", ["staff"])
    assert ingress.decide(sam, rid, "reject", "not the agreed table")["state"] == "rejected"
    assert not (tmp_path / "projects" / "cardio-los" / "inbox" / rid).exists()


def test_members_import_from_outside_only_and_outsiders_not_at_all(service, ingress):
    bob_in_workspace = who(service, "bob", ["cardio-los"], projects=["cardio-los"])
    with pytest.raises(PermissionDenied, match="from outside the workspace"):
        ingress.create(bob_in_workspace, project="cardio-los", title="t", justification="j",
                       via_token=True)
    fay = who(service, "fay", ["air-quality"])
    with pytest.raises(PermissionDenied, match="only members of project cardio-los"):
        ingress.create(fay, project="cardio-los", title="t", justification="j")
    with pytest.raises(PermissionDenied, match="staff-side loads"):
        ingress.create(who(service, "bob", ["cardio-los"]), project="cardio-los", title="t",
                       justification="j", source="load")
    sam = who(service, "sam", ["staff"])
    assert ingress.create(sam, project="cardio-los", title="t", justification="j",
                          via_token=True, source="load")["source"] == "load"


def test_file_names_of_an_import_are_plain_names(service, ingress):
    bob = who(service, "bob", ["cardio-los"])
    r = ingress.create(bob, project="cardio-los", title="t", justification="j")
    for bad in ("../x.csv", "/etc/passwd", "a/b.csv", ".."):
        with pytest.raises(InvalidInput):
            ingress.add_file(bob, r["id"], bad, [CSV])


def test_data_owners_are_asked_of_the_directory(settings, slapd):
    """The real directory (slapd): alice is in proj-air-quality, bob is not; by bare name
    and by DN; a directory that does not answer decides nothing (fail closed)."""
    from ecluse.airlock.errors import IdentityUnavailable

    base = settings.projects["cardio-los"]
    owners = DataOwners(settings)
    by_name = base.model_copy(update={"data_owner_group": "proj-air-quality"})
    by_dn = base.model_copy(update={
        "data_owner_group": f"cn=proj-air-quality,{settings.ldap.group_search_base}"})
    assert owners("alice", by_name) and owners("alice", by_dn)
    assert not owners("bob", by_name) and not owners("bob", by_dn)
    assert not owners("nobody-at-all", by_name)  # unknown to the directory: not an owner
    assert not owners("alice", base.model_copy(update={"data_owner_group": None}))
    down = settings.model_copy(update={"ldap": settings.ldap.model_copy(
        update={"uri": "ldap://127.0.0.1:1"})})
    with pytest.raises(IdentityUnavailable, match="does not answer"):
        DataOwners(down)("alice", by_name)


# ------------------------------------------------------------ git bundles, in a sandbox

from tests.airlock.test_checkbox import checker, deployment  # noqa: E402,F401 - fixtures


def _git(*args: str, cwd: Path) -> None:
    import subprocess

    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd,
                   check=True, capture_output=True, timeout=60)


def test_git_bundles_are_verified_in_a_check_sandbox(checker, tmp_path):  # noqa: F811
    from ecluse.airlock.ingress import GitBundleVerifier

    sandbox_checker, tmp = checker
    repo = tmp_path / "repo"
    repo.mkdir()
    _git("init", "-q", cwd=repo)
    for i in range(2):
        (repo / "analysis.py").write_text(f"print({i})\n")
        _git("add", ".", cwd=repo)
        _git("commit", "-qm", f"c{i}", cwd=repo)
    _git("bundle", "create", str(tmp_path / "full.bundle"), "--all", cwd=repo)
    _git("bundle", "create", str(tmp_path / "thin.bundle"), "HEAD~1..HEAD", cwd=repo)
    full = (tmp_path / "full.bundle").read_bytes()
    (tmp_path / "broken.bundle").write_bytes(full[: len(full) - 30])
    verify = GitBundleVerifier(sandbox_checker)
    assert verify(tmp_path / "full.bundle", tmp) is None
    why = verify(tmp_path / "thin.bundle", tmp)
    assert why and why.startswith("git bundle verify failed"), why
    assert verify(tmp_path / "broken.bundle", tmp) is not None


def test_no_file_may_take_the_manifests_name(service, ingress):
    bob = who(service, "bob", ["cardio-los"])
    r = ingress.create(bob, project="cardio-los", title="t", justification="j")
    with pytest.raises(InvalidInput, match="MANIFEST.sha256 is the name of the manifest"):
        ingress.add_file(bob, r["id"], "MANIFEST.sha256", [b"00  /etc/passwd\n"])


def test_a_data_owner_sees_and_may_decide_their_projects_imports_only(service, ingress):
    bob = who(service, "bob", ["cardio-los"])
    rid = open_with(ingress, bob, {"icd10.csv": CSV})
    ingress.submit(bob, rid)
    olga, gus = who(service, "olga", []), who(service, "gus", [])
    assert [i["id"] for i in ingress.list(olga)] == [rid]
    assert ingress.get(olga, rid)["actions"] == ["approve", "reject"]
    assert ingress.list(gus) == []
    assert ingress.get(bob, rid)["actions"] == ["withdraw"]


def test_the_airlocks_own_user_delivers_into_the_inbox_it_was_given():
    """Where the airlock runs as its own user, ``prepare_inbox`` gives it the inbox
    (setgid to the project's group): it delivers without root, files take the project's
    group, and a project member on the host still cannot write there."""
    import shutil
    import subprocess
    import sys
    import tempfile

    from ecluse.sandbox.local import prepare_inbox

    base = Path(tempfile.mkdtemp(prefix="ecluse-inbox-"))
    try:
        os.chmod(base, 0o755)
        pdir = base / "projects" / "cardio-los"
        (pdir / "shared").mkdir(parents=True)
        for d in (base / "projects", pdir):
            d.chmod(0o755)
        prepare_inbox(pdir, 7101, owner=65534)
        st = os.stat(pdir / "inbox")
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (65534, 7101, 0o2750)
        q = base / "q"
        q.mkdir(mode=0o755)
        (q / "1").write_bytes(CSV)
        (q / "1").chmod(0o644)
        sha = hashlib.sha256(CSV).hexdigest()
        code = ("import sys; from pathlib import Path; "
                "from ecluse.airlock.ingress import write_delivery; "
                f"print(write_delivery(Path({str(pdir / 'inbox')!r}), 'im-00000000000000aa', "
                f"7101, [(Path({str(q / '1')!r}), 'icd10.csv', {sha!r})]))")
        done = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534",
                               "--clear-groups", sys.executable, "-c", code],
                              capture_output=True, text=True, timeout=120, cwd="/")
        assert done.returncode == 0, done.stderr
        dest = pdir / "inbox" / "im-00000000000000aa"
        st = os.stat(dest / "icd10.csv")
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (65534, 7101, 0o440)
        assert (dest / "MANIFEST.sha256").read_text() == f"{sha}  icd10.csv\n"
        member = subprocess.run(
            ["setpriv", "--reuid", "5001", "--regid", "5001", "--groups", "7101",
             sys.executable, "-c", f"open({str(pdir / 'inbox' / 'x')!r}, 'w')"],
            capture_output=True, text=True, timeout=120, cwd="/")
        assert member.returncode != 0 and "Permission denied" in member.stderr
        # a changed quarantine file is never delivered
        (q / "1").write_bytes(CSV + b"I99,tampered\n")
        from ecluse.airlock.errors import IntegrityFailure
        from ecluse.airlock.ingress import write_delivery

        with pytest.raises(IntegrityFailure, match="no longer match"):
            write_delivery(pdir / "inbox", "im-00000000000000bb", 7101,
                           [(q / "1", "icd10.csv", sha)])
        assert sorted(p.name for p in (pdir / "inbox").iterdir()) == ["im-00000000000000aa"]
    finally:
        shutil.rmtree(base, ignore_errors=True)
