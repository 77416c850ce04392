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
    monkeypatch.setattr(bench, "paper_network", lambda steps: {"normgrad": 1.0, "pytorch": 1.0})
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
    ratio_head, ratio_rows = _table_after(lines, "ratios: time / PyTorch's time, and time / floor")
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
