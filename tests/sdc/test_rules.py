"""The rules table, the report structure and the public API agree with each other."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import ecluse.sdc as sdc
from ecluse.sdc import (
    RULES,
    DisclosurePolicy,
    FileReport,
    Finding,
    Report,
    Verdict,
    check_file,
    check_paths,
)
from ecluse.sdc.report import Severity

SRC = Path(sdc.__file__).parent
DOC = Path(__file__).resolve().parents[2] / "docs" / "output-checking.md"


def _rule_ids_used_in_code() -> set[str]:
    used = set()
    for py in SRC.glob("*.py"):
        text = py.read_text()
        used |= set(re.findall(r'finding\(\s*"([a-z0-9-]+)"', text))
        used |= set(re.findall(r'_Cells\(\s*"([a-z0-9-]+)"', text))
        used |= set(re.findall(r'_add\(\s*"([a-z0-9-]+)"', text))
        used |= set(re.findall(r'_cells\(ctx,\s*"([a-z0-9-]+)"', text))
    return used


def test_every_rule_used_is_in_the_table_and_every_rule_is_used():
    used = _rule_ids_used_in_code()
    assert used <= set(RULES), used - set(RULES)
    assert set(RULES) <= used, set(RULES) - used


def test_rule_knobs_are_policy_fields():
    fields = set(DisclosurePolicy.model_fields)
    for r in RULES.values():
        assert set(r.knobs) <= fields, (r.id, r.knobs)
        assert r.description and r.id == r.id.lower()


def test_every_rule_is_documented():
    text = DOC.read_text()
    for rid, r in RULES.items():
        assert f"`{rid}`" in text, rid
        for knob in r.knobs:
            assert f"`{knob}`" in text, (rid, knob)


def test_severities_imply_verdicts():
    assert {r.severity for r in RULES.values()} == set(Severity)
    assert Severity.INFO.verdict == Verdict.PASS
    assert Severity.BLOCK.verdict == Verdict.BLOCK


def test_verdict_ordering():
    assert Verdict.worst([]) == Verdict.PASS
    assert Verdict.worst(["pass", "review"]) == Verdict.REVIEW
    assert Verdict.worst(["review", "fail"]) == Verdict.FAIL
    assert Verdict.worst(["fail", "block", "review"]) == Verdict.BLOCK
    assert Verdict("pass") == "pass"


def test_report_round_trip(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("ward,n\nA,40\nB,3\n")
    rep = check_file(p, DisclosurePolicy(threshold=11), display_name="results/t.csv")
    assert rep.path == "results/t.csv" and rep.policy["threshold"] == 11
    data = json.loads(json.dumps(rep.to_dict()))
    assert set(data) >= {"path", "verdict", "format", "findings", "policy"}
    assert set(data["findings"][0]) == {"rule", "severity", "message", "location"}
    back = FileReport.from_dict(data)
    assert back == rep
    assert isinstance(back.findings[0], Finding) and back.verdict is Verdict.FAIL
    full = check_paths([p])
    assert Report.from_dict(full.to_dict()).to_dict() == full.to_dict()
    assert "small-count" in full.render()


def test_check_paths_walks_directories(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "t.csv").write_text("ward,n\nA,40\nB,50\n")
    (tmp_path / "b.csv").write_text("patient_id,x\nP1,2\n")
    rep = check_paths([tmp_path])
    assert [Path(f.path).name for f in rep.files] == ["t.csv", "b.csv"]
    assert rep.verdict == Verdict.BLOCK


@pytest.mark.parametrize("name,kind", [
    ("patient_id", "identifier"), ("IPP", "identifier"), ("N° patient", "identifier"),
    ("patientId", "identifier"), ("nom", "identifier"), ("n_patients", "count"),
    ("nb_sejours", "count"), ("Effectif", "count"), ("number_of_patients", "count"),
    ("mean_los", "stat"), ("%", "stat"), ("taux", "stat"), ("date_naissance", "birth"),
    ("sexe", "sex"), ("code_postal", "postcode"), ("id", "weak-id"), ("Total", "total"),
    ("Df Residuals", "df"), ("year", "label"), ("cost", None),
])
def test_name_kinds(name, kind):
    from ecluse.sdc.detect import name_kind

    assert name_kind(name) == kind


@pytest.mark.parametrize("values,kind", [
    (["184127505612345", "284037512345678"], "NIR"),
    (["1841275056123", "2840375123456"], "NIR"),
    (["550e8400-e29b-41d4-a716-446655440000"], "UUID"),
    (["d41d8cd98f00b204e9800998ecf8427e"], "hash"),
    (["a@b.fr", "c@d.org"], "e-mail"),
    ([f"{i:010d}" for i in range(10)], "hospital number"),
    ([120, 45, 33, 80], None),
    (["Nord", "Sud"], None),
])
def test_value_identifier_kinds(values, kind):
    from ecluse.sdc.detect import value_identifier_kind

    assert value_identifier_kind(values) == kind


def test_directory_link_loops_are_not_followed(tmp_path):
    (tmp_path / "t.csv").write_text("ward,n\nA,40\nB,50\n")
    (tmp_path / "loop").symlink_to(tmp_path)
    rep = check_paths([tmp_path])
    assert [Path(f.path).name for f in rep.files] == ["loop", "t.csv"]
    assert rep.files[0].verdict == "review"
