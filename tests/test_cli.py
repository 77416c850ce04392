"""The command line: `normgrad verify` and friends."""

import dataclasses
import json
import re
import subprocess
import sys
import textwrap

import pytest

import normgrad.train
from normgrad import cli, verify
from normgrad.errors import NormgradUsageError
from normgrad.train import TrainConfig


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
    monkeypatch.setattr(
        bench, "train_benchmark", lambda steps, reps, _t=bench.train_benchmark: _t(2, reps=1)
    )
    out = tmp_path / "bench.json"
    monkeypatch.setattr(
        bench, "run", lambda quick, progress, _run=bench.run: _run(quick, progress, reps=2)
    )
    assert cli.main(["bench", "--quick", "--no-progress", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "staged" in text and "fused" in text and "floor" in text
    result = json.loads(out.read_text())
    assert {"machine", "bandwidth_GBps", "rows", "train"} <= set(result)
    assert all(r["times_ms"] for r in result["rows"])


def _train_args(*argv):
    return cli.build_parser().parse_args(["train", *argv])


def test_train_defaults_are_train_configs():
    """Written once, in TrainConfig: the parser's defaults are its field defaults, and a run
    with no options is TrainConfig's default run."""
    args = _train_args("--out", "x")
    options = [f.name for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)]
    assert len(options) == len(dataclasses.fields(TrainConfig)) - 1  # all but log_every
    for name in options:
        assert getattr(args, name) == TrainConfig.default(name), name
    assert cli._train_config(args) == TrainConfig(steps=TrainConfig.DEFAULT_STEPS)
    assert cli._train_config(_train_args("--epochs", "3")) == TrainConfig(epochs=3)


def _help(capsys, *argv) -> str:
    with pytest.raises(SystemExit):
        cli.main([*argv, "--help"])
    return " ".join(capsys.readouterr().out.split())  # undo the line wrapping


def test_train_help_shows_train_configs_defaults(capsys, monkeypatch):
    text = _help(capsys, "train")
    for shown in ("digits", "batch_norm", "100,100,100", "relu", "60", "0.1", "sgd", "he",
                  "1000", "500", "float32"):  # fmt: skip
        assert f"(default {shown})" in text, shown
    assert f"(default {TrainConfig.DEFAULT_STEPS} unless --epochs is given)" in text
    # read from TrainConfig, not copied: change a default there and the CLI follows
    lr = next(f for f in dataclasses.fields(TrainConfig) if f.name == "lr")
    monkeypatch.setattr(lr, "default", 0.25)
    assert "learning rate (default 0.25)" in _help(capsys, "train")
    assert _train_args().lr == 0.25


@pytest.mark.parametrize(
    ("given", "stored"),
    [("batch", "batch_norm"), ("layer", "layer_norm"), ("group", "group_norm"),
     ("batchnorm", "batch_norm"), ("batch_norm", "batch_norm"), ("none", "none")],
)  # fmt: skip
def test_norm_takes_the_canonical_names_and_the_old_short_ones(given, stored):
    assert _train_args("--norm", given).norm == stored
    assert cli._train_config(_train_args("--norm", given)).norm == stored


def test_an_unknown_norm_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--out", "x", "--norm", "instance"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_a_usage_error_from_the_library_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path):
    def start_run(*args, **kwargs):
        raise NormgradUsageError("that directory is no good")

    monkeypatch.setattr(normgrad.train, "start_run", start_run)
    assert cli.main(["train", "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    assert capsys.readouterr().err == "normgrad train: error: that directory is no good\n"


def test_a_plain_value_error_is_a_bug_not_a_usage_error(monkeypatch, tmp_path):
    def start_run(*args, **kwargs):
        raise ValueError("a bug in normgrad")

    monkeypatch.setattr(normgrad.train, "start_run", start_run)
    with pytest.raises(ValueError, match="a bug in normgrad"):
        cli.main(["train", "--out", str(tmp_path / "r"), "--no-progress"])


def test_a_bug_exits_1_with_a_traceback(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        import normgrad.train
        from normgrad import cli

        def start_run(*args, **kwargs):
            raise ValueError("a bug in normgrad")

        normgrad.train.start_run = start_run
        sys.exit(cli.main(["train", "--out", {str(tmp_path / "r")!r}, "--no-progress"]))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "ValueError: a bug in normgrad" in result.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--norm", "group", "--hidden", "10", "--steps", "1"], "multiple of 4"),
        (["train", "--weight-scale", "huge", "--steps", "1"], "--weight-scale must be"),
        (["train", "--lr", "-1", "--steps", "1"], "--lr must be positive"),
        (["train", "--batch-size", "5000", "--steps", "1"], "larger than the training set"),
        (["train", "--resume", "DIR", "--seed", "3"], "drop --seed"),
        (["reproduce", "ioffe2015", "--steps", "0"], "--steps must be at least 1"),
        (["explain", "--op", "group_norm", "--shape", "2,3", "--groups", "2"], "must divide"),
    ],
)
def test_bad_settings_are_usage_errors(tmp_path, capsys, argv, message):
    if argv[0] == "train" and "--resume" not in argv:
        argv = [*argv, "--out", str(tmp_path / "run"), "--no-progress"]
    if argv[0] == "reproduce":
        argv = [*argv, "--out", str(tmp_path / "exp"), "--dataset", "digits", "--no-progress"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.splitlines()) == 1


def test_help_names_no_internal_documents(capsys):
    """The help speaks of the staged backward, the closed form and the Bessel-corrected
    formula, and of docs/design.md, never of internal file or seed numbers."""
    for command in ("verify", "explain", "graph", "check", "train", "reproduce", "bench"):
        text = _help(capsys, command)
        assert not re.search(r"seeds? 00\d|DESIGN\.md|shared/seeds", text), command
