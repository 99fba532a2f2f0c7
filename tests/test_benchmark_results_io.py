"""The benchmark scripts' row saving: each row records the machine that produced it."""

import json

from benchmarks.results_io import machine_counts, machine_line, row_saver, this_machine


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
