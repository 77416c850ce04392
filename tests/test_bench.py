"""``normgrad bench``'s report: every op's row, RMS norm's included, in tables whose columns
stay apart. Timings are never asserted; the sizes are shrunk to keep this fast."""

import json

import pytest

from normgrad import backends, bench, cli
from normgrad.reference.pytorch import torch_available


@pytest.fixture
def small_bench(monkeypatch):
    """bench with tiny shapes, two repetitions, and no bandwidth or network measurement."""
    monkeypatch.setattr(bench, "QUICK_SHAPES", [("NHWC (2, 3, 3, 4)", (2, 3, 3, 4), -1)])
    monkeypatch.setattr(
        bench,
        "OTHER_OPS",
        [
            ("layer_norm", "(16, 8)", (16, 8), {}),
            ("group_norm", "NCHW (2, 4, 3, 3)", (2, 4, 3, 3), {"num_groups": 2}),
            ("rms_norm", "(16, 8)", (16, 8), {}),
        ],
    )
    monkeypatch.setattr(bench, "triad_bandwidth", lambda: (1e10, "stub for the test"))
    monkeypatch.setattr(
        bench, "train_benchmark", lambda steps, reps, _t=bench.train_benchmark: _t(2, reps=1)
    )
    monkeypatch.setattr(
        bench, "run", lambda quick, progress, _run=bench.run: _run(quick, progress, reps=2)
    )


def _table_after(lines, title):
    """The header line and the rows of the table under the line ``title``."""
    start = lines.index(title) + 1
    end = lines.index("", start)
    return lines[start], lines[start + 2 : end]


def test_bench_quick_has_an_rms_norm_row_and_readable_headers(small_bench, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert cli.main(["bench", "--quick", "--no-progress", "--json", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    key = ["op", "shape", "dtype", "mode"]

    times_title = next(line for line in lines if line.startswith("time in ms"))
    head, rows = _table_after(lines, times_title)
    assert head.split() == [*key, "floor", "staged", "numpy", "fused", "torch"]
    ratio_title = next(line for line in lines if line.startswith("ratios:"))
    ratio_head, ratio_rows = _table_after(lines, ratio_title)
    ratios = ["numpy/torch", "fused/torch", "fused/floor", "torch/floor"]
    assert ratio_head.split() == [*key, *ratios]
    for title in ratios:  # each title has a gap of two before it
        assert f"  {title}" in ratio_head

    rms = [row.split() for row in rows if row.startswith("rms_norm")]
    assert rms and rms[0][:4] == ["rms_norm", "(16,", "8)", "float32"]
    assert any(row.startswith("rms_norm") for row in ratio_rows)
    # staged, NumPy, fused and PyTorch's rms_norm timed side by side
    methods = {"staged", "numpy closed form"}
    methods |= {"fused (numba)"} if backends.numba_available() else set()
    methods |= {"pytorch"} if torch_available() else set()
    result = json.loads(out.read_text())
    by_op = {r["op"]: r for r in result["rows"]}
    assert set(by_op) == {"batch_norm", "layer_norm", "group_norm", "rms_norm"}
    assert set(by_op["rms_norm"]["times_ms"]) == methods
    assert "seed" not in " ".join(lines).lower()
    # everything is in the JSON: samples, their spread, the floor and why, the machine
    row = by_op["rms_norm"]
    assert set(row["iqr_ms"]) == methods and all(len(v) == 2 for v in row["samples_ms"].values())
    assert row["floor_transfers"] in (5, 7, 8) and row["floor_reason"]
    assert {"caches", "per_core_cache_bytes", "cpu"} <= set(result["machine"])
    assert "warnings" in result and "load_average_before" in result
    floor_title = next(line for line in lines if line.startswith("floor used per row"))
    head, floor_rows = _table_after(lines, floor_title)
    assert head.split()[-2:] == ["transfers", "why"] and len(floor_rows) == len(result["rows"])


def test_the_floor_is_5_transfers_where_a_group_fits_in_cache_and_8_where_not():
    bn, ln = bench.get_op("batch_norm"), bench.get_op("layer_norm")
    mib = 1 << 20
    f32 = "float32"
    # (4096, 1024): a block of columns one line wide is 256K, with dy 512K
    assert bench.traffic_floor(bn, (4096, 1024), {}, f32, "train", mib)[0] == 5
    # (65536, 256): 4M per block of columns: nothing fits
    transfers, why = bench.traffic_floor(bn, (65536, 256), {}, f32, "train", mib)
    assert transfers == 8 and "does not fit" in why
    # NCHW (32, 64, 56, 56): a channel is 392K; with dy 784K, in 1M both fit, in 512K one
    assert bench.traffic_floor(bn, (32, 64, 56, 56), {}, f32, "train", mib)[0] == 5
    assert bench.traffic_floor(bn, (32, 64, 56, 56), {}, f32, "train", mib // 2)[0] == 7
    assert bench.traffic_floor(ln, (4096, 1024), {}, f32, "train", mib)[0] == 5
    assert bench.traffic_floor(bn, (65536, 256), {}, f32, "eval", mib)[0] == 2


def test_a_busy_machine_and_a_kernel_faster_than_its_floor_are_warned_about():
    row = {"op": "layer_norm", "shape": "(4, 4)", "dtype": "float32", "mode": "train",
           "floor_ms": 2.0, "times_ms": {"pytorch": 1.0, "fused (numba)": 3.0}}  # fmt: skip
    result = {"machine": {"cpus": 2}, "load_average_before": 3.5, "bandwidth_GBps": 20.0,
              "bandwidth_end_GBps": 12.0, "rows": [row]}  # fmt: skip
    warnings = bench.load_warnings(result)
    assert len(warnings) == 3
    assert "busy before the run (load average 3.50 on 2 cpus)" in warnings[0]
    assert "moved from 20.0 to 12.0 GB/s" in warnings[1]
    assert warnings[2].startswith("pytorch ran layer_norm (4, 4) float32 train in 0.50x")
    quiet = result | {"load_average_before": 0.1, "bandwidth_end_GBps": 19.0}
    quiet["rows"] = [row | {"times_ms": {"pytorch": 2.5}}]
    assert bench.load_warnings(quiet) == []


def test_table_columns_are_as_wide_as_their_titles_plus_a_gap():
    lines = bench._table(("op", "a long title", "x"), [["rms_norm", "1.00", "-"]], left=1)
    assert lines[0] == "op        a long title  x"
    assert lines[1] == "-" * len(lines[0])
    assert lines[2] == "rms_norm          1.00  -"


def test_bench_train_rows_for_both_networks(capsys, tmp_path, monkeypatch):
    result = bench.train_benchmark(steps=3, reps=1)
    assert [r["network"] for r in result["rows"]] == ["without BN", "with BN"]
    for r in result["rows"]:
        assert r["normgrad_step_ms"] > 0
        if "pytorch_step_ms" in r:  # the best of every thread count tried
            assert r["pytorch_step_ms"] == min(r["pytorch_step_ms_by_threads"].values())
    text = bench.format_train_report(result)
    assert "step / plain step" in text and "load average" in text
    out = tmp_path / "train.json"
    monkeypatch.setattr(bench, "train_benchmark", lambda steps, progress: result)
    assert cli.main(["bench", "--train", "--no-progress", "--json", str(out)]) == 0
    assert "with BN" in capsys.readouterr().out and out.read_text().startswith("{")
