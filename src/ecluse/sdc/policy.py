"""Disclosure-control policy: the knobs every ``ecluse.sdc`` rule reads.

Defaults follow ACRO's ``default.yaml`` (safe threshold 10, residual degrees
of freedom 10, N-k dominance n=2 k=0.9, p% rule p=0.10, zeros disclosive,
rounding base 5). A deployment sets its own defaults in ``config/ecluse.yaml``
(``disclosure:``) and each project may override single values in
``config/projects.yaml`` (``disclosure:``). Nothing here is read from inside
the installed package at run time except these code defaults.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DisclosurePolicy(BaseModel):
    """Thresholds used by the automatic output checks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold: int = Field(
        10,
        ge=1,
        description="Smallest count a published cell may carry (cells below it fail).",
    )
    zeros_disclosive: bool = Field(
        True, description="Whether a zero count is treated as disclosive (structural zeros)."
    )
    min_residual_df: int = Field(
        10, ge=0, description="Smallest residual degrees of freedom a regression table may have."
    )
    dominance_n: int = Field(2, ge=1, description="N in the N-k dominance rule.")
    dominance_k: float = Field(
        0.9, gt=0, le=1, description="k in the N-k dominance rule (share of the total)."
    )
    p_percent: float = Field(0.10, gt=0, le=1, description="p in the p% rule.")
    rounding_base: int = Field(
        5, ge=1, description="Base that published counts may be rounded to (informational)."
    )
    max_rows_aggregate: int = Field(
        5000,
        ge=1,
        description="A table with more rows than this and no count column is treated as "
        "row-level (OpenSAFELY withholds CSVs over 5,000 rows).",
    )
    row_level_min_rows: int = Field(
        20,
        ge=2,
        description="Tables with at least this many rows whose rows are (near) all distinct "
        "without a count column, or whose label keys repeat, are treated as row-level "
        "(smaller ones go to review).",
    )
    distinct_share: float = Field(
        0.95,
        gt=0,
        le=1,
        description="Share of distinct rows from which a table without counts is row-level.",
    )
    max_file_bytes: int = Field(
        16 * 1024 * 1024 * 1024,
        ge=1,
        description="Files larger than this are not read and go to review.",
    )
    archive_max_depth: int = Field(
        3, ge=0, description="Deepest nesting of archives (zip in zip) that is opened."
    )
    archive_max_members: int = Field(
        1000, ge=1, description="Most members an archive may have before it goes to review."
    )
    archive_max_member_bytes: int = Field(
        2 * 1024**3, ge=1, description="Largest uncompressed size of one archive member."
    )
    archive_max_total_bytes: int = Field(
        4 * 1024**3, ge=1, description="Largest uncompressed size of all members of an archive."
    )
    archive_max_ratio: float = Field(
        100.0,
        gt=1,
        description="Largest compression ratio of a member (zip bombs compress far better).",
    )

    def merged(self, overrides: dict | None) -> DisclosurePolicy:
        """Return a copy with the given per-project overrides applied (validated)."""
        if not overrides:
            return self
        data = self.model_dump()
        data.update(overrides)
        return DisclosurePolicy.model_validate(data)
