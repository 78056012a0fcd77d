"""The corpus of ordinary outputs (``tests/sdc/corpus/``): pandas, R-style and
statsmodels-style files as those tools write them, each with the verdict it must
get (``expected.yaml``, which says why)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ecluse.sdc import DisclosurePolicy, check_file

CORPUS = Path(__file__).parent / "corpus"
EXPECTED = yaml.safe_load((CORPUS / "expected.yaml").read_text())


def test_every_corpus_file_has_an_expected_verdict():
    files = {p.name for p in CORPUS.iterdir() if p.name != "expected.yaml"}
    named = {case.get("file", key) for key, case in EXPECTED.items()}
    assert files == named


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_corpus_output(key):
    case = EXPECTED[key]
    policy = DisclosurePolicy.model_validate(case.get("policy") or {})
    rep = check_file(CORPUS / case.get("file", key), policy)
    got = [(f.rule, f.message) for f in rep.findings]
    assert rep.verdict == case["verdict"], (case["why"], got)
    assert set(case.get("rules") or []) <= {f.rule for f in rep.findings}, (case["why"], got)
