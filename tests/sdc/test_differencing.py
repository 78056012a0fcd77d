"""Differencing between tables (issue 20 items 1 and 8): a small group no table
publishes, recovered by subtracting two tables, fails with both named."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecluse.cli import main
from ecluse.sdc import DisclosurePolicy, check_paths
from ecluse.sdc.differencing import CountTable, differencing_findings, interval

SETTINGS = settings(max_examples=80, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
#: no rounding heuristic in the properties: random counts may all be multiples of 5
EXACT = DisclosurePolicy(rounding_base=1)


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def _rules(report):
    return {f.path.rsplit("/", 1)[-1]: [x.rule for x in f.findings] for f in report.files}


def test_nested_bands_fail_with_both_files_named(tmp_path):
    a = _write(tmp_path, "adults.csv", "age,n\n>= 18,120\n")
    b = _write(tmp_path, "older.csv", "age,n\n≥ 19,115\n")
    report = check_paths([a, b])
    assert report.verdict == "fail"
    for f in report.files:
        [d] = [x for x in f.findings if x.rule == "differencing"]
        assert "adults.csv" in d.message and "older.csv" in d.message
        assert "is 5" in d.message and d.location["labels"] == {"age": "18"}
    # each file alone passes: the disclosure is in the pair
    assert check_paths([a]).verdict == "pass" and check_paths([b]).verdict == "pass"


def test_total_and_parts_across_files(tmp_path):
    # one file by ward and sex with a cell suppressed; another gives the ward totals
    a = _write(tmp_path, "by_sex.csv", "ward,sex,n\nA,F,40\nA,M,<10\nB,F,30\nB,M,35\n")
    b = _write(tmp_path, "by_ward.csv", "ward,n\nA,46\nB,65\n")
    report = check_paths([a, b])
    msgs = [x.message for f in report.files for x in f.findings if x.rule == "differencing"]
    assert msgs and all("suppressed cell (ward A, sex M) is 6" in m for m in msgs)
    assert report.verdict == "fail"


def test_crosstab_with_and_without_a_category(tmp_path):
    # the same table, once with every region in its total, once without the
    # (unlisted) unknown region: the totals differ by its count
    a = _write(tmp_path, "all.csv", "region,n\nNorth,50\nSouth,60\nTotal,114\n")
    b = _write(tmp_path, "known.csv", "region,n\nNorth,50\nSouth,60\nTotal,110\n")
    assert check_paths([a]).verdict == "pass" and check_paths([b]).verdict == "pass"
    report = check_paths([a, b])
    assert report.verdict == "fail", report.render()
    [d] = [x for x in report.files[0].findings if x.rule == "differencing"]
    assert "(region (not listed)) is 4" in d.message and "known.csv" in d.message
    # a larger remainder is no disclosure
    c = _write(tmp_path, "known2.csv", "region,n\nNorth,50\nSouth,60\nTotal,100\n")
    d2 = _write(tmp_path, "all2.csv", "region,n\nNorth,50\nSouth,60\nTotal,114\n")
    assert check_paths([c, d2]).verdict == "pass"


def test_different_populations_are_not_compared(tmp_path):
    a = _write(tmp_path, "deaths.csv", "age,n\n>= 18,120\nTotal,140\n")
    b = _write(tmp_path, "stays.csv", "age,n\n>= 19,115\nTotal,300\n")  # Total disagrees
    assert check_paths([a, b]).verdict == "pass"
    c = _write(tmp_path, "other_measure.csv", "age,stays\n>= 19,115\n")  # another measure
    assert check_paths([a, c]).verdict == "pass"


def test_rounded_tables_are_not_exact(tmp_path):
    a = _write(tmp_path, "r1.csv", "age,n\n18-40,120\n41-60,200\n61+,300\nTotal,620\n")
    b = _write(tmp_path, "r2.csv", "age,n\n18-39,115\n40-60,205\n61+,300\nTotal,620\n")
    assert check_paths([a, b]).verdict == "pass"  # all multiples of 5: not exact
    assert check_paths([a, b], DisclosurePolicy(rounding_base=1)).verdict == "fail"


def test_cli_judges_the_set(tmp_path, capsys):
    a = _write(tmp_path, "a.csv", "age,n\n>= 18,120\n")
    b = _write(tmp_path, "b.csv", "age,n\n>= 19,115\n")
    assert main(["check", str(a)]) == 0
    assert main(["check", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "differencing" in out and "a.csv" in out and "b.csv" in out
    assert main(["check", "--json", str(a), str(b)]) == 1
    data = json.loads(capsys.readouterr().out)
    assert [f["verdict"] for f in data["files"]] == ["fail", "fail"]


def test_interval_labels():
    assert interval("≥ 18") == (18, float("inf"))
    assert interval("18+") == (18, float("inf"))
    assert interval("< 18") == (float("-inf"), 18)
    assert interval("18-24") == (18, 25)
    assert interval("(17, 24]") == (18, 25)
    assert interval("[18, 25)") == (18, 25)
    assert interval("North") is None


# ------------------------------------------------------------------ properties


def _ge_table(name, edges, totals):
    return CountTable(source=name, measure="n", dims=("age",),
                      cells=[((f">= {e}",), float(totals[e])) for e in edges])


@SETTINGS
@given(data=st.data())
def test_every_small_difference_of_nested_bands_is_found(data):
    """Random thresholds ``≥ e`` shared out between two tables: a band between two
    consecutive thresholds of different tables is recovered; it fails exactly when
    its count is between 0 and the threshold (no false alarm on safe nests)."""
    edges = sorted(data.draw(st.sets(st.integers(0, 90), min_size=2, max_size=6)))
    atoms = data.draw(st.lists(st.integers(0, 40), min_size=len(edges), max_size=len(edges)))
    owner = data.draw(st.lists(st.sampled_from("ab"), min_size=len(edges), max_size=len(edges))
                      .filter(lambda o: len(set(o)) == 2))
    totals = {e: sum(atoms[k:]) for k, e in enumerate(edges)}
    a = _ge_table("a", [e for e, o in zip(edges, owner, strict=True) if o == "a"], totals)
    b = _ge_table("b", [e for e, o in zip(edges, owner, strict=True) if o == "b"], totals)
    expected = set()
    for k in range(len(edges) - 1):
        if owner[k] != owner[k + 1] and 0 < atoms[k] < EXACT.threshold:
            lo, hi = edges[k], edges[k + 1]
            expected.add(str(lo) if hi - lo == 1 else f"{lo}-{hi - 1}")
    found = differencing_findings([a, b], EXACT)
    got = {f.location["labels"]["age"] for f in found.get(0, [])}
    assert got == expected
    for f in found.get(0, []):
        value = int(f.message.split(" is ")[1].split(",")[0])
        assert 0 < value < EXACT.threshold


@SETTINGS
@given(data=st.data())
def test_suppressed_part_recovered_from_another_files_totals(data):
    """A table of parts (ward x sex) with suppressed cells and another of the ward
    totals: a suppressed cell is recovered exactly when it is the only one hidden in
    its ward, and then fails when it is below the threshold."""
    wards = data.draw(st.integers(1, 4))
    sexes = ["F", "M", "X"][: data.draw(st.integers(2, 3))]
    counts = {(w, s): data.draw(st.integers(0, 60)) for w in range(wards) for s in sexes}
    hidden = {c for c in counts if data.draw(st.booleans())}
    parts = CountTable("parts", "n", ("ward", "sex"),
                       [((f"W{w}", s), None if (w, s) in hidden else float(v))
                        for (w, s), v in counts.items()])
    totals = CountTable("totals", "n", ("ward",),
                        [((f"W{w}",), float(sum(counts[(w, s)] for s in sexes)))
                         for w in range(wards)])
    expected = set()
    for w in range(wards):
        mine = [c for c in hidden if c[0] == w]
        if len(mine) == 1 and counts[mine[0]] < EXACT.threshold:
            expected.add((f"W{w}", mine[0][1]))
    found = differencing_findings([parts, totals], EXACT)
    got = {(f.location["labels"]["ward"], f.location["labels"]["sex"])
           for f in found.get(0, []) if "suppressed" in f.message}
    assert got == expected
    # any other group reported holds what the parts say, below the threshold
    for f in found.get(0, []):
        labels = f.location["labels"]
        true = sum(v for (w, s_), v in counts.items()
                   if labels.get("ward", f"W{w}") == f"W{w}" and labels.get("sex", s_) == s_)
        assert f" is {true}," in f.message and true < EXACT.threshold
