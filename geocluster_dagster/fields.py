"""Settings fields that carry their own description, the one source the run config reads."""

from __future__ import annotations

from dataclasses import field
from typing import TypeVar

T = TypeVar("T")


def described(default: T, description: str) -> T:
    """A dataclass field with ``default`` and the ``description`` the Dagster launchpad shows."""
    return field(default=default, metadata={"description": description})
