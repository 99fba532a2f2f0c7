"""The benchmark scripts' row saving: each row records the machine that produced it and,
for a bayesfm fit, the hyperprior it was fitted under."""

import json

from benchmarks.results_io import (
    PRIOR_BEFORE_RECORDING,
    default_prior,
    machine_counts,
    machine_line,
    prior_counts,
    row_saver,
    this_machine,
)


def test_row_saver_stamps_this_machine_and_persists(tmp_path):
    out = tmp_path / "results" / "rows.json"
    results = {"old": {"rmse": 0.9}}  # saved before machines were recorded
    save = row_saver(results, out, persist=True)
    save("new", {"rmse": 0.8})
    save("gpu", {"rmse": 0.7, "machine": "NVIDIA H200"})  # a row that names its machine
    on_disk = json.loads(out.read_text())
    assert on_disk == results
    assert on_disk["new"]["machine"] == this_machine()
    assert on_disk["gpu"]["machine"] == "NVIDIA H200"
    assert "machine" not in on_disk["old"]
    counts = machine_counts(on_disk.values())
    assert counts == ", ".join(
        sorted([f"{this_machine()}: 1 rows", "NVIDIA H200: 1 rows", "not recorded: 1 rows"])
    )
    assert machine_line(on_disk.values()).startswith(
        f"machine of this page's last run: {this_machine()}; rows per recorded machine: "
    )


def test_row_saver_without_persist_writes_nothing(tmp_path):
    out = tmp_path / "rows.json"
    results: dict = {}
    row_saver(results, out, persist=False)("quick", {"rmse": 1.2})
    assert not out.exists()
    assert results["quick"]["machine"] == this_machine()


def test_this_machine_names_cores():
    assert this_machine().endswith(" cores")


def test_bayesfm_rows_record_the_default_prior_and_other_systems_none(tmp_path):
    results = {"old": {"system": "bayesfm/mf/gibbs", "rmse": 0.9}}  # saved before priors
    save = row_saver(results, tmp_path / "rows.json", persist=False)
    save("ours", {"system": "bayesfm/fm/svi", "rmse": 0.8})
    save("core", {"part": "fm_nuts", "rmse": 0.8})  # core rows name a part, not a system
    save("theirs", {"system": "myfm/fm", "rmse": 0.8})
    save("tuned", {"system": "bayesfm/mf/svi", "prior": "Gamma(2, 2)"})
    assert default_prior().startswith("Gamma(0.5, 0.5) on precisions")
    assert results["ours"]["prior"] == results["core"]["prior"] == default_prior()
    assert "prior" not in results["theirs"]
    assert results["tuned"]["prior"] == "Gamma(2, 2)"
    assert prior_counts(results.values()) == ", ".join(
        sorted(
            [
                f"{default_prior()}: 2 rows",
                "Gamma(2, 2): 1 rows",
                f"{PRIOR_BEFORE_RECORDING}: 1 rows",
            ]
        )
    )
    assert machine_line(results.values()).endswith(
        f"rows per hyperprior: {prior_counts(results.values())}"
    )
