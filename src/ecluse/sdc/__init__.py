"""Statistical disclosure control on research outputs.

Every file a researcher asks to take out of a project is read and judged::

    from ecluse.sdc import check_file
    report = check_file("results/table1.csv", policy)
    report.verdict        # Verdict.PASS / FAIL / BLOCK / REVIEW
    report.to_dict()      # what the airlock stores

See ``docs/output-checking.md`` for the rules and :mod:`ecluse.sdc.rules` for
their table.

The modules, each importing only modules listed above it (``tests/test_layers.py``
checks it)::

    report        findings, verdicts, file reports
    policy        the disclosure-control policy
    rules         the rules, as data
    detect        what a column is, from its name and values
    sniff         a file's format, from its content
    table         a table to judge, from a frame or a raw grid
    analyze       judge one table
    differencing  small cells recovered by subtracting tables
    contributors  dominance, with the contributors in a supporting file
    acro          ACRO's results.json, read and written
    carriers      the checking context (Ctx); values carried outside the tables
    workbook      the parts of an Excel workbook beyond its cells
    archive       zip and gzip members
    readers       CSV, Parquet, Arrow, Excel, JSON, JSON Lines, HTML
    other         free text, notebooks, netCDF / Zarr
    check         the entry points: each file sniffed and read by its reader
    suppress      suggested fixes for a failing count table

A value that decodes to a file is checked like one handed in: the context
carries ``check``'s dispatcher down to :mod:`~ecluse.sdc.carriers`.
"""

from importlib import import_module
from typing import TYPE_CHECKING

from .policy import DisclosurePolicy

if TYPE_CHECKING:  # pragma: no cover
    from .check import check_file, check_frame, check_paths
    from .report import FileReport, Finding, Report, Severity, Verdict
    from .rules import RULES, Rule

# the readers pull in pandas and pyarrow: load them on first use, so that
# importing the policy (as the settings model does) stays cheap
_LAZY = {
    "check_file": "check", "check_frame": "check", "check_paths": "check",
    "FileReport": "report", "Finding": "report", "Report": "report",
    "Severity": "report", "Verdict": "report", "RULES": "rules", "Rule": "rules",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "RULES",
    "DisclosurePolicy",
    "FileReport",
    "Finding",
    "Report",
    "Rule",
    "Severity",
    "Verdict",
    "check_file",
    "check_frame",
    "check_paths",
]
