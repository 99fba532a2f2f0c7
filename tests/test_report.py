"""The HTML report: sections, embedded images, rendering in headless Chromium, bad arguments."""

from __future__ import annotations

import base64
import copy
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

import bayesfm as bfm
from bayesfm import idata as idata_mod
from bayesfm.report import SECTIONS, report

SECTION_IDS = [sid for sid, _ in SECTIONS]
PNG_PREFIX = "data:image/png;base64,"
# appended to a copy of the report (the report itself has no scripts): after load, count the
# images that decoded to a non-empty bitmap
DECODE_PROBE = """<script>
window.addEventListener("load", function () {
  var ok = 0;
  for (var i = 0; i < document.images.length; i++) {
    var img = document.images[i];
    if (img.complete && img.naturalWidth > 0 && img.naturalHeight > 0) ok++;
  }
  document.body.setAttribute("data-decoded", ok);
  document.body.setAttribute("data-images", document.images.length);
});
</script>"""


class Page(HTMLParser):
    """Section ids in order, the text of each section, images and diagnostics rows."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.text: dict[str, str] = {}
        self.images: list[str] = []
        self.rows: list[dict[str, str]] = []  # diagnostics rows: flag, class, first cell
        self.body: dict[str, str] = {}
        self._section: str | None = None
        self._row: dict[str, str] | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "body":
            self.body = a
        elif tag == "section":
            self._section = a.get("id", "")
            self.sections.append(self._section)
            self.text[self._section] = ""
        elif tag == "img":
            self.images.append(a.get("src", ""))
        elif tag == "tr" and "data-flag" in a and self._section == "diagnostics":
            self._row = {"flag": a["data-flag"], "class": a.get("class", ""), "quantity": ""}
            self.rows.append(self._row)

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self._section = None
        elif tag == "tr":
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._section is not None:
            self.text[self._section] += data
        if self._row is not None and not self._row["quantity"] and data.strip():
            self._row["quantity"] = data.strip()

    def words(self, section: str) -> str:
        return " ".join(self.text[section].split())


def _chromium() -> str:
    found = shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
    )
    if found is None:
        pytest.fail(
            "chromium not found: the report test renders the HTML in headless Chromium. "
            ".ci/run installs it (apt-get install chromium); install it the same way locally."
        )
    return found


def _run_chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    command = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"chromium failed ({done.returncode}): {done.stderr[-2000:]}"
    return done


def _browser_check(html_path: Path, tmp_path: Path, n_images: int) -> Page:
    """Render in headless Chromium: the DOM has every section and every image decodes."""
    probe = tmp_path / f"probe_{html_path.name}"
    probe.write_text(
        html_path.read_text("utf-8").replace("</body>", DECODE_PROBE + "</body>"), "utf-8"
    )
    done = _run_chromium(["--dump-dom", probe.as_uri()], tmp_path / "profile")
    dom = Page(done.stdout)
    assert dom.sections == SECTION_IDS
    assert dom.body.get("data-images") == str(n_images)
    assert dom.body.get("data-decoded") == str(n_images), "some images did not decode"

    shot = tmp_path / f"{html_path.stem}.png"
    _run_chromium(
        [f"--screenshot={shot}", "--window-size=1280,4000", html_path.as_uri()],
        tmp_path / "profile",
    )
    assert shot.is_file()
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (4000, 1280)
    assert float(pixels[..., :3].var()) > 0, "blank screenshot"
    return dom


def _static_check(html_path: Path, n_images: int) -> Page:
    """Self-contained HTML: no network references, no scripts, every image an inline PNG."""
    html = html_path.read_text("utf-8")
    assert re.search(r"https?://", html) is None
    assert "<script" not in html.lower() and "<link" not in html.lower()
    assert "url(" not in html and "@import" not in html
    page = Page(html)
    assert page.sections == SECTION_IDS
    assert len(page.images) == n_images
    for src in page.images:
        assert src.startswith(PNG_PREFIX)
        assert base64.b64decode(src[len(PNG_PREFIX) :])[:8] == b"\x89PNG\r\n\x1a\n"
    return page


def _with_cold_start(data, test: np.ndarray, n_cold: int = 5) -> tuple[pd.DataFrame, np.ndarray]:
    X, y = data.X[test], np.asarray(data.y)[test]
    cold = X.iloc[:n_cold].copy()
    cold["item_id"] = [f"new{i}" for i in range(n_cold)]
    return pd.concat([X, cold]), np.concatenate([y, y[:n_cold]])


# ------------------------------------------------------------------------------ reports
def test_nuts_report_with_held_out_data_renders_in_chromium(nuts_fm, synthetic_split, tmp_path):
    data, _, test = synthetic_split
    X_test, y_test = _with_cold_start(data, test)
    out = report(nuts_fm, X_test, y_test, path=tmp_path / "nuts.html")
    assert out == tmp_path / "nuts.html"
    # trace, rank, energy, PPC, coverage, PIT, coverage by activity
    page = _static_check(out, n_images=7)
    _browser_check(out, tmp_path, n_images=7)

    table = nuts_fm.diagnose()
    n_warn = int((table["flag"] == "warn").sum())
    assert f"{n_warn} warning" in page.words("diagnostics")
    assert all((row["class"] == "warn") == (row["flag"] == "warn") for row in page.rows)
    highlighted = {row["quantity"] for row in page.rows if row["class"] == "warn"}
    main = table[table["kind"] != "probe"]
    assert set(main.loc[main["flag"] == "warn", "quantity"]) <= highlighted
    n_probe_rows = sum(row["quantity"].startswith("probe[") for row in page.rows)
    assert n_probe_rows == min(10, int((table["kind"] == "probe").sum()))
    assert len(page.rows) == len(main) + n_probe_rows

    assert "energy" in page.words("energy").lower()
    calibration = page.words("calibration")
    assert "cold start" in calibration and "RMSE" in calibration
    assert "elpd_loo" in page.words("loo")
    summary = page.words("summary")
    assert "nuts" in summary and "BayesianFM" in summary and "genres" in summary


def test_svi_report_without_held_out_data(svi_fm, tmp_path):
    out = report(svi_fm, path=tmp_path / "svi.html")
    page = _static_check(out, n_images=3)  # trace, loss curve, PPC
    _browser_check(out, tmp_path, n_images=3)
    assert "no held-out data given" in page.words("calibration").lower()
    assert "rank plots need at least two chains" in page.words("traces")
    assert "loss" in page.words("energy").lower()
    assert "n/a" in page.words("diagnostics")
    assert "elpd_loo" in page.words("loo")


def test_gibbs_report_explains_the_missing_energy(gibbs_fm, tmp_path):
    out = report(gibbs_fm, path=tmp_path / "gibbs.html")
    page = _static_check(out, n_images=4)  # trace, rank, log-likelihood trace, PPC
    energy = page.words("energy")
    assert "conjugate" in energy and "log-likelihood" in energy


def test_report_of_a_saved_and_loaded_model(nuts_fm, tmp_path):
    saved = nuts_fm.save(tmp_path / "fit.nc")
    loaded = bfm.load(saved)
    before = _static_check(report(nuts_fm, path=tmp_path / "before.html"), n_images=4)
    after = _static_check(report(loaded, path=tmp_path / "after.html"), n_images=4)
    for section in SECTION_IDS:
        assert after.words(section) == before.words(section), section
    assert after.rows == before.rows


def test_fit_without_pointwise_groups_says_so(svi_fm, tmp_path):
    # what store_pointwise=False produces, without paying for another fit
    slim = copy.copy(svi_fm)
    slim.idata_ = idata_mod.from_groups(
        {
            g: svi_fm.idata_[g]
            for g in svi_fm.idata_.groups()
            if g not in ("log_likelihood", "posterior_predictive")
        }
    )
    page = _static_check(report(slim, path=tmp_path / "slim.html"), n_images=2)
    assert "store_pointwise=False" in page.words("ppc")
    assert "no pointwise log_likelihood" in page.words("loo")


# --------------------------------------------------------------------------- bad input
def test_test_data_must_come_in_pairs(svi_fm, synthetic_split, tmp_path):
    data, _, test = synthetic_split
    X, y = data.X[test], np.asarray(data.y)[test]
    with pytest.raises(ValueError, match=r"y_test: got None while X_test was given"):
        report(svi_fm, X, None, path=tmp_path / "r.html")
    with pytest.raises(ValueError, match=r"X_test: got None while y_test was given"):
        report(svi_fm, None, y, path=tmp_path / "r.html")
    with pytest.raises(ValueError, match=r"y_test: got 5 values but X_test has \d+ rows"):
        report(svi_fm, X, y[:5], path=tmp_path / "r.html")
    with pytest.raises(TypeError, match=r"X_test: got ndarray; expected a pandas DataFrame"):
        report(svi_fm, X.to_numpy(), y, path=tmp_path / "r.html")
    assert list(tmp_path.iterdir()) == []


def test_unfitted_model_and_bad_paths_are_refused(svi_fm, tmp_path):
    with pytest.raises(bfm.NotFittedError, match="not fitted yet"):
        report(bfm.BayesianFM(), path=tmp_path / "r.html")
    with pytest.raises(TypeError, match=r"model: got str; expected a fitted bayesfm estimator"):
        report("model.nc", path=tmp_path / "r.html")
    with pytest.raises(FileNotFoundError, match=r"path: the folder .*missing.* does not exist"):
        report(svi_fm, path=tmp_path / "missing" / "r.html")
    with pytest.raises(IsADirectoryError, match=r"path: .* is a folder"):
        report(svi_fm, path=tmp_path)
    with pytest.raises(TypeError, match=r"path: got int"):
        report(svi_fm, path=3)


def test_a_failed_report_leaves_the_existing_file_alone(svi_fm, synthetic_split, tmp_path):
    data, _, test = synthetic_split
    X = data.X[test]
    target = tmp_path / "r.html"
    target.write_text("previous report")
    y_bad = np.full(len(X), np.nan)  # passes the argument checks, fails in evaluate
    with pytest.raises(ValueError, match="NaN or inf"):
        report(svi_fm, X, y_bad, path=target)
    assert target.read_text() == "previous report"
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]
