"""The services' sections of the deployment settings, at the bottom of the package.

:mod:`ecluse.config` builds the one settings model from these and imports no
service; each service imports its own section from here:

* :mod:`.airlock` — the ``airlock:`` section (:class:`~.airlock.AirlockSettings`);
* :mod:`.batch` — the ``batch:`` section (:class:`~.batch.BatchSettings`);
* :mod:`.dask` — the ``dask:`` section (:class:`~.dask.DaskSettings`).

They depend on pydantic alone (and :func:`parse_size`, :func:`settings_section`
here).
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$", re.I)


def parse_size(value: int | str) -> int:
    """Parse ``512M``, ``2G``, ``2GiB`` or a byte count into bytes."""
    if isinstance(value, int):
        return value
    m = _SIZE_RE.match(str(value))
    if not m:
        raise ValueError(f"expected a size such as 512M or 2G, got {value!r}")
    number, unit = float(m.group(1)), m.group(2).upper()
    return int(number * 1024 ** "_KMGT".index(unit or "_"))


def settings_section(settings: Any, name: str, model: type[M]) -> M:
    """The ``name`` section of a deployment's settings as ``model`` (defaults when absent)."""
    value = getattr(settings, name, None)
    if value is None:
        return model()
    if isinstance(value, model):
        return value
    return model.model_validate(value.model_dump() if isinstance(value, BaseModel) else value)
