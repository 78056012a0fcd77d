"""Row-level records hidden in the carriers a file has besides its main table.

``write_guise(records, guise, dir)`` writes a file whose main content is an
aggregate that passes on its own, with ``records`` hidden in one carrier:
Parquet/Arrow metadata, workbook parts, notebook outputs and metadata,
strings inside JSON, image and PDF text, a transposed table, a constant count
column, a NUL byte. Every file is generated; nothing is checked in.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zipfile
import zlib
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .conftest import frame_output, notebook_json

GUISES = [
    "parquet_kv", "parquet_attrs", "parquet_field", "parquet_b64", "arrow", "arrow_kv",
    "xlsx_pivot", "xlsx_customxml", "xlsx_comment", "xlsx_defined_name", "xlsx_veryhidden",
    "nb_json", "nb_markdown", "nb_latex", "nb_vnd", "nb_attachment", "nb_cell_metadata",
    "nb_metadata", "nb_output_metadata", "nb_print", "json_b64", "json_string",
    "png_text", "svg_text", "pdf_text", "transposed", "transposed_no_index", "constant_n",
    "nul_csv", "unused_shared_strings", "jsonl_b64", "csv_cell_json", "blob_column_parquet",
    "html_script", "netcdf_attrs", "parquet_field_names", "nb_raw_cell", "nb_markdown_cell",
    "nb_code_string", "nb_code_literal", "nb_dataresource", "nb_metadata_deep",
    "svg_tspans", "zip_comment",
]


def records(cols: list[str], n: int, seed: int, ncat: int = 3) -> pd.DataFrame:
    """One row per person: a category, a whole number and a measurement."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        cols[0]: rng.choice([f"cat{k}" for k in range(ncat)], n),
        cols[1]: rng.integers(20, 100, n),
        cols[2]: np.round(rng.normal(70, 12, n), 1),
    })


def aggregate() -> pd.DataFrame:
    """A table that passes on its own."""
    return pd.DataFrame({"region": ["Nord", "Sud", "Est", "Ouest"], "n": [120, 45, 33, 80]})


def _csv(df: pd.DataFrame) -> str:
    return df.to_csv(index=False)


def write_guise(rec: pd.DataFrame, guise: str, d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    p = d / f"{guise}.data"
    agg = aggregate()
    if guise.startswith("parquet"):
        table = pa.Table.from_pandas(agg, preserve_index=False)
        if guise == "parquet_kv":
            table = table.replace_schema_metadata({**table.schema.metadata, b"notes": _csv(rec)})
        elif guise == "parquet_attrs":
            agg.attrs["source"] = rec.to_dict("records")
            table = pa.Table.from_pandas(agg, preserve_index=False)
        elif guise == "parquet_field":
            f = table.schema.field("n").with_metadata({"doc": rec.to_json(orient="records")})
            table = table.cast(table.schema.set(table.schema.get_field_index("n"), f))
        elif guise == "parquet_field_names":
            # one column per record, each named by the record's values
            names = ["|".join(map(str, r)) for r in rec.values.tolist()]
            table = pa.table({nm: [1] for nm in names})
        elif guise == "parquet_b64":
            buf = io.BytesIO()
            rec.to_parquet(buf)
            table = table.replace_schema_metadata(
                {**table.schema.metadata, b"cache": base64.b64encode(buf.getvalue())})
        pq.write_table(table, p)
    elif guise.startswith("arrow"):
        import pyarrow.feather as feather

        if guise == "arrow":
            feather.write_feather(rec, p)
        else:
            table = pa.Table.from_pandas(agg, preserve_index=False)
            table = table.replace_schema_metadata({b"rows": rec.to_json(orient="split")})
            feather.write_feather(table, p)
    elif guise.startswith("xlsx"):
        _xlsx(rec, guise, p)
    elif guise.startswith("nb_"):
        p.write_text(_notebook(rec, guise))
    elif guise == "json_b64":
        p.write_text(json.dumps({"summary": agg.to_dict("records"),
                                 "attachment": base64.b64encode(_csv(rec).encode()).decode()}))
    elif guise == "json_string":
        p.write_text(json.dumps({"summary": agg.to_dict("records"),
                                 "extra": rec.to_json(orient="records")}))
    elif guise == "png_text":
        p.write_bytes(png({"Comment": _csv(rec)}))
    elif guise == "svg_text":
        p.write_text(svg_table(rec))
    elif guise == "svg_tspans":
        p.write_text(svg_table(rec, tspans=True))
    elif guise == "zip_comment":
        with zipfile.ZipFile(p, "w") as zf:
            zf.writestr("table.csv", _csv(agg))
            zf.comment = _csv(rec).encode()
    elif guise == "pdf_text":
        p.write_bytes(pdf_lines(["  ".join(str(v) for v in row) for row in
                                 [list(rec.columns)] + rec.astype(str).values.tolist()]))
    elif guise == "transposed":
        rec.T.to_csv(p)
    elif guise == "transposed_no_index":
        rec.T.to_csv(p, header=False)
    elif guise == "constant_n":
        # whole numbers all different, so only the categories repeat from row to row
        r = rec.copy()
        r[r.columns[-2]] = np.arange(len(r)) * 7 + 100
        name = "n" if "n" not in {str(c).strip().lower() for c in r.columns} else "count"
        r.assign(**{name: 12}).to_csv(p, index=False)
    elif guise == "nul_csv":
        p.write_bytes(b"\x00" + _csv(rec).encode())
    elif guise == "unused_shared_strings":
        lines = [",".join(map(str, r)) for r in rec.values.tolist()]
        p.write_bytes(xlsx_shared_strings([list(agg.columns)] + agg.values.tolist(), lines))
    elif guise == "jsonl_b64":
        rows = agg.to_dict("records")
        rows[0]["note"] = base64.b64encode(_csv(rec).encode()).decode()
        p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    elif guise == "csv_cell_json":
        agg.assign(detail=["", rec.to_json(orient="records"), "", ""]).to_csv(p, index=False)
    elif guise == "blob_column_parquet":
        buf = io.BytesIO()
        rec.to_parquet(buf)
        agg.assign(blob=[b"", buf.getvalue(), b"", b""]).to_parquet(p)
    elif guise == "netcdf_attrs":
        netcdf_with_attrs(rec, p)
    elif guise == "html_script":
        p.write_text("<html><body>" + agg.to_html(index=False) + '<script type="application/json">'
                     + rec.to_json(orient="records") + "</script></body></html>")
    else:  # pragma: no cover
        raise ValueError(guise)
    return p


# ------------------------------------------------------------------ workbooks

_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"


def _xlsx(rec: pd.DataFrame, guise: str, p: Path) -> None:
    if guise == "xlsx_veryhidden":
        with pd.ExcelWriter(p, engine="openpyxl") as w:
            aggregate().to_excel(w, sheet_name="summary", index=False)
            rec.to_excel(w, sheet_name="data", index=False)
            w.book["data"].sheet_state = "veryHidden"
        return
    aggregate().to_excel(p, index=False, engine="openpyxl")
    with zipfile.ZipFile(p) as zf:
        parts = {n: zf.read(n) for n in zf.namelist()}
    if guise == "xlsx_pivot":
        parts.update(pivot_cache_parts(rec))
    elif guise == "xlsx_customxml":
        rows = "".join("<record>" + "".join(f"<{c}>{escape(str(v))}</{c}>" for c, v in r.items())
                       + "</record>" for r in rec.rename(columns=_xml_name).to_dict("records"))
        parts["customXml/item1.xml"] = f"<?xml version='1.0'?><records>{rows}</records>".encode()
    elif guise == "xlsx_comment":
        parts["xl/comments1.xml"] = (
            f'<?xml version="1.0"?><comments xmlns="{_MAIN}"><authors><author>me</author>'
            f'</authors><commentList><comment ref="A1" authorId="0"><text><t>'
            f"{escape(_csv(rec))}</t></text></comment></commentList></comments>").encode()
    elif guise == "xlsx_defined_name":
        rows = ";".join(",".join(f'"{v}"' if isinstance(v, str) else str(v) for v in r)
                        for r in rec.values.tolist())
        wb = parts["xl/workbook.xml"].decode()
        names = f'<definedNames><definedName name="cache">{{{escape(rows)}}}</definedName></definedNames>'
        if "<definedNames>" in wb:
            wb = wb.replace("<definedNames>", names[:-len("</definedNames>")].replace(
                "<definedNames>", "<definedNames>", 1), 1)
        else:
            wb = wb.replace("</sheets>", "</sheets>" + names, 1)
        parts["xl/workbook.xml"] = wb.encode()
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as zf:
        for n, data in parts.items():
            zf.writestr(n, data)


def _xml_name(c: str) -> str:
    out = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in str(c))
    return out if out and out[0].isalpha() else f"f_{out}"


def pivot_cache_parts(rec: pd.DataFrame) -> dict[str, bytes]:
    """A pivot cache (definition and records) holding ``rec``, as Excel saves it."""
    fields, shared = [], []
    for c in rec.columns:
        col = rec[c]
        if not pd.api.types.is_numeric_dtype(col.dtype):
            items = sorted(set(col))
            shared.append({v: k for k, v in enumerate(items)})
            inner = "".join(f'<s v="{escape(str(v))}"/>' for v in items)
            fields.append(f'<cacheField name="{escape(str(c))}" numFmtId="0">'
                          f'<sharedItems count="{len(items)}">{inner}</sharedItems></cacheField>')
        else:
            shared.append(None)
            fields.append(f'<cacheField name="{escape(str(c))}" numFmtId="0">'
                          '<sharedItems containsSemiMixedTypes="0" containsString="0" '
                          'containsNumber="1"/></cacheField>')
    definition = (f'<?xml version="1.0"?><pivotCacheDefinition xmlns="{_MAIN}" '
                  f'recordCount="{len(rec)}"><cacheSource type="worksheet">'
                  '<worksheetSource ref="A1:C2" sheet="Sheet1"/></cacheSource>'
                  f'<cacheFields count="{len(fields)}">{"".join(fields)}</cacheFields>'
                  "</pivotCacheDefinition>")
    rows = []
    for r in rec.itertuples(index=False):
        cells = []
        for k, v in enumerate(r):
            cells.append(f'<x v="{shared[k][v]}"/>' if shared[k] is not None else f'<n v="{v}"/>')
        rows.append("<r>" + "".join(cells) + "</r>")
    recs = (f'<?xml version="1.0"?><pivotCacheRecords xmlns="{_MAIN}" count="{len(rec)}">'
            + "".join(rows) + "</pivotCacheRecords>")
    return {"xl/pivotCache/pivotCacheDefinition1.xml": definition.encode(),
            "xl/pivotCache/pivotCacheRecords1.xml": recs.encode()}


# ------------------------------------------------------------------ notebooks


def _notebook(rec: pd.DataFrame, guise: str) -> str:
    agg_out = frame_output(aggregate())
    csv_text = _csv(rec)
    if guise == "nb_json":
        out = {"output_type": "display_data", "metadata": {},
               "data": {"application/json": rec.to_dict("records"), "text/plain": "<JSON>"}}
        return notebook_json([agg_out, out])
    if guise == "nb_markdown":
        lines = ["| " + " | ".join(map(str, rec.columns)) + " |",
                 "|" + "---|" * rec.shape[1]]
        lines += ["| " + " | ".join(map(str, r)) + " |" for r in rec.values.tolist()]
        out = {"output_type": "display_data", "metadata": {},
               "data": {"text/markdown": "\n".join(lines), "text/plain": "<Markdown>"}}
        return notebook_json([agg_out, out])
    if guise == "nb_latex":
        out = {"output_type": "display_data", "metadata": {},
               "data": {"text/latex": rec.to_latex(index=False), "text/plain": "<Latex>"}}
        return notebook_json([agg_out, out])
    if guise == "nb_vnd":
        out = {"output_type": "display_data", "metadata": {},
               "data": {"application/vnd.custom.table+json": {"rows": rec.to_dict("records")}}}
        return notebook_json([agg_out, out])
    nb = json.loads(notebook_json([agg_out]))
    cell = nb["cells"][0]
    if guise == "nb_attachment":
        nb["cells"].insert(0, {"cell_type": "markdown", "metadata": {}, "source": "![](data.csv)",
                               "attachments": {"data.csv": {
                                   "text/csv": base64.b64encode(csv_text.encode()).decode()}}})
    elif guise == "nb_cell_metadata":
        cell["metadata"]["cache"] = rec.to_dict("records")
    elif guise == "nb_metadata_deep":
        value: object = rec.to_dict("records")
        for k in range(12):
            value = {f"level{k}": value}
        nb["metadata"]["cache"] = value
    elif guise == "nb_metadata":
        nb["metadata"]["cache"] = {"data": csv_text}
    elif guise == "nb_output_metadata":
        cell["outputs"][0]["metadata"]["rows"] = rec.to_dict("split")
    elif guise == "nb_raw_cell":
        nb["cells"].append({"cell_type": "raw", "metadata": {}, "source": csv_text})
    elif guise == "nb_markdown_cell":
        md = "| " + " | ".join(map(str, rec.columns)) + " |\n|" + "---|" * rec.shape[1] + "\n"
        md += "".join("| " + " | ".join(map(str, r)) + " |\n" for r in rec.values.tolist())
        nb["cells"].append({"cell_type": "markdown", "metadata": {}, "source": md})
    elif guise == "nb_code_string":
        cell["source"] = f'import io\nraw = """{csv_text}"""\ndf = pd.read_csv(io.StringIO(raw))'
    elif guise == "nb_code_literal":
        cell["source"] = f"rows = {rec.to_dict('records')!r}\ndf = pd.DataFrame(rows)"
    elif guise == "nb_dataresource":
        cell["outputs"][0]["data"]["application/vnd.dataresource+json"] = {
            "schema": {"fields": [{"name": str(c)} for c in rec.columns]},
            "data": rec.to_dict("records")}
    elif guise == "nb_print":
        cell["outputs"].append({"output_type": "stream", "name": "stdout",
                                "text": rec.to_string() + "\n"})
    return json.dumps(nb)


# ------------------------------------------------------------------ images and PDF


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(text: dict[str, str] | None = None) -> bytes:
    """A 1×1 PNG with the given tEXt chunks."""
    out = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
    for k, v in (text or {}).items():
        out += _chunk(b"tEXt", k.encode("latin-1") + b"\x00" + v.encode("latin-1"))
    return out + _chunk(b"IDAT", zlib.compress(b"\x00\x00")) + _chunk(b"IEND", b"")


def svg_table(df: pd.DataFrame, tspans: bool = False) -> str:
    """An SVG drawing of ``df`` as a grid of text elements (as a plotted table is), or
    as one ``<text>`` a row with a positioned ``<tspan>`` a cell."""
    cells = []
    rows = [list(map(str, df.columns))] + df.astype(str).values.tolist()
    for i, row in enumerate(rows):
        if tspans:
            spans = "".join(f'<tspan x="{10 + 80 * j}">{escape(v)}</tspan>'
                            for j, v in enumerate(row))
            cells.append(f'<text y="{20 + 14 * i}">{spans}</text>')
            continue
        for j, v in enumerate(row):
            cells.append(f'<text x="{10 + 80 * j}" y="{20 + 14 * i}">{escape(v)}</text>')
    return ('<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="400" '
            f'height="{40 + 14 * len(rows)}">' + "".join(cells) + "</svg>")


def pdf_lines(lines: list[str]) -> bytes:
    """A PDF whose text layer holds ``lines`` (Helvetica, 60 lines a page)."""
    def esc(s: str) -> str:
        return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    pages = [lines[i:i + 60] for i in range(0, max(len(lines), 1), 60)]
    objs: list[bytes] = []
    n_pages = len(pages)
    kids = " ".join(f"{4 + 2 * k} 0 R" for k in range(n_pages))
    objs.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objs.append(f"<< /Type /Pages /Kids [{kids}] /Count {n_pages} >>".encode())
    objs.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for k, page in enumerate(pages):
        body = "BT /F1 9 Tf 11 TL 40 800 Td " + " ".join(f"({esc(ln)}) Tj T*" for ln in page) + " ET"
        stream = body.encode("latin-1")
        objs.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources "
                    f"<< /Font << /F1 3 0 R >> >> /Contents {5 + 2 * k} 0 R >>".encode())
        objs.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, o in enumerate(objs):
        offsets.append(len(out))
        out += f"{i + 1} 0 obj\n".encode() + o + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    for off in offsets:
        out += f"{off:010d} 00000 n \n".encode()
    out += (f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n"
            .encode())
    return bytes(out)


def xlsx_shared_strings(rows: list[list], extra: list[str] = ()) -> bytes:
    """A workbook whose text cells use the shared-string table, as Excel writes it;
    ``extra`` strings are added to the table without any cell using them."""
    strings: list[str] = []
    cells = []
    for i, row in enumerate(rows):
        out = []
        for j, v in enumerate(row):
            ref = f"{chr(65 + j)}{i + 1}"
            if isinstance(v, str):
                strings.append(v)
                out.append(f'<c r="{ref}" t="s"><v>{len(strings) - 1}</v></c>')
            else:
                out.append(f'<c r="{ref}"><v>{v}</v></c>')
        cells.append(f'<row r="{i + 1}">{"".join(out)}</row>')
    strings += list(extra)
    sst = "".join(f"<si><t>{escape(s)}</t></si>" for s in strings)
    rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    ct = "application/vnd.openxmlformats-officedocument.spreadsheetml"
    parts = {
        "[Content_Types].xml": (
            '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/'
            'content-types"><Default Extension="rels" ContentType="application/vnd.'
            'openxmlformats-package.relationships+xml"/><Default Extension="xml" '
            'ContentType="application/xml"/><Override PartName="/xl/workbook.xml" '
            f'ContentType="{ct}.sheet.main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" '
            f'ContentType="{ct}.worksheet+xml"/><Override PartName="/xl/sharedStrings.xml" '
            f'ContentType="{ct}.sharedStrings+xml"/></Types>'),
        "_rels/.rels": (
            '<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/'
            f'2006/relationships"><Relationship Id="rId1" Type="{rel}/officeDocument" '
            'Target="xl/workbook.xml"/></Relationships>'),
        "xl/workbook.xml": (
            f'<?xml version="1.0"?><workbook xmlns="{_MAIN}" xmlns:r="{rel}"><sheets>'
            '<sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>'),
        "xl/_rels/workbook.xml.rels": (
            '<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/'
            f'2006/relationships"><Relationship Id="rId1" Type="{rel}/worksheet" '
            f'Target="worksheets/sheet1.xml"/><Relationship Id="rId2" Type="{rel}/sharedStrings" '
            'Target="sharedStrings.xml"/></Relationships>'),
        "xl/worksheets/sheet1.xml": (
            f'<?xml version="1.0"?><worksheet xmlns="{_MAIN}"><sheetData>{"".join(cells)}'
            "</sheetData></worksheet>"),
        "xl/sharedStrings.xml": (
            f'<?xml version="1.0"?><sst xmlns="{_MAIN}" count="{len(strings)}" '
            f'uniqueCount="{len(strings)}">{sst}</sst>'),
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for n, data in parts.items():
            zf.writestr(n, data)
    return buf.getvalue()


def netcdf_with_attrs(rec: pd.DataFrame, p: Path) -> Path:
    """An aggregate netCDF file whose dataset attribute holds ``rec`` as CSV."""
    import xarray as xr

    ds = xr.Dataset({"n": (("region",), np.array([120, 45, 33, 80]))},
                    coords={"region": ["Nord", "Sud", "Est", "Ouest"]})
    ds.attrs["source_rows"] = rec.to_csv(index=False)
    ds.to_netcdf(p, engine="h5netcdf")
    return p
