"""The release record and the release package (issue 21 item 2, SATRE 3.3.09).

At release the airlock writes a **record** of what left and why: the policy pack
and its values, the tool version, each file's verdict, findings and sha256, each
reviewer's decision, comment and override reasons, and the request's history.
Its bytes are kept with the request and their sha256 is in the audit event
``airlock.request.released`` (``record_sha256``).

The **package** the requester downloads is a zip of::

    files/<name>            the released files, as approved
    release-record.json     the record, byte for byte as hashed into the audit log
    SHA256SUMS              sha256 of every other member (``sha256sum -c`` format)
    results.json            the files' checks in ACRO's format (SACRO-Viewer opens it)
    ro-crate-metadata.json  a Five Safes RO-Crate describing the package

:func:`verify_package` checks a package against the audit log
(``ecluse airlock verify-release``).
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from typing import IO, Any

from ..auditevents import AuditEvent
from ..sdc.acro import to_acro
from ..sdc.report import FileReport, Report

RECORD_FORMAT = "ecluse-release-record/1"
RECORD_NAME = "release-record.json"
SUMS_NAME = "SHA256SUMS"
ACRO_NAME = "results.json"
CRATE_NAME = "ro-crate-metadata.json"
FILES_DIR = "files/"
#: every member of a package other than its released files
FIXED_MEMBERS = (RECORD_NAME, SUMS_NAME, ACRO_NAME, CRATE_NAME)

RELEASED_EVENT = str(AuditEvent.AIRLOCK_REQUEST_RELEASED)

RO_CRATE = "https://w3id.org/ro/crate/1.1"
FIVE_SAFES = "https://w3id.org/5s-crate/0.4"


def tool_version() -> str:
    try:
        return dist_version("ecluse")
    except PackageNotFoundError:  # pragma: no cover - a source checkout without metadata
        return "unknown"


def encode(record: dict[str, Any]) -> bytes:
    """The record's bytes: canonical JSON (sorted keys), as hashed and as served."""
    return (json.dumps(record, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def policy_values(policy: Any) -> dict[str, Any]:
    """A disclosure policy's values as JSON (a pydantic model, a mapping, or nothing)."""
    if policy is None:
        return {}
    if hasattr(policy, "model_dump"):
        return policy.model_dump(mode="json")
    return json.loads(json.dumps(dict(policy), default=str))


# ---------------------------------------------------------------- the package


def acro_results(record: dict[str, Any]) -> dict[str, Any]:
    """The record's files in ACRO's ``results.json`` format (names under ``files/``)."""
    report = Report(files=[
        FileReport.from_dict({**(f.get("report") or {}), "path": FILES_DIR + f["name"],
                              "format": f.get("format") or "", "verdict": f["verdict"]})
        for f in record["files"]
    ])
    return to_acro(report, version=f"ecluse-{record['tool']['version']}")


def ro_crate(record: dict[str, Any], record_sha: str) -> dict[str, Any]:
    """A Five Safes RO-Crate (RO-Crate 1.1 JSON-LD) describing the package: the safe
    project, the requester, the released files, the disclosure check and each
    reviewer's decision as ``AssessAction``s, the record beside them."""
    req = record["request"]
    project_id = f"#project-{req['project']}"
    person = lambda name: f"#person-{name}"  # noqa: E731 - local naming rule
    files = [
        {"@id": FILES_DIR + f["name"], "@type": "File", "name": f["name"],
         "contentSize": str(f["size"]), "sha256": f["sha256"],
         "encodingFormat": f.get("format") or "application/octet-stream"}
        for f in record["files"]
    ]
    # a partial release: the files held back are not in the package, nor named by it
    released = {f["name"] for f in record["files"]}
    decisions = [d for d in record.get("file_decisions", [])
                 if d.get("file") in released and d.get("version") == req.get("version")]
    people = sorted({req["requester"], *(r["reviewer"] for r in record["reviews"]),
                     *(d["reviewer"] for d in decisions)})
    reviews = [
        {"@id": f"#review-{k}", "@type": "AssessAction",
         "additionalType": {"@id": "https://w3id.org/5s-crate/0.4#DisclosureCheck"},
         "name": f"output check by {r['reviewer']}: {r['decision']}",
         "agent": {"@id": person(r["reviewer"])}, "endTime": r["created_at"],
         "actionStatus": "http://schema.org/CompletedActionStatus",
         "object": [{"@id": FILES_DIR + name} for name in r.get("files", [])
                    if name in released],
         "description": r.get("comment") or ""}
        for k, r in enumerate(record["reviews"], 1)
    ] + [
        {"@id": f"#file-decision-{k}", "@type": "AssessAction",
         "additionalType": {"@id": "https://w3id.org/5s-crate/0.4#DisclosureCheck"},
         "name": f"output check of one file by {d['reviewer']}: {d['decision']}",
         "agent": {"@id": person(d["reviewer"])}, "endTime": d["created_at"],
         "actionStatus": "http://schema.org/CompletedActionStatus",
         "object": [{"@id": FILES_DIR + d["file"]}],
         "description": d.get("comment") or ""}
        for k, d in enumerate(decisions, 1)
    ]
    graph: list[dict[str, Any]] = [
        {"@id": CRATE_NAME, "@type": "CreativeWork",
         "conformsTo": {"@id": RO_CRATE}, "about": {"@id": "./"}},
        {"@id": "./", "@type": "Dataset", "name": req["title"],
         "description": req.get("justification") or "",
         "datePublished": req["released_at"],
         "conformsTo": [{"@id": RO_CRATE}, {"@id": FIVE_SAFES}],
         "sourceOrganization": {"@id": project_id},
         "author": {"@id": person(req["requester"])},
         "identifier": req["id"],
         "hasPart": [{"@id": f["@id"]} for f in files]
         + [{"@id": RECORD_NAME}, {"@id": ACRO_NAME}, {"@id": SUMS_NAME}],
         "mentions": [{"@id": "#disclosure-check"}, *({"@id": r["@id"]} for r in reviews),
                      {"@id": "#release"}]},
        {"@id": project_id, "@type": "Project", "name": req["project"]},
        *({"@id": person(p), "@type": "Person", "name": p} for p in people),
        *files,
        {"@id": RECORD_NAME, "@type": "File", "name": "Écluse release record",
         "encodingFormat": "application/json", "sha256": record_sha},
        {"@id": ACRO_NAME, "@type": "File", "name": "checks in ACRO's results.json format",
         "encodingFormat": "application/json"},
        {"@id": SUMS_NAME, "@type": "File", "name": "sha256 of every member",
         "encodingFormat": "text/plain"},
        {"@id": "#ecluse", "@type": "SoftwareApplication", "name": "Écluse",
         "softwareVersion": record["tool"]["version"]},
        {"@id": "#disclosure-check", "@type": "AssessAction",
         "additionalType": {"@id": "https://w3id.org/5s-crate/0.4#DisclosureCheck"},
         "name": f"automatic disclosure check (policy pack {record['policy']['pack']})",
         "instrument": {"@id": "#ecluse"},
         "actionStatus": "http://schema.org/CompletedActionStatus",
         "object": [{"@id": f["@id"]} for f in files],
         "result": {"@id": ACRO_NAME}},
        *reviews,
        {"@id": "#release", "@type": "UpdateAction", "name": "release",
         "agent": {"@id": person(req["released_by"])}, "endTime": req["released_at"],
         "actionStatus": "http://schema.org/CompletedActionStatus",
         "object": [{"@id": f["@id"]} for f in files], "result": {"@id": RECORD_NAME}},
    ]
    if req["released_by"] not in people:
        graph.append({"@id": person(req["released_by"]), "@type": "Person",
                      "name": req["released_by"]})
    return {"@context": f"{RO_CRATE}/context", "@graph": graph}


def write_package(out: IO[bytes], record_bytes: bytes,
                  files: Iterable[tuple[str, Iterable[bytes]]]) -> None:
    """Write the release package of ``record_bytes`` to ``out``: ``files`` are
    ``(name, chunks)`` of the released files, in the record's order."""
    record = json.loads(record_bytes)
    sums: list[tuple[str, str]] = []
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, chunks in files:
            h = hashlib.sha256()
            with z.open(FILES_DIR + name, "w", force_zip64=True) as w:
                for chunk in chunks:
                    h.update(chunk)
                    w.write(chunk)
            sums.append((h.hexdigest(), FILES_DIR + name))
        extra = {
            RECORD_NAME: record_bytes,
            ACRO_NAME: json.dumps(acro_results(record), indent=4, ensure_ascii=False,
                                  default=str).encode(),
            CRATE_NAME: json.dumps(ro_crate(record, sha256_of(record_bytes)), indent=2,
                                   ensure_ascii=False).encode(),
        }
        for name, data in extra.items():
            z.writestr(name, data)
            sums.append((sha256_of(data), name))
        z.writestr(SUMS_NAME, "".join(f"{sha}  {name}\n" for sha, name in sums))


# ---------------------------------------------------------------- verification


@dataclass
class Verification:
    request_id: str
    record_sha256: str
    files: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def _hash_member(z: zipfile.ZipFile, name: str) -> str:
    h = hashlib.sha256()
    with z.open(name) as r:
        for chunk in iter(lambda: r.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def audited_hashes(audit: Any, request_id: str) -> list[str]:
    """The ``record_sha256`` the audit log holds for ``request_id``'s releases."""
    return [
        str(r.details["record_sha256"])
        for r in audit.records(event=RELEASED_EVENT)
        if r.details.get("request_id") == request_id and r.details.get("record_sha256")
        and r.outcome == "success"
    ]


def verify_package(path: Any, audited: Callable[[str], list[str]]) -> Verification:
    """Check a release package: its record is the one whose sha256 the audit log
    holds for its request (``audited(request_id)``: the ``record_sha256`` of the
    request's release events), every file's sha256 is the record's, and no file
    is missing or extra. Problems are listed, none is silently passed."""
    problems: list[str] = []
    try:
        z = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        return Verification("", "", 0, [f"{path}: not a readable zip file ({e})"])
    with z:
        names = z.namelist()
        if RECORD_NAME not in names:
            return Verification("", "", 0, [f"{path}: no {RECORD_NAME} in the package"])
        record_bytes = z.read(RECORD_NAME)
        record_sha = sha256_of(record_bytes)
        try:
            record = json.loads(record_bytes)
            request_id = str(record["request"]["id"])
            expected = {FILES_DIR + f["name"]: f["sha256"] for f in record["files"]}
        except (ValueError, KeyError, TypeError) as e:
            return Verification("", record_sha, 0, [
                f"{RECORD_NAME}: not an Écluse release record ({type(e).__name__}: {e})"])
        hashes = audited(request_id)
        if not hashes:
            problems.append(f"the audit log has no release of request {request_id}: "
                            "this package was not released by this airlock")
        elif record_sha not in hashes:
            problems.append(
                f"{RECORD_NAME} was changed: its sha256 is {record_sha}, the audit log "
                f"recorded {', '.join(hashes)} when request {request_id} was released")
        present = {n for n in names if not n.endswith("/")}
        for name in sorted(present - set(expected) - set(FIXED_MEMBERS)):
            problems.append(f"{name}: in the package but not in the release record "
                            "(an extra file)")
        for name in sorted(set(expected) - present):
            problems.append(f"{name}: in the release record but missing from the package")
        for name in sorted(set(expected) & present):
            got = _hash_member(z, name)
            if got != expected[name]:
                problems.append(f"{name}: sha256 {got} differs from the release record's "
                                f"{expected[name]} (the file was changed)")
        return Verification(request_id, record_sha, len(expected), problems)


def chunks_of(fileobj: IO[bytes], size: int = 1 << 20) -> Iterator[bytes]:
    """Read ``fileobj`` from the start in chunks, then close it."""
    try:
        fileobj.seek(0)
        yield from iter(lambda: fileobj.read(size), b"")
    finally:
        fileobj.close()
