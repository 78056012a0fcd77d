"""``airlock.imports``: the bounds of import requests (controlled ingress)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from . import parse_size


class ImportSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        True, description="Offer import requests (uploads and staff loads into "
        "`/project/inbox`, after checks and an approval).")
    max_file_bytes: int = Field(
        1024**3, ge=1, description="Largest file of an import, in bytes or with a unit "
        "(e.g. 1G).")
    max_files: int = Field(200, ge=1, le=100000, description="Most files in one import.")
    max_unpacked_bytes: int = Field(
        4 * 1024**3, ge=1, description="Most bytes an archive (with the archives in it) may "
        "unpack to, counted while decompressing (zip and tar bombs).")
    max_archive_members: int = Field(
        10000, ge=1, description="Most members of one archive (with nested ones).")
    max_ratio: int = Field(
        100, ge=2, description="Largest unpacked/packed size ratio of an archive.")
    max_nesting: int = Field(
        2, ge=0, le=5, description="How deep archives may nest (an archive in an archive "
        "is 2 deep; 0: no archive at all).")

    @field_validator("max_file_bytes", "max_unpacked_bytes", mode="before")
    @classmethod
    def _size(cls, v: Any) -> int:
        return parse_size(v)
