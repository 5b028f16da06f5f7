"""Memory sizes in config values: a number of bytes, or a number with a unit (``"8GB"``, ``"512 MiB"``)."""

from __future__ import annotations

import re
from typing import Any

from lenscnn.errors import UserError

#: Units of ``chunk_memory`` strings (case-insensitive): decimal (kB = 1000 B) and binary (KiB = 1024 B).
BYTE_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_bytes(value: Any, what: str = "simulator.chunk_memory") -> int | None:
    """A memory size in bytes from a config value: ``None``, a positive number of bytes, or a string of a
    number and a unit (``"8GB"``, ``"512 MiB"``, ``"1.5e9"``; units in :data:`BYTE_UNITS`, ``B`` if none)."""
    if value is None:
        return None
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", value)
        if match and (match[2] or "b").lower() in BYTE_UNITS:
            number = float(match[1]) * BYTE_UNITS[(match[2] or "b").lower()]
    if number is None or not number >= 1 or number == float("inf"):
        raise UserError(f"{what} must be a number of bytes or a size such as 8GB or 512MiB (or null), got {value!r}")
    return int(number)
