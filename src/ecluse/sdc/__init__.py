"""Statistical disclosure control on research outputs.

Every file a researcher asks to take out of a project is read and judged::

    from ecluse.sdc import check_file
    report = check_file("results/table1.csv", policy)
    report.verdict        # Verdict.PASS / FAIL / BLOCK / REVIEW
    report.to_dict()      # what the airlock stores

See ``docs/output-checking.md`` for the rules and :mod:`ecluse.sdc.rules` for
their table.
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
