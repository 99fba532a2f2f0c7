"""The README's example runs as written and prints what it says it prints."""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.slow
def test_readme_example_runs_and_prints_intervals_metrics_and_diagnostics():
    blocks = _python_blocks(README.read_text())
    assert len(blocks) == 1, "the README should hold exactly one Python example"
    code = blocks[0]
    assert len(code.strip().splitlines()) <= 16
    out = io.StringIO()
    with contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(code, str(README), "exec"), {"__name__": "readme_example"})
    printed = out.getvalue()
    for word in ("mean", "lower", "upper", "rmse", "r_hat", "ess_bulk"):
        assert word in printed, f"{word!r} missing from the README example's output:\n{printed}"
