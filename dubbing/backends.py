"""Named backends: every stage keeps a `BACKENDS` dict and picks from it by the name its config gives."""

from __future__ import annotations

from typing import Any

from dubbing.errors import DubbingError


def pick(backends: dict[str, Any], name: str, what: str) -> Any:
    """The backend called `name`, or a one-line error listing the available ones."""
    try:
        return backends[name]
    except KeyError:
        raise DubbingError(f"unknown {what} backend {name!r}; available: {', '.join(backends)}") from None
