"""Every corpus table, written in every tabular format, gets the expected verdict."""

from __future__ import annotations

import pytest

from ecluse.sdc import check_file

from .conftest import CASES, FORMATS, write_as


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_case_in_format(case, fmt, tmp_path, policy):
    make, verdict, rule = CASES[case]
    path = write_as(make(), fmt, tmp_path, case)
    rep = check_file(path, policy)
    rules = {f.rule for f in rep.findings}
    assert rep.verdict == verdict, (rep.format, [(f.rule, f.message, f.location) for f in rep.findings])
    if rule:
        assert rule in rules
