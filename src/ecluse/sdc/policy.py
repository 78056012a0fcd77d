"""Disclosure-control policy: the knobs every ``ecluse.sdc`` rule reads.

Policies start from a named pack (:data:`PACKS`: ``ecluse-default``, ``snds``,
``insee-business``, ``opensafely``). Defaults follow ACRO's ``default.yaml`` (safe threshold 10, residual degrees
of freedom 10, N-k dominance n=2 k=0.9, p% rule p=0.10, zeros disclosive,
rounding base 5). A deployment sets its own defaults in ``config/ecluse.yaml``
(``disclosure:``) and each project may override single values in
``config/projects.yaml`` (``disclosure:``). Nothing here is read from inside
the installed package at run time except these code defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


@dataclass(frozen=True)
class PolicyPack:
    """A named set of policy values, with where they come from and what they fail."""

    name: str
    values: dict[str, Any]
    source: str
    boundary: str


#: the packs shipped; ``docs/output-checking.md`` documents each with its source
PACKS: dict[str, PolicyPack] = {
    p.name: p
    for p in [
        PolicyPack(
            "ecluse-default", {"threshold": 10},
            "ACRO/SACRO default.yaml (safe_threshold 10, zeros disclosive, residual df 10, "
            "N-k n=2 k=0.9, p% 10 %)",
            "a count n fails when 0 < n < 10, and n = 0 when zeros are disclosive"),
        PolicyPack(
            "snds", {"threshold": 11},
            "the small-numbers rule of the French SNDS (Système national des données de "
            "santé) framework: no published count between 1 and 10",
            "a count n fails when 0 < n < 11 (1 to 10), and n = 0 when zeros are disclosive"),
        PolicyPack(
            "insee-business",
            {"threshold": 3, "dominance_n": 1, "dominance_k": 0.85, "zeros_disclosive": False},
            "Insee, Guide du secret statistique: a cell needs at least 3 units and no unit "
            "may make more than 85 % of its total",
            "a count n fails when 0 < n < 3; a magnitude fails when its largest contributor "
            "makes more than 85 % of the total; zeros pass"),
        PolicyPack(
            "opensafely", {"threshold": 8, "rounding_required": True, "rounding_base": 5},
            "OpenSAFELY output checking rules: counts of 7 or fewer are redacted and every "
            "count is rounded to the nearest 5",
            "a count n fails when 0 < n ≤ 7 (and n = 0 when zeros are disclosive), and any "
            "count that is not a multiple of 5"),
    ]
}
DEFAULT_PACK = "ecluse-default"


def pack_values(name: str) -> dict[str, Any]:
    """The values of pack ``name``; a clear error names the known packs."""
    try:
        return dict(PACKS[name].values)
    except KeyError:
        raise ValueError(f"unknown disclosure policy pack {name!r} (known: "
                         f"{', '.join(sorted(PACKS))})") from None


class DisclosurePolicy(BaseModel):
    """Thresholds used by the automatic output checks.

    ``pack`` names a shipped set of values (:data:`PACKS`); values given beside it
    override the pack's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pack: str = Field(
        DEFAULT_PACK,
        description="Named policy pack the other values start from: ecluse-default, snds, "
        "insee-business or opensafely (see docs/output-checking.md). Reports and release "
        "records name it.",
    )
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
        5, ge=1, description="Base that published counts are rounded to (checked only with "
        "rounding_required)."
    )
    rounding_required: bool = Field(
        False, description="Every count must be a multiple of rounding_base (OpenSAFELY "
        "rounds all counts to 5)."
    )
    min_max_disclosive: bool = Field(
        True, description="Minima and maxima are individual values (one person's): they fail "
        "unless this is false (the SDC handbook classes them as unsafe)."
    )
    survival_zeros_disclosive: bool = Field(
        False, description="Whether a zero number of events, censorings or entries in one "
        "interval of a survival table fails; it says no one left the risk set then, not "
        "who anyone is. The zero of the first interval never fails."
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

    @model_validator(mode="before")
    @classmethod
    def _from_pack(cls, data: Any) -> Any:
        # the pack's values first, then the values given beside it
        if isinstance(data, dict) and data.get("pack") not in (None, DEFAULT_PACK):
            name = data["pack"]
            if not isinstance(name, str):
                raise ValueError("pack: expected the name of a policy pack")
            return {**pack_values(name), **data}
        return data

    @field_validator("pack")
    @classmethod
    def _known_pack(cls, v: str) -> str:
        pack_values(v)
        return v

    @property
    def boundary(self) -> str:
        """What fails under these values, in one line (as the release record shows it)."""
        zero = "and so does n = 0" if self.zeros_disclosive else "zeros pass"
        out = f"a count n fails when 0 < n < {self.threshold}, {zero}"
        if self.rounding_required:
            out += f"; counts must be multiples of {self.rounding_base}"
        return out

    def merged(self, overrides: dict | None) -> DisclosurePolicy:
        """Return a copy with the given per-project overrides applied (validated).

        A ``pack`` among the overrides replaces this policy's values with the pack's
        for the knobs the pack sets; the other overrides then apply."""
        if not overrides:
            return self
        data = self.model_dump()
        if "pack" in overrides and isinstance(overrides["pack"], str):
            # another pack replaces this one: what any pack sets goes back to the code
            # default first (a project on snds under an opensafely deployment rounds nothing)
            for key in {k for p in PACKS.values() for k in p.values}:
                data[key] = DisclosurePolicy.model_fields[key].default
            data.update(pack_values(overrides["pack"]))
        data.update(overrides)
        return DisclosurePolicy.model_validate(data)
