"""The rules of the output checker, as data.

Every finding names one rule of :data:`RULES`. A rule fixes the finding's
severity (and so the verdict it implies), says in one line what it detects and
lists the :class:`~ecluse.sdc.policy.DisclosurePolicy` fields that tune it.
``docs/output-checking.md`` documents each rule and tests check that the table,
the code and the docs agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .report import Finding, Severity


@dataclass(frozen=True)
class Rule:
    id: str
    severity: Severity
    description: str
    knobs: tuple[str, ...] = ()


B, F, R, INFO = Severity.BLOCK, Severity.FAIL, Severity.REVIEW, Severity.INFO

RULES: dict[str, Rule] = {
    r.id: r
    for r in [
        # --- row-level data: block
        Rule("identifier-column", B, "A column named like a person/stay identifier or a direct "
             "identifier (patient_id, IPP, NDA, NIR, name, e-mail…)."),
        Rule("identifier-value", B, "Values shaped like identifiers: NIR (13/15 digits), UUIDs, "
             "hex hashes, e-mail addresses, fixed-width hospital numbers."),
        Rule("quasi-identifiers", B, "A combination of quasi-identifiers: date of birth with sex "
             "or postcode, or exact dates with sex and postcode."),
        Rule("row-level", B, "Rows look like individual records: many rows, (near) all distinct, "
             "no count column; or more rows than an aggregate may have.",
             ("row_level_min_rows", "distinct_share", "max_rows_aggregate")),
        Rule("repeated-keys", B, "The label columns repeat from row to row, as records do "
             "(an aggregate has one row per cell).", ("row_level_min_rows",)),
        Rule("count-all-ones", B, "A count column that is 1 on every row: one row per person."),
        Rule("person-dimension", B, "A netCDF/Zarr variable with a per-person dimension "
             "(patient, person, subject, individual…)."),
        Rule("transposed-records", B, "A wide table read column by column (records laid out as "
             "columns) is row-level.", ("row_level_min_rows",)),
        # --- disclosive aggregates: fail
        Rule("small-count", F, "A count cell below the threshold.", ("threshold",)),
        Rule("zero-count", F, "A zero count cell (structural zeros disclose that nobody has a "
             "characteristic).", ("zeros_disclosive", "survival_zeros_disclosive")),
        Rule("small-n-statistic", F, "A statistic (mean, median, sd, percentage, rate, min/max…) "
             "computed on fewer units than the threshold.", ("threshold",)),
        Rule("min-max", F, "A minimum or maximum: the value of one individual.",
             ("min_max_disclosive",)),
        Rule("unrounded-count", F, "A count that is not a multiple of the rounding base, under "
             "a policy that requires rounding.", ("rounding_required", "rounding_base")),
        Rule("recoverable-suppression", F, "A suppressed cell (<10, *, c, empty) that can be "
             "recomputed from published totals (differencing)."),
        Rule("differencing", F, "A group no table publishes (or a suppressed cell), below the "
             "threshold, recovered by subtracting two tables of the request, or a table of the "
             "request and one released earlier from the same data.", ("threshold",
                                                                        "rounding_base")),
        Rule("low-residual-df", F, "A regression with fewer residual degrees of freedom than "
             "the minimum.", ("min_residual_df",)),
        Rule("dominance-nk", F, "N-k dominance: the top N contributors make more than k of "
             "the total.", ("dominance_n", "dominance_k")),
        Rule("dominance-p", F, "p% rule: the rest of the total, after the two largest "
             "contributors, is less than p of the largest.", ("p_percent",)),
        # --- cannot be judged automatically: review
        Rule("statistic-without-n", R, "Statistics whose underlying count is not published "
             "alongside, so the threshold cannot be checked."),
        Rule("regression-without-df", R, "A regression table without its residual degrees of "
             "freedom or number of observations.", ("min_residual_df",)),
        Rule("ambiguous-layout", R, "A table whose layout could not be understood as an "
             "aggregate (few rows with repeated labels, no counts or statistics).",
             ("row_level_min_rows",)),
        Rule("constant-count", R, "A column named as a count holds the same value on (nearly) "
             "every row of a long table: it counts nothing, and the rows are judged without it.",
             ("row_level_min_rows",)),
        Rule("acro-outcome", R, "ACRO's own results.json, sent with the outputs, judged an "
             "output fail or review (its checks and the researcher's exception are shown)."),
        Rule("unjudgeable-format", R, "Images, PDFs, office documents, unknown or binary "
             "formats: a person must look."),
        Rule("free-text", R, "Free text (plain text, notebook text and Markdown) may quote "
             "numbers or individuals."),
        Rule("reader-error", R, "The file could not be read completely; it is never passed."),
        Rule("file-too-large", R, "The file is larger than the checker reads.", ("max_file_bytes",)),
        Rule("archive-limit", R, "An archive exceeds a safety limit (depth, members, sizes, "
             "compression ratio) or is encrypted.",
             ("archive_max_depth", "archive_max_members", "archive_max_member_bytes",
              "archive_max_total_bytes", "archive_max_ratio")),
        Rule("empty-file", R, "The file holds no data; a person should confirm it is needed."),
        # --- information for the checker: no effect on the verdict
        Rule("hidden-sheet", INFO, "A hidden or very hidden Excel sheet (checked like the others)."),
        Rule("sampled", INFO, "Part of the file was judged on a sample (identifier patterns, "
             "distinct rows) or scanned only partly."),
        Rule("acro-pass", INFO, "ACRO's results.json, sent with the outputs, judged an output "
             "pass."),
        Rule("suppressed-cells", INFO, "Suppressed cells found; none could be recovered from "
             "the totals published."),
    ]
}


def finding(rule: str, message: str, **location: Any) -> Finding:
    """Build a finding of ``rule`` (its severity comes from :data:`RULES`)."""
    r = RULES[rule]  # KeyError on an unknown rule id: a programming error
    return Finding(rule=r.id, severity=r.severity, message=message, location=location)
