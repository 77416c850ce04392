"""The command line: `normgrad verify` and friends."""

import json
import subprocess
import sys

import pytest

from normgrad import cli, verify


def test_verify_passes_and_prints_every_section(capsys):
    assert cli.main(["verify"]) == 0
    out = capsys.readouterr().out
    for text in ("[ops]", "[write-ups]", "[precision]", "group_norm", "instance_norm"):
        assert text in out
    assert "(N, H, W, C)" in out and "0 failed" in out
    assert "Bessel-corrected formula with the biased variance" in out


def test_verify_exits_nonzero_when_a_check_fails(capsys, monkeypatch):
    monkeypatch.setattr(verify, "TOL_NUMERIC", 1e-30)  # no numerical gradient is that exact
    assert cli.main(["verify", "--no-torch"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "0 failed" not in out


def test_verify_json(tmp_path, capsys):
    path = tmp_path / "v.json"
    assert cli.main(["verify", "--no-torch", "--json", str(path)]) == 0
    rows = json.loads(path.read_text())
    assert rows and all(r["passed"] for r in rows)
    assert {"staged", "numeric"} <= set(rows[0]["errors"])


def test_verify_json_into_a_missing_directory_is_a_clean_error(tmp_path, capsys):
    code = cli.main(["verify", "--no-torch", "--json", str(tmp_path / "no" / "such.json")])
    assert code == 2
    assert "cannot write --json" in capsys.readouterr().err


def test_help_and_version():
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    assert cli.main([]) == 2


def test_entry_point_runs_as_a_module():
    out = subprocess.run(
        [sys.executable, "-m", "normgrad", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("normgrad ")


def test_core_imports_nothing_optional():
    code = (
        "import sys, normgrad, normgrad.cs231n, normgrad.gradcheck, normgrad.reference.writeups; "
        "optional = ('torch', 'numba', 'mpi4py', 'matplotlib', 'hypothesis', 'normgrad.cli'); "
        "bad = [m for m in optional if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bench_quick_runs_and_reports_every_method(tmp_path, monkeypatch, capsys):
    """Only that it runs and reports: timings are never asserted in tests."""
    from normgrad import bench

    monkeypatch.setattr(bench, "QUICK_SHAPES", [("(64, 32)", (64, 32), 1)])
    monkeypatch.setattr(bench, "triad_bandwidth", lambda: (1e10, "stub for the test"))
    monkeypatch.setattr(bench, "paper_network", lambda steps: {"normgrad": 1.0, "pytorch": 1.0})
    out = tmp_path / "bench.json"
    monkeypatch.setattr(
        bench, "run", lambda quick, progress, _run=bench.run: _run(quick, progress, reps=2)
    )
    assert cli.main(["bench", "--quick", "--no-progress", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "staged" in text and "fused" in text and "floor" in text
    result = json.loads(out.read_text())
    assert {"machine", "bandwidth_GBps", "rows", "paper_network_samples_per_s"} <= set(result)
    assert all(r["times_ms"] for r in result["rows"])
