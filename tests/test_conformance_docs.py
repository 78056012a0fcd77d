"""The conformance matrices stay true to the tests and to the pinned texts (issue 24 items 3, 4).

``docs/satre.md`` answers every mandatory statement of the pinned SATRE version
(``tests/data/satre-<version>.yaml``: IDs, capabilities, importance and statement
text, taken from the specification's tagged ``specification.yaml``), one table row
each; ``docs/compliance-fr.md`` maps the French framework's technical requirements.
In both, a row is one of four statuses:

* ``Écluse`` — met by the software, shown by at least one test it cites;
* ``Écluse + operator`` — Écluse's part shown by a test, the operator's part said;
* ``operator`` — left to the operator, with what they must do;
* ``not yet`` — a feature not built yet (its issue named), and what the operator
  does meanwhile.

Every ``tests/….py::name`` a document cites must name a test pytest collects (a
module-level ``test_*`` function, or a ``test_*`` method of a ``Test*`` class,
``[…]`` parameters ignored), found by reading the file with :mod:`ast`; a cited
file must exist. A SATRE ID written anywhere in ``docs/`` after the word SATRE
must be in the pinned list.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SATRE_DATA = ROOT / "tests" / "data" / "satre-2.0.1.yaml"
SATRE_DOC = DOCS / "satre.md"
FR_DOC = DOCS / "compliance-fr.md"

STATUSES = ("Écluse", "Écluse + operator", "operator", "not yet")
MANDATORY = ("Mandatory", "Mandatory*")
SATRE_ID = re.compile(r"\d\.\d\.\d\d")
#: a cited test: a path under tests/ and, optionally, ``::name`` (or ``::Class::name``)
TEST_REF = re.compile(r"\btests/[\w/]+\.py(?:::[\w]+(?:\[[^\]`|]*\])?)*")


@dataclass(frozen=True)
class Row:
    """One row of a matrix: its cells by column name, and where it is."""

    doc: str
    line: int
    cells: dict[str, str]

    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def load_satre() -> dict:
    return yaml.safe_load(SATRE_DATA.read_text(encoding="utf-8"))


def matrix_rows(path: Path) -> list[Row]:
    """The rows of every table of a document with ``status`` and ``shown by`` columns."""
    rows: list[Row] = []
    header: list[str] | None = None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = [c.lower() for c in cells]
            continue
        if all(set(c) <= set("-: ") for c in cells):
            continue  # the separator line
        if not {"status", "shown by"} <= set(header):
            continue
        assert len(cells) == len(header), (
            f"{path.name}:{number}: {len(cells)} cells under a header of {len(header)} "
            f"(a `|` inside a cell? write it as `\\|` or reword)")
        rows.append(Row(path.name, number, dict(zip(header, cells, strict=True))))
    return rows


@cache
def collected_tests(path: Path) -> frozenset[str]:
    """The names pytest collects in a test file: ``test_x`` and ``TestY::test_x``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test"):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            names |= {f"{node.name}::{item.name}" for item in node.body
                      if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
                      and item.name.startswith("test")}
    return frozenset(names)


def unresolved(refs: list[str], root: Path = ROOT) -> list[str]:
    """The references among ``refs`` that name no file or no collected test."""
    bad = []
    for ref in refs:
        file, _, name = ref.partition("::")
        path = root / file
        if not path.is_file():
            bad.append(f"{ref}: no file {file}")
        elif name and re.sub(r"\[[^\]]*\]", "", name) not in collected_tests(path):
            bad.append(f"{ref}: {file} defines no test {name!r} that pytest collects")
    return bad


def test_refs(text: str) -> list[str]:
    return TEST_REF.findall(text)


test_refs.__test__ = False  # a helper, not a test


# --- the pinned SATRE list ---------------------------------------------------------

def test_the_pinned_satre_list_is_whole_and_says_where_it_came_from():
    data = load_satre()
    assert data["specification"] == "SATRE" and data["version"] == "2.0.1"
    assert data["tag"] == f"v{data['version']}"
    assert re.fullmatch(r"[0-9a-f]{40}", data["commit"]), "the commit must be pinned in full"
    assert data["path"] == "docs/source/spec/specification.yaml"
    header = SATRE_DATA.read_text(encoding="utf-8").split("\nspecification:")[0]
    assert data["commit"] in header and "CC BY 4.0" in header
    statements = data["statements"]
    ids = [s["id"] for s in statements]
    assert len(ids) == len(set(ids)) == 185, "v2.0.1 has 185 statements, each ID once"
    assert all(SATRE_ID.fullmatch(i) for i in ids)
    assert {s["importance"] for s in statements} == {*MANDATORY, "Recommended", "Optional"}
    assert sum(s["importance"] in MANDATORY for s in statements) == 95
    for s in statements:
        assert set(s) == {"id", "capability", "importance", "title"}, \
            f"{s['id']}: IDs, capability, importance and title only (no guidance text)"
        assert s["title"] and len(s["title"]) < 300


# --- docs/satre.md ---------------------------------------------------------------

def satre_rows() -> list[Row]:
    return [r for r in matrix_rows(SATRE_DOC) if "id" in r.cells]


def test_every_mandatory_satre_statement_has_exactly_one_row():
    statements = {s["id"]: s for s in load_satre()["statements"]}
    rows = satre_rows()
    assert rows, "docs/satre.md has no matrix table (a header with `ID` and `status`)"
    seen: dict[str, Row] = {}
    problems = []
    for row in rows:
        sid = row.cells["id"].strip("`* ")
        if sid not in statements:
            problems.append(f"{row.where()}: {sid!r} is not a statement of SATRE 2.0.1")
        elif statements[sid]["importance"] not in MANDATORY:
            problems.append(f"{row.where()}: {sid} is {statements[sid]['importance']}, "
                            "the matrix lists the mandatory statements")
        elif sid in seen:
            problems.append(f"{row.where()}: {sid} again (first at {seen[sid].where()})")
        seen.setdefault(sid, row)
    missing = [i for i, s in statements.items() if s["importance"] in MANDATORY and i not in seen]
    assert not missing, f"docs/satre.md does not answer the mandatory statements {missing}"
    assert not problems, "\n".join(problems)


def check_statuses(rows: list[Row], operator_column: str) -> list[str]:
    """Each row's status is one of ours and carries what that status needs."""
    problems = []
    for row in rows:
        status = row.cells.get("status", "").strip("* ")
        refs = test_refs(row.cells.get("shown by", ""))
        operator = row.cells.get(operator_column, "").strip()
        if status not in STATUSES:
            problems.append(f"{row.where()}: status {status!r} is none of {STATUSES}")
        elif status in ("Écluse", "Écluse + operator") and not refs:
            problems.append(f"{row.where()}: {status!r} without a test in `shown by`")
        elif status in ("Écluse + operator", "operator", "not yet") and operator in ("", "—", "-"):
            problems.append(f"{row.where()}: {status!r} without what the operator must do")
        if status == "not yet" and "issue" not in row.cells.get("écluse", "").lower():
            problems.append(f"{row.where()}: 'not yet' names the issue that builds it")
        if status == "Écluse" and operator not in ("", "—", "-"):
            problems.append(f"{row.where()}: status 'Écluse' but the operator has something "
                            "to do: say 'Écluse + operator'")
    return problems


def test_each_satre_row_shows_its_claim_or_says_what_the_operator_must_do():
    problems = check_statuses(satre_rows(), "the operator must")
    assert not problems, "\n".join(problems)


def test_the_satre_summary_counts_the_rows():
    text = SATRE_DOC.read_text(encoding="utf-8")
    match = re.search(r"Summary \((\d+) mandatory statements\): (\d+) \*\*Écluse\*\*, "
                      r"(\d+) \*\*Écluse \+ operator\*\*,\s+(\d+) \*\*operator\*\*, "
                      r"(\d+) \*\*not yet\*\*", text)
    assert match, "docs/satre.md: the summary line is missing or reworded"
    counts = {status: 0 for status in STATUSES}
    for row in satre_rows():
        counts[row.cells["status"]] = counts.get(row.cells["status"], 0) + 1
    said = dict(zip(("total", *STATUSES), map(int, match.groups()), strict=True))
    assert said == {"total": sum(counts.values()), **counts}, \
        f"docs/satre.md: the summary says {said}, the rows are {counts}"


def test_every_test_cited_in_the_satre_matrix_exists():
    refs = test_refs(SATRE_DOC.read_text(encoding="utf-8"))
    assert len(refs) > 40
    bad = unresolved(refs)
    assert not bad, "docs/satre.md cites tests that do not exist:\n" + "\n".join(bad)


def test_every_satre_id_cited_in_the_docs_is_in_the_pinned_list():
    ids = {s["id"] for s in load_satre()["statements"]}
    bad = []
    for path in sorted(DOCS.rglob("*.md")):
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"SATRE\s+((?:\d\.\d\.\d\d\*?(?:,\s*|\s+and\s+|\s*/\s*)?)+)", text):
            bad += [f"{path.relative_to(ROOT)}: SATRE {i}" for i in SATRE_ID.findall(match[1])
                    if i not in ids]
    bad += [f"docs/satre.md: {i}" for i in SATRE_ID.findall(SATRE_DOC.read_text(encoding="utf-8"))
            if i not in ids]
    assert not bad, "SATRE IDs that are not in SATRE 2.0.1:\n" + "\n".join(bad)


# --- docs/compliance-fr.md ---------------------------------------------------------

def test_every_test_cited_in_the_french_matrix_exists():
    text = FR_DOC.read_text(encoding="utf-8")
    refs = test_refs(text)
    assert len(refs) > 15
    bad = unresolved(refs)
    assert not bad, "docs/compliance-fr.md cites tests that do not exist:\n" + "\n".join(bad)


def test_each_french_row_shows_its_claim_or_says_what_the_operator_must_do():
    rows = matrix_rows(FR_DOC)
    assert len(rows) >= 10
    problems = check_statuses(rows, "the operator must")
    assert not problems, "\n".join(problems)


def test_the_french_matrix_names_its_texts_and_what_stays_with_the_operator():
    text = FR_DOC.read_text(encoding="utf-8")
    for needle in ("2021-118", "22 mars 2017", "6 mai 2024", "HDS", "AIPD", "SATRE"):
        assert needle in text, f"docs/compliance-fr.md does not mention {needle!r}"


# --- both ----------------------------------------------------------------------

def slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def broken_links(path: Path) -> list[str]:
    """Relative links of a document whose file, or whose heading anchor, is missing."""
    bad = []
    for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue  # an absolute URL
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        if not linked.exists():
            bad.append(f"{path.name}: {target}: no such file")
        elif anchor and linked.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", linked.read_text(encoding="utf-8"), re.M)
            if anchor not in {slug(h) for h in headings}:
                bad.append(f"{path.name}: {target}: no heading with that anchor")
    return bad


@pytest.mark.parametrize("doc", [SATRE_DOC, FR_DOC], ids=lambda p: p.name)
def test_the_matrices_links_lead_somewhere(doc):
    bad = broken_links(doc)
    assert not bad, "\n".join(bad)


def test_both_matrices_are_linked_from_the_docs_index():
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    assert "(satre.md)" in index and "(compliance-fr.md)" in index


# --- the checks themselves fail on what they must catch -------------------------

def test_a_missing_or_renamed_test_is_caught(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text(
        "import pytest\n"
        "def test_here(): pass\n"
        "@pytest.mark.parametrize('n', [1, 2])\n"
        "def test_param(n): pass\n"
        "class TestGroup:\n"
        "    def test_method(self): pass\n"
        "def helper():\n"
        "    def test_nested(): pass\n")
    good = ["tests/test_x.py", "tests/test_x.py::test_here", "tests/test_x.py::test_param[2]",
            "tests/test_x.py::TestGroup::test_method"]
    assert unresolved(good, tmp_path) == []
    bad = ["tests/test_y.py::test_here", "tests/test_x.py::test_gone",
           "tests/test_x.py::test_nested", "tests/test_x.py::test_method"]
    assert len(unresolved(bad, tmp_path)) == len(bad)


def test_reference_parsing_finds_every_form():
    cell = ("`tests/a/test_b.py::test_c`, `tests/a/test_b.py::test_d[x-1]`, "
            "`tests/test_e.py`, tests/f/test_g.py::TestH::test_i")
    assert test_refs(cell) == ["tests/a/test_b.py::test_c", "tests/a/test_b.py::test_d[x-1]",
                               "tests/test_e.py", "tests/f/test_g.py::TestH::test_i"]


@pytest.mark.parametrize(("status", "shown", "operator", "ok"), [
    ("Écluse", "`tests/t.py::test_a`", "—", True),
    ("Écluse", "—", "—", False),                      # a claim without a test
    ("Écluse", "`tests/t.py::test_a`", "do X", False),  # the operator has work: say so
    ("Écluse + operator", "`tests/t.py::test_a`", "", False),
    ("operator", "—", "—", False),                    # what must the operator do?
    ("operator", "—", "keep a register", True),
    ("met", "`tests/t.py::test_a`", "—", False),      # not one of ours
])
def test_status_rules_catch_a_row_that_claims_too_much(status, shown, operator, ok):
    row = Row("x.md", 1, {"id": "1.1.01", "status": status, "écluse": "…",
                          "shown by": shown, "the operator must": operator})
    assert (check_statuses([row], "the operator must") == []) is ok
