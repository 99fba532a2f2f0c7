"""Saving result rows and writing generated doc pages, shared by the benchmark scripts."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path


def row_saver(results: dict, out: Path, persist: bool) -> Callable[[str, dict], None]:
    """A ``save(key, row)`` that records a row, prints it and, if ``persist``, rewrites
    ``out`` at once (so that a run cut off keeps every row it finished)."""

    def save(key: str, row: dict) -> None:
        results[key] = row
        print(json.dumps({key: row}), flush=True)
        if persist:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=1))

    return save


def write_lines(doc: Path, lines: list[str]) -> None:
    """Write a generated markdown page."""
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(lines) + "\n")
    print(f"wrote {doc}")
