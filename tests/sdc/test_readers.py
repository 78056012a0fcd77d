"""The large-CSV reader: parts parsed by pyarrow's threads, and its fallbacks (issue 20 item 7).

A large CSV file is cut after line breaks into parts of ``PART_BYTES``, each
parsed by ``pyarrow.csv.read_csv`` while the previous one is checked. The
verdicts and locations must be those of the single-threaded streaming reader:
rows numbered across parts, malformed rows counted once, a line break inside
a quoted value that falls on a cut read correctly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ecluse.sdc import check_file, readers


def rules(rep):
    return {f.rule for f in rep.findings}


def locs(rep, rule):
    return [f.location for f in rep.findings if f.rule == rule]


@pytest.fixture
def parts(monkeypatch):
    """Small sizes: the streaming path from 256 kB, parts of 96 kB; counts the parts read."""
    monkeypatch.setattr(readers, "SMALL_BYTES", 256 * 1024)
    monkeypatch.setattr(readers, "HEAD_BYTES", 64 * 1024)
    monkeypatch.setattr(readers, "PART_BYTES", 96 * 1024)
    seen = {"parts": 0}
    real = readers._csv_parts

    def counted(*args, **kwargs):
        for part in real(*args, **kwargs):
            seen["parts"] += 1
            yield part

    monkeypatch.setattr(readers, "_csv_parts", counted)
    return seen


def _table(n: int) -> pd.DataFrame:
    i = np.arange(n)
    return pd.DataFrame({"dept": [f"D{k:02d}" for k in i % 100], "day": i // 100,
                         "n": 25 + i % 37})


def test_small_counts_in_every_part_are_located(tmp_path, parts):
    n = 120_000
    df = _table(n)
    rows = [n // 5, n // 2, n - 10]
    df.loc[rows, "n"] = [3, 4, 5]
    p = tmp_path / "big.csv"
    df.to_csv(p, index=False)
    rep = check_file(p)
    assert parts["parts"] >= 10  # read in parts, not by the fallback
    assert rep.verdict == "fail" and rep.details["rows"] == n
    assert [x["row"] for x in locs(rep, "small-count")] == [r + 2 for r in rows]


def test_markers_in_a_later_part_are_parsed_as_text(tmp_path, parts):
    n = 120_000
    df = _table(n).astype({"n": object})
    df.loc[n - 5, "n"] = "<10"
    df.loc[n - 3, "n"] = "4"
    p = tmp_path / "big.csv"
    df.to_csv(p, index=False)
    rep = check_file(p)
    assert [x["row"] for x in locs(rep, "small-count")] == [n - 3 + 2]


def test_a_malformed_row_in_a_later_part_is_reported(tmp_path, parts):
    n = 120_000
    p = tmp_path / "r.csv"
    _table(n).to_csv(p, index=False)
    lines = p.read_text().splitlines(keepends=True)
    lines.insert(90_001, "D01,999,25,extra,fields\n")  # after data row 90,000
    p.write_text("".join(lines))
    rep = check_file(p)
    assert rep.verdict == "review"
    (err,) = [f for f in rep.findings if f.rule == "reader-error"]
    assert err.message.startswith("1 malformed rows")  # counted once, by one reader
    assert rep.details["rows"] == n


def test_a_quoted_line_break_on_a_cut_is_read_whole(tmp_path, monkeypatch, parts):
    n = 60_000
    df = _table(n)
    df["note"] = "ok"
    df.loc[n // 2, "note"] = "two\nlines"
    df.loc[n - 2, "n"] = 4
    p = tmp_path / "q.csv"
    df.to_csv(p, index=False)
    # the first cut falls right after the line break inside the quotes
    monkeypatch.setattr(readers, "PART_BYTES", p.read_bytes().index(b"two\nlines") + 3)
    rep = check_file(p)
    assert [x["row"] for x in locs(rep, "small-count")] == [n]  # rows are records
    assert "reader-error" not in rules(rep)
    assert rep.details["rows"] == n


def test_a_short_e_mail_beyond_the_head_is_found(tmp_path, parts):
    n = 120_000
    df = _table(n)
    df["note"] = "ok"
    df.loc[n - 7, "note"] = "a@b.fr"  # shorter than every other identifier shape
    p = tmp_path / "h.csv"
    df.to_csv(p, index=False)
    rep = check_file(p)
    assert rep.verdict == "block"
    (f,) = [f for f in rep.findings if f.rule == "identifier-value"]
    assert f.location["column"] == "note" and str(n - 7 + 2) in f.message


def _findings(rep):
    return sorted((f.rule, f.message, sorted((f.location or {}).items(), key=str))
                  for f in rep.findings), rep.verdict, rep.details.get("rows")


@pytest.mark.parametrize("case", ["small", "marker", "title", "malformed", "clean", "cp1252"])
def test_the_first_part_parsed_early_gives_what_the_planned_read_gives(tmp_path, monkeypatch,
                                                                       parts, case):
    """The first part is parsed (every column as text) while the head is judged, then
    cast to the columns the head asked for; the findings are those of the planned read
    of that part, whatever it holds beyond the head."""
    n = 60_000
    df = _table(n).astype({"n": object})
    if case == "small":
        df.loc[[5_000, 9_000], "n"] = [3, 0]
    elif case == "marker":
        df.loc[6_000, "n"] = "<10"
        df.loc[7_000, "n"] = 4
    p = tmp_path / "early.csv"
    if case == "cp1252":
        df["dept"] = df["dept"] + " Hérault"
        df.loc[8_000, "n"] = 2
        df.to_csv(p, index=False, encoding="cp1252")
    else:
        df.to_csv(p, index=False)
    if case == "title":
        p.write_text("Stays by department and day\n" + p.read_text())
    elif case == "malformed":
        lines = p.read_text().splitlines(keepends=True)
        lines.insert(8_000, "D01,999,25,extra\n")
        p.write_text("".join(lines))
    used = []
    real = readers._from_early

    def spy(*args, **kwargs):
        got = real(*args, **kwargs)
        used.append(got is not None)
        return got

    monkeypatch.setattr(readers, "_from_early", spy)
    early = check_file(p)
    assert used, "the first part was not parsed early"
    # the early part is used unless it cannot stand for the planned read
    assert used[0] == (case in ("small", "clean", "cp1252"))
    monkeypatch.setattr(readers, "_from_early", lambda *a, **k: None)
    planned = check_file(p)
    assert _findings(early) == _findings(planned)
    assert early.details["rows"] == n
    if case == "small":
        assert [x["row"] for x in locs(early, "small-count")] == [5_002]
        assert [x["row"] for x in locs(early, "zero-count")] == [9_002]
    if case == "cp1252":
        assert [x["row"] for x in locs(early, "small-count")] == [8_002]
