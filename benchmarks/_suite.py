"""What the suites of benchmarks/ (faults.py, hostile.py) share."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def names(text: str, known: Sequence[str], what: str) -> list[str]:
    """A command line's comma list of ``what`` (scenarios, cases, clients), each one known."""
    chosen = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [n for n in chosen if n not in known]
    if unknown:
        sys.exit(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})")
    return chosen
