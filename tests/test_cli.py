"""Tests for the ``bayesfm`` command: fit, predict and report on model cards."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bayesfm as bfm
from bayesfm import cli
from bayesfm.specs import load_spec

MODELS = Path(__file__).resolve().parents[1] / "models"
SYNTHETIC = str(MODELS / "synthetic_demo.toml")


def _metric(text: str, name: str) -> float:
    match = re.search(rf"{name} (-?\d+\.\d+)", text)
    assert match, f"{name} not in output:\n{text}"
    return float(match.group(1))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One tiny CLI fit of the synthetic card, shared by the tests (JAX compiles for seconds).

    Saves the model (``--out``) and writes the report (``--report``) where this version of
    bayesfm can.
    """
    folder = tmp_path_factory.mktemp("cli")
    run, report = folder / "run.nc", folder / "fit_report.html"
    args = ["fit", SYNTHETIC, "--tiny", "--quiet"]
    args += ["--out", str(run), "--report", str(report)]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(args)
    assert code == 0, err.getvalue()
    return {"out": out.getvalue(), "run": run, "report": report, "folder": folder}


def test_fit_synthetic_prints_metrics(fitted):
    out = fitted["out"]
    assert "synthetic_demo" in out and "with tiny settings" in out
    assert re.search(r"held-out \(300 rows\)", out)
    rmse, cov = _metric(out, "rmse"), _metric(out, "coverage_90")
    # planted noise sd 0.5; predicting the training mean gives RMSE 0.77 on these rows
    assert 0.4 < rmse < 0.65
    assert 0.6 <= cov <= 1.0
    assert np.isfinite(_metric(out, "mlpd"))


def test_help_documents_tiny(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["fit", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "tiny settings for smoke tests" in out and "--data-dir" in out


def test_bad_spec_exits_2_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        (MODELS / "synthetic_demo.toml").read_text().replace('method = "svi"', 'method = "hmc"')
    )
    assert cli.main(["fit", str(bad), "--tiny"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert captured.out == ""
    assert err.count("\n") == 0
    assert re.fullmatch(
        r"bayesfm: error: .*bad\.toml: \[inference\]: method = 'hmc' is not allowed; "
        r"allowed are 'nuts', 'svi', 'gibbs'",
        err,
    )


def test_missing_files_exit_2(tmp_path, capsys, monkeypatch):
    assert cli.main(["fit", str(tmp_path / "none.toml")]) == 2
    assert "none.toml: model card not found" in capsys.readouterr().err
    monkeypatch.delenv("BAYESFM_ML100K", raising=False)
    assert cli.main(["fit", str(MODELS / "ml100k_mf.toml"), "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bayesfm: error: ") and "--data-dir" in err and "BAYESFM_ML100K" in err
    assert cli.main(["predict", str(tmp_path / "run.nc"), str(tmp_path / "x.csv")]) == 2
    assert "RUN: file" in capsys.readouterr().err
    assert cli.main(["fit", SYNTHETIC, "--out", str(tmp_path / "no" / "run.nc")]) == 2
    assert "--out: folder" in capsys.readouterr().err


def test_read_table_types(tmp_path):
    """CSV cells come back as the model saw them in training (string ids, multi-hot sets)."""

    class Fitted:  # the attributes read_table uses
        encoder_ = bfm.data.FittedEncoder.fit(
            bfm.FeatureSpec(
                [
                    bfm.Categorical("user_id"),
                    bfm.Categorical("item_id"),
                    bfm.MultiHot("genres", owner="item_id"),
                ]
            ),
            pd.DataFrame({"user_id": ["007", "8"], "item_id": [1, 2], "genres": [("a",), ("b",)]}),
        )

    path = tmp_path / "x.csv"
    pd.DataFrame(
        {"user_id": ["007", "8"], "item_id": [1, 3], "genres": [("a", "b"), "b|c"]}
    ).to_csv(path, index=False)
    table = cli.read_table(str(path), Fitted())
    assert table.user_id.tolist() == ["007", "8"]
    assert table.item_id.tolist() == [1, 3]
    assert table.genres.tolist() == [("a", "b"), "b|c"]


def _rows_csv(folder: Path, with_target: bool = False) -> tuple[Path, pd.DataFrame]:
    """20 held-out rows of the synthetic card as CSV (multi-hot cells as "a|b" strings)."""
    _, _, X_test, y_test = load_spec(SYNTHETIC).with_tiny_settings().load_data()
    rows = X_test.iloc[:20]
    table = rows.assign(genres=["|".join(g) for g in rows["genres"]])
    if with_target:
        table = table.assign(rating=y_test[:20])
    path = folder / ("test.csv" if with_target else "rows.csv")
    table.to_csv(path, index=False)
    return path, rows


def test_fit_save_predict_round_trip(fitted, capsys):
    run, folder = fitted["run"], fitted["folder"]
    assert run.is_file() and f"wrote {run}" in fitted["out"]
    csv, rows = _rows_csv(folder)
    preds = folder / "preds.csv"
    assert cli.main(["predict", str(run), str(csv), "--out", str(preds), "--prob", "0.8"]) == 0
    table = pd.read_csv(preds)
    assert list(table.columns) == ["mean", "lower", "upper"] and len(table) == 20
    assert (table["lower"] <= table["mean"]).all() and (table["mean"] <= table["upper"]).all()
    expected = bfm.load(run).predict_interval(rows, prob=0.8)
    np.testing.assert_allclose(table.to_numpy(), expected.to_numpy(), rtol=1e-5, atol=1e-6)
    capsys.readouterr()
    assert cli.main(["predict", str(run), str(csv)]) == 0  # to stdout
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "mean,lower,upper" and len(printed) == 21
    assert cli.main(["predict", str(run), str(csv), "--prob", "1.5"]) == 2
    assert "--prob: got 1.5" in capsys.readouterr().err


def test_report_round_trip(fitted, capsys):
    run, folder = fitted["run"], fitted["folder"]
    assert fitted["report"].is_file() and fitted["report"].stat().st_size > 0
    csv, _ = _rows_csv(folder, with_target=True)
    html = folder / "report.html"
    assert cli.main(["report", str(run), "--out", str(html), "--test", str(csv)]) == 0
    assert html.is_file() and html.stat().st_size > 0
    assert cli.main(["report", str(run), "--test", str(csv), "--target", "stars"]) == 2
    assert "--target: column 'stars'" in capsys.readouterr().err
