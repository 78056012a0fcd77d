"""Statistical disclosure control on research outputs.

Every file a researcher asks to take out of a project is read and judged::

    from ecluse.sdc import check_file
    report = check_file("results/table1.csv", policy)
    report.verdict        # Verdict.PASS / FAIL / BLOCK / REVIEW
    report.to_dict()      # what the airlock stores

See ``docs/output-checking.md`` for the rules and :mod:`ecluse.sdc.rules` for
their table.
"""

from .check import check_file, check_frame, check_paths
from .policy import DisclosurePolicy
from .report import FileReport, Finding, Report, Severity, Verdict
from .rules import RULES, Rule

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
