"""The parts of an Excel workbook beyond its sheets' cells.

openpyxl reads the cells of every sheet (hidden and very hidden ones too). A
workbook carries data in other parts as well, and each is judged here:

* pivot caches (``xl/pivotCache/``): the records a pivot table was built from,
  rebuilt as a table and judged (records block), and the items of each field
  searched for identifiers;
* custom XML parts (``customXml/``), document properties (``docProps/``),
  comments and threaded comments, drawings and text boxes, external link
  caches, connections and query tables: their text, and tables of repeated XML
  elements, are judged;
* defined names: constants and arrays (``={1,2;3,4}``) are judged;
* worksheet parts that the workbook does not list;
* any other part the checker does not know (a VBA project, an unknown
  extension) goes to ``review``.
"""

from __future__ import annotations

import re
import zipfile
from typing import Any

import pandas as pd

from .carriers import Ctx, judge_value
from .detect import name_kind, value_identifier_kind
from .rules import finding
from .table import from_frame, grid_to_table

#: bytes of one part read at most
MAX_PART_BYTES = 256 * 1024 * 1024
#: records of a pivot cache read at most (more are counted only)
MAX_PIVOT_RECORDS = 200_000

#: parts that hold only structure, styles or what openpyxl reads (cells)
_STRUCTURE = re.compile(
    r"^(?:\[Content_Types\]\.xml|(?:.*/)?_rels/.*\.rels|xl/workbook\.xml|xl/styles\.xml"
    r"|xl/theme/theme\d+\.xml|xl/calcChain\.xml|xl/printerSettings/.*"
    r"|xl/worksheets/sheet\d+\.xml|xl/chartsheets/sheet\d+\.xml|xl/tables/table\d+\.xml"
    r"|xl/pivotTables/pivotTable\d+\.xml|xl/metadata\.xml|xl/volatileDependencies\.xml"
    r"|docMetadata/LabelInfo\.xml|xl/media/.*|xl/charts/.*|xl/embeddings/.*"
    r"|xl/drawings/_rels/.*|xl/richData/.*|xl/webextensions/.*|xl/slicerCaches/.*"
    r"|xl/slicers/.*|xl/timelineCaches/.*|xl/timelines/.*|xl/ctrlProps/.*)$")
#: parts whose text is judged
_TEXT = re.compile(
    r"^(?:docProps/.*\.xml|customXml/.*\.xml|xl/comments\d*\.xml|xl/threadedComments/.*\.xml"
    r"|xl/persons/.*\.xml|xl/drawings/.*\.(?:xml|vml)|xl/externalLinks/.*\.xml"
    r"|xl/connections\.xml|xl/queryTables/.*\.xml)$")


def _parse(data: bytes) -> Any:
    from lxml import etree  # deferred: lxml, only for workbooks

    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                             huge_tree=False, recover=False)
    return etree.fromstring(data, parser)


def _local(tag: Any) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def read_workbook_parts(zf: zipfile.ZipFile, n_sheets: int, ctx: Ctx) -> None:
    """Judge every part of the workbook in ``zf`` beyond the cells of its sheets."""
    names = [i.filename for i in zf.infolist() if not i.is_dir()]
    sheet_parts = [n for n in names if re.match(r"^xl/worksheets/sheet\d+\.xml$", n)]
    if len(sheet_parts) > n_sheets:
        ctx.add(finding("unjudgeable-format", f"{len(sheet_parts)} worksheet parts but the "
                        f"workbook lists {n_sheets} sheets: the others are not read",
                        **ctx.base))
    unknown = []
    for name in names:
        info = zf.getinfo(name)
        if info.file_size > MAX_PART_BYTES:
            ctx.add(finding("file-too-large", f"workbook part {name} of {info.file_size} bytes "
                            "is not read", **ctx.base))
            continue
        if name == "xl/workbook.xml":
            _defined_names(zf.read(name), ctx)
        elif name == "xl/sharedStrings.xml":
            _unused_strings(zf, sheet_parts, ctx)
        elif re.match(r"^xl/pivotCache/pivotCacheDefinition\d+\.xml$", name):
            _pivot_cache(zf, name, ctx)
        elif re.match(r"^xl/pivotCache/(?:_rels/.*|pivotCacheRecords\d+\.xml)$", name):
            continue  # read with its definition
        elif _TEXT.match(name):
            _text_part(name, zf.read(name), ctx)
        elif not _STRUCTURE.match(name):
            unknown.append(name)
    if unknown:
        ctx.add(finding("unjudgeable-format", f"workbook parts the checker does not read: "
                        f"{', '.join(unknown[:8])}{' …' if len(unknown) > 8 else ''}",
                        **ctx.base))


# ----------------------------------------------------------------- text parts


def xml_records(root: Any) -> list[tuple[str, pd.DataFrame]]:
    """Tables of repeated XML elements: the children of one parent sharing a tag,
    each a record of its attributes and its leaf children."""
    out: list[tuple[str, pd.DataFrame]] = []
    for el in root.iter():
        if not isinstance(el.tag, str):
            continue
        groups: dict[str, list[Any]] = {}
        for child in el:
            if isinstance(child.tag, str):
                groups.setdefault(_local(child.tag), []).append(child)
        for tag, kids in groups.items():
            if len(kids) < 2:
                continue
            rows = []
            for kid in kids:
                row = {_local(k): v for k, v in kid.attrib.items()}
                for leaf in kid:
                    if isinstance(leaf.tag, str) and len(leaf) == 0:
                        row[_local(leaf.tag)] = (leaf.text or "").strip()
                if len(kid) == 0 and (kid.text or "").strip():
                    row[tag] = kid.text.strip()
                rows.append(row)
            frame = pd.DataFrame(rows)
            if frame.shape[1] >= 2 or (frame.shape[1] == 1 and len(frame) >= 2):
                out.append((f"{_local(el.tag)}/{tag}", frame))
    return out


def _text_part(name: str, data: bytes, ctx: Ctx) -> None:
    sub = ctx.sub({**ctx.base, "part": name})
    try:
        root = _parse(data)
    except Exception as e:  # noqa: BLE001 - lxml raises many kinds
        sub.add(finding("reader-error", f"cannot parse {name}: {type(e).__name__}", **sub.base))
        ctx.findings.extend(sub.findings)
        return
    lines = [t.strip() for t in root.itertext() if t and t.strip()]
    text = "\n".join(lines)
    if name.startswith("xl/externalLinks/"):
        sub.add(finding("unjudgeable-format", "a link to another workbook, with its cached "
                        "values, must be looked at", **sub.base))
    tables = [(w, f) for w, f in xml_records(root)
              if not name.startswith(("xl/comments", "docProps/", "xl/drawings/"))]
    for where, frame in tables:
        if len(frame) >= 2 and frame.shape[1] >= 1:
            sub.judge(from_frame(frame, base={**sub.base, "table": where}))
    if text:
        judge_value(text, sub, "text", free_text=True)
    ctx.findings.extend(sub.findings)
    ctx.judged += sub.judged


# ----------------------------------------------------------------- defined names

_REF = re.compile(r"^(?:'[^']+'|[\w. ]+)?!?\$?[A-Z]{1,3}\$?\d+(?::\$?[A-Z]{1,3}\$?\d+)?$|"
                  r"^(?:'[^']+'|[\w. ]+)!\$?[A-Z]{1,3}:\$?[A-Z]{1,3}$|^#REF!")


def _defined_names(data: bytes, ctx: Ctx) -> None:
    root = _parse(data)
    consts: list[tuple[str, str]] = []
    for el in root.iter():
        if _local(el.tag) != "definedName":
            continue
        value = (el.text or "").strip().lstrip("=")
        parts = [p.strip() for p in value.split(",")] if not value.startswith("{") else [value]
        if value and all(_REF.match(p) for p in parts):
            continue  # a reference to cells, read with the sheets
        consts.append((el.get("name", ""), value))
    if not consts:
        return
    sub = ctx.sub({**ctx.base, "part": "defined names"})
    for name, value in consts:
        if value.startswith("{") and value.endswith("}"):
            rows = [[c.strip().strip('"') for c in r.split(",")] for r in value[1:-1].split(";")]
            t = grid_to_table(rows, base={**sub.base, "table": name[:60]})
            if t is not None and len(rows) >= 2:
                sub.judge(t)
            elif t is not None:
                judge_value("\n".join(",".join(r) for r in rows), sub, f"name {name[:60]!r}",
                            free_text=False)
        elif len(value) >= 64:
            judge_value(value.strip('"'), sub, f"name {name[:60]!r}")
    # many names holding one constant each read as a table of their own
    text = "\n".join(f"{n}\t{v}" for n, v in consts)
    judge_value(text, sub, "constants", free_text=True)
    ctx.findings.extend(sub.findings)
    ctx.judged += sub.judged


# ----------------------------------------------------------------- pivot caches


def _pivot_cache(zf: zipfile.ZipFile, name: str, ctx: Ctx) -> None:
    base = {**ctx.base, "part": name}
    root = _parse(zf.read(name))
    fields: list[str] = []
    shared: list[list[Any]] = []
    for cf in root.iter():
        if _local(cf.tag) != "cacheField":
            continue
        fields.append(cf.get("name", f"field {len(fields) + 1}"))
        items: list[Any] = []
        for si in cf:
            if _local(si.tag) == "sharedItems":
                items = [_item(it) for it in si]
        shared.append(items)
    for f, items in zip(fields, shared, strict=True):
        if name_kind(f) == "identifier":
            ctx.add(finding("identifier-column", f"pivot cache field {f!r} is named like an "
                            "identifier", **{**base, "column": f}))
        kind = value_identifier_kind([v for v in items if v is not None][:2000])
        if kind:
            ctx.add(finding("identifier-value", f"items of pivot cache field {f!r} look like "
                            f"{kind}s", **{**base, "column": f}))
    records_name = _records_part(zf, name)
    if records_name is None:
        ctx.judged += 1
        return
    rows: list[list[Any]] = []
    extra = 0
    rroot = _parse(zf.read(records_name))
    for r in rroot:
        if _local(r.tag) != "r":
            continue
        if len(rows) >= MAX_PIVOT_RECORDS:
            extra += 1
            continue
        row = []
        for k, v in enumerate(r):
            tag = _local(v.tag)
            if tag == "x":
                idx = int(v.get("v", "0"))
                items = shared[k] if k < len(shared) else []
                row.append(items[idx] if 0 <= idx < len(items) else None)
            else:
                row.append(_item(v))
        rows.append(row)
    width = max([len(fields)] + [len(r) for r in rows]) if rows else len(fields)
    cols = fields + [f"field {k + 1}" for k in range(len(fields), width)]
    frame = pd.DataFrame([r + [None] * (width - len(r)) for r in rows], columns=cols)
    sub = ctx.sub({**base, "part": records_name})
    if len(frame):
        sub.judge(from_frame(frame, base=dict(sub.base),
                             declared_rows=len(frame) + extra if extra else None))
    else:
        sub.judged += 1
    ctx.findings.extend(sub.findings)
    ctx.judged += sub.judged


def _records_part(zf: zipfile.ZipFile, definition: str) -> str | None:
    rels = definition.replace("pivotCache/", "pivotCache/_rels/") + ".rels"
    names = set(zf.namelist())
    if rels in names:
        for target in re.findall(rb'Target="([^"]+)"', zf.read(rels)):
            t = "xl/pivotCache/" + target.decode().rsplit("/", 1)[-1]
            if t in names:
                return t
    guess = definition.replace("Definition", "Records")
    return guess if guess in names else None


def _item(el: Any) -> Any:
    tag = _local(el.tag)
    v = el.get("v")
    if tag == "n":
        try:
            f = float(v)
            return int(f) if f.is_integer() else f
        except (TypeError, ValueError):
            return v
    if tag == "m":
        return None
    if tag == "b":
        return v in ("1", "true")
    return v


# ----------------------------------------------------------------- shared strings


def _unused_strings(zf: zipfile.ZipFile, sheet_parts: list[str], ctx: Ctx) -> None:
    """Shared strings that no cell of any sheet uses are data no reader shows."""
    from lxml import etree  # deferred: lxml, only for workbooks

    strings: list[str] = []
    for _, el in etree.iterparse(zf.open("xl/sharedStrings.xml"), events=("end",),
                                 resolve_entities=False, no_network=True, load_dtd=False):
        if _local(el.tag) == "si":
            strings.append("".join(t for t in el.itertext()))
            el.clear()
    if not strings:
        return
    used: set[int] = set()
    for part in sheet_parts:
        shared = False
        for _, el in etree.iterparse(zf.open(part), events=("end",), resolve_entities=False,
                                     no_network=True, load_dtd=False):
            tag = _local(el.tag)
            if tag == "c":
                shared = el.get("t") == "s"
                v = next((x for x in el if _local(x.tag) == "v"), None)
                if shared and v is not None and (v.text or "").strip().isdigit():
                    used.add(int(v.text))
                el.clear()
    unused = [s for i, s in enumerate(strings) if i not in used and s.strip()]
    if unused:
        judge_value("\n".join(unused), ctx, f"xl/sharedStrings.xml: {len(unused)} strings no "
                    "cell uses")
