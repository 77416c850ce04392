"""Fault injection: every fault ends cleanly, every usage mistake is one line and exit 2.

- bad command-line input for every subcommand: exit 2, one line, nothing created;
- damaged run directories: --resume and evaluate explain what is wrong (or recover);
- SIGKILL at the write, fsync, rename and directory sync of every file a run writes (the
  fault hook of normgrad.io), then a resume that is bit-for-bit the uninterrupted run;
- SIGINT and SIGTERM: exit 130/143, one line with the resume command, exact resume;
- a full disk (a small tmpfs where mounting one is allowed; skipped otherwise, and always
  simulated by a failing fsync);
- MPI ranks that fail in setup, disagree on the configuration, die or stall in training
  (tests/test_mpi.py's requirements: mpi4py and mpiexec).
"""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import normgrad as ng
import normgrad.io
from normgrad import cli, nn
from normgrad.data.idx import write_idx
from normgrad.train import RUN_FILES, load_verified, save_atomic

RUN = ["--dataset", "digits", "--hidden", "16,16", "--batch-size", "50", "--steps", "30",
       "--checkpoint-every", "10", "--eval-every", "10", "--dtype", "float64", "--seed", "4",
       "--no-progress"]  # fmt: skip


def _train(out, *extra) -> int:
    return cli.main(["train", *RUN, "--out", str(out), *extra])


def _resume(run_dir) -> int:
    return cli.main(["train", "--resume", str(run_dir), "--no-progress"])


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def _same_run(a: Path, b: Path) -> None:
    """Bit-for-bit the same model, metrics and final checkpoint."""
    for name in ("model.npz", "checkpoint.npz"):
        x, y = load_verified(a / name), load_verified(b / name)
        assert set(x) == set(y), name
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=f"{name}: {k}")
    assert (a / "metrics.csv").read_bytes() == (b / "metrics.csv").read_bytes()
    assert (a / "config.json").read_bytes() == (b / "config.json").read_bytes()


def _no_temporaries(run_dir: Path) -> None:
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run of RUN."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert _train(out) == 0
    return out


# -- usage mistakes: one line, exit 2, nothing created --------------------------------


def _usage_cases(tmp: Path) -> list[tuple[list[str], str]]:
    file = tmp / "a_file"
    file.write_text("x")
    (tmp / "a_dir").mkdir()
    out = str(tmp / "new")
    train = ["train", "--dataset", "digits", "--no-progress"]
    # fmt: off
    return [
        ([*train, "--steps", "0", "--out", out], "--steps must be at least 1; got 0"),
        ([*train, "--epochs", "0", "--out", out], "--epochs must be at least 1"),
        ([*train, "--batch-size", "1", "--out", out], "needs at least 2 images per batch"),
        ([*train, "--batch-size", "0", "--norm", "none", "--out", out], "--batch-size must be"),
        ([*train, "--batch-size", "5000", "--out", out], "larger than the training set"),
        ([*train, "--lr", "0", "--out", out], "--lr must be positive"),
        ([*train, "--lr", "nan", "--out", out], "--lr must be positive"),
        ([*train, "--momentum", "1", "--out", out], "--momentum must be in [0, 1)"),
        ([*train, "--weight-scale", "-1", "--out", out], "--weight-scale must be positive"),
        ([*train, "--weight-scale", "huge", "--out", out], "--weight-scale must be"),
        ([*train, "--hidden", "0", "--out", out], "--hidden"),
        ([*train, "--hidden", "10", "--norm", "group_norm", "--out", out], "multiple of 4"),
        ([*train, "--hidden", "4000000", "--out", out], "GiB"),
        ([*train, "--epochs", "100000000000", "--out", out], "steps needs about"),
        ([*train, "--seed", "-1", "--out", out], "--seed: expected a non-negative integer"),
        ([*train, "--out", str(file)], "is a file, not a directory"),
        ([*train, "--out", str(file / "run")], "a_file is not a directory"),
        ([*train, "--data-dir", str(tmp / "typo"), "--out", out], "--data-dir is for"),
        ([*train, "--dataset", "mnist", "--data-dir", str(tmp / "typo"), "--out", out],
         "no such directory"),
        ([*train, "--rank-timeout", "5", "--out", out], "--rank-timeout is for --distributed"),
        ([*train, "--rank-timeout", "-1", "--out", out], "positive number of seconds"),
        ([*train], "--out DIR is required"),
        (["train", "--resume", str(tmp / "missing")], "no such run directory"),
        (["train", "--resume", str(tmp / "a_dir")], "no config.json"),
        (["train", "--resume", str(tmp / "a_dir"), "--overwrite"], "drop --overwrite"),
        (["evaluate", str(tmp / "missing")], "no such run directory"),
        (["evaluate", str(tmp / "a_dir")], "not a normgrad training run"),
        (["explain", "--shape", "300,300"], "at most 4,096 elements"),
        (["explain", "--seed", "-1"], "--seed: expected a non-negative integer"),
        (["verify", "--seed", "-1"], "--seed: expected a non-negative integer"),
        (["explain", "--shape", "0,3"], "every dimension must be a positive integer"),
        (["explain", "--shape", "a"], "invalid shape"),
        (["explain", "--op", "group_norm", "--groups", "0"], "num_groups"),
        (["explain", "--op", "group_norm", "--shape", "2,6", "--groups", "4"], "6"),
        (["graph", "--out", str(tmp / "a_dir"), "--format", "dot"], "is a directory"),
        (["graph", "--out", str(tmp / "missing" / "g.dot")], "does not exist"),
        (["graph", "--out", str(tmp / "g.txt")], "cannot tell the format"),
        (["graph", "--out", str(tmp / "g.dot"), "--shape", "300,300"], "at most 4,096"),
        (["check", str(tmp / "missing.py")], "missing.py"),
        (["check", str(file)], "not a Python file"),
        (["reproduce", "ioffe2015", "--out", str(file)], "is a file, not a directory"),
        (["reproduce", "ioffe2015", "--steps", "0", "--out", out], "--steps must be at least"),
        (["reproduce", "weight-scale", "--epochs", "0", "--out", out], "--epochs must be"),
        (["reproduce", "ioffe2015", "--data-dir", str(tmp / "typo"), "--out", out],
         "no such directory"),
        (["verify", "--json", str(tmp / "a_dir")], "--json"),
        (["check", str(file), "--json", str(tmp / "a_dir")], "--json"),
        (["bench", "--json", str(file / "x.json")], "--json"),
        (["nonsense"], "invalid choice"),
        (["train", "--steps", "x"], "invalid int value"),
    ]
    # fmt: on


def test_every_usage_mistake_is_one_line_and_exit_2_and_creates_nothing(tmp_path, capsys):
    cases = _usage_cases(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    for argv, expected in cases:
        try:
            code = cli.main(argv)
        except SystemExit as exc:  # argparse's own errors
            code = exc.code
        line = _one_line(capsys.readouterr().err)
        assert code == 2, (argv, line)
        assert line.startswith("normgrad"), line
        assert expected in line, (argv, line)
        assert sorted(p.name for p in tmp_path.iterdir()) == before, argv


def test_a_bad_backend_variable_is_a_usage_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NORMGRAD_BACKEND", "fastest")
    assert _train(tmp_path / "run") == 2
    line = _one_line(capsys.readouterr().err)
    assert "NORMGRAD_BACKEND must be one of auto, numpy, numba; got 'fastest'" in line
    assert not (tmp_path / "run").exists()


def test_a_read_only_out_is_refused_before_anything_is_written(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:  # root writes through permissions: use a read-only mount
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)],
                          capture_output=True).returncode:  # fmt: skip
            pytest.skip("cannot mount a read-only tmpfs here")
    else:
        ro.chmod(0o555)
    try:
        assert _train(ro / "run") == 2
        assert "cannot be written" in _one_line(capsys.readouterr().err)
        assert cli.main(["graph", "--out", str(ro / "g.dot")]) == 2
        assert "cannot write --out" in _one_line(capsys.readouterr().err)
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(ro)], check=True)
        else:
            ro.chmod(0o755)


def _idx_dir(path: Path, *, test_size=(4, 4), labels=None, label_dtype=np.uint8) -> Path:
    path.mkdir()
    rng = np.random.default_rng(0)
    train_y = np.arange(60) % 10 if labels is None else labels
    write_idx(path / "train-images-idx3-ubyte", rng.integers(0, 255, (60, 4, 4), np.uint8))
    write_idx(path / "train-labels-idx1-ubyte", np.asarray(train_y).astype(label_dtype))
    write_idx(path / "t10k-images-idx3-ubyte", rng.integers(0, 255, (20, *test_size), np.uint8))
    write_idx(path / "t10k-labels-idx1-ubyte", (np.arange(20) % 10).astype(np.uint8))
    return path


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("sizes", "the training images are 4x4 but the test images are 5x5"),
        ("minus_one", "label -1 at index 3; mnist labels are 0..9"),
        ("huge", "label 2000000000 at index 3"),
        ("eleven", "label 11 at index 3"),
    ],
)
def test_a_dataset_that_does_not_match_is_refused(tmp_path, capsys, kind, expected):
    labels = np.arange(60) % 10
    if kind == "sizes":
        data = _idx_dir(tmp_path / "d", test_size=(5, 5))
    else:
        labels[3] = {"minus_one": -1, "huge": 2_000_000_000, "eleven": 11}[kind]
        dtype = np.uint8 if kind == "eleven" else np.int32
        data = _idx_dir(tmp_path / "d", labels=labels, label_dtype=dtype)
    argv = ["train", "--dataset", "mnist", "--data-dir", str(data), "--steps", "2",
            "--batch-size", "10", "--out", str(tmp_path / "run"), "--no-progress"]  # fmt: skip
    assert cli.main(argv) == 2
    assert expected in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_a_good_idx_dataset_trains(tmp_path, capsys):
    data = _idx_dir(tmp_path / "d")
    argv = ["train", "--dataset", "mnist", "--data-dir", str(data), "--steps", "2",
            "--batch-size", "10", "--out", str(tmp_path / "run"), "--no-progress"]  # fmt: skip
    assert cli.main(argv) == 0


def test_help_documents_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    for code in ("0 ", "1 ", "2 ", "3 ", "130", "143"):
        assert f"\n  {code}" in text, code


# -- --out never overwrites a run -----------------------------------------------------


def test_out_refuses_a_directory_with_any_run_file_unless_overwrite(tmp_path, capsys, reference):
    for name in RUN_FILES:
        out = tmp_path / name.replace(".", "_")
        out.mkdir()
        shutil.copy(reference / name, out / name)
        before = (out / name).read_bytes()
        assert _train(out) == 2
        assert f"already holds a run ({name})" in _one_line(capsys.readouterr().err)
        assert (out / name).read_bytes() == before
    out = tmp_path / "again"
    shutil.copytree(reference, out)
    (out / "checkpoint.npz").unlink()  # the case that used to be overwritten silently
    assert _train(out, "--lr", "0.05") == 2
    capsys.readouterr()
    assert _train(out, "--overwrite") == 0
    _same_run(reference, out)


# -- damaged run directories ----------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", "the training configuration is empty"),
        ("{", "not JSON"),
        ("[1, 2]", "must be a JSON object; got list"),
        ('{"stepz": 30}', "unknown settings stepz"),
        ('{"steps": "thirty"}', "--steps must be an integer; got 'thirty'"),
        ('{"steps": true}', "--steps must be an integer"),
        ('{"steps": -1}', "--steps must be at least 1"),
        ('{"hidden": "16"}', "--hidden must be a list of integers"),
        ('{"norm": 3}', "--norm must be a name"),
        ('{"dataset": "cifar"}', "--dataset must be one of"),
    ],
)
def test_a_damaged_config_json_without_a_checkpoint_is_explained(tmp_path, capsys, text, expected):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(text)
    assert _resume(run) == 2
    line = _one_line(capsys.readouterr().err)
    assert "config.json" in line and expected in line, line


def test_a_damaged_config_json_is_rewritten_from_the_checkpoint(tmp_path, capsys, reference):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    (run / "config.json").write_text("")  # a kill while it was written (before atomic writes)
    assert _resume(run) == 0
    assert "config.json was damaged; rewrote it" in capsys.readouterr().out
    _same_run(reference, run)
    (run / "config.json").unlink()
    assert cli.main(["evaluate", str(run)]) == 0  # model.npz describes itself


def test_an_edited_config_json_is_refused_by_resume_and_evaluate(tmp_path, capsys, reference):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    config = json.loads((run / "config.json").read_text())
    config["hidden"] = [32, 32]
    (run / "config.json").write_text(json.dumps(config))
    assert cli.main(["evaluate", str(run)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "does not match the configuration stored in" in line
    assert "--hidden [32, 32]" in line and "[16, 16]" in line
    assert _resume(run) == 2
    assert "does not match" in _one_line(capsys.readouterr().err)


@pytest.mark.parametrize("name", ["model.npz", "checkpoint.npz"])
@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "foreign"])
def test_a_damaged_model_or_checkpoint_is_explained(tmp_path, capsys, reference, name, damage):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    path = run / name
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "empty":
        data = b""
    if damage == "foreign":
        save_atomic(path, {"weights": np.zeros(3)})
    else:
        path.write_bytes(bytes(data))
    command = ["evaluate", str(run)] if name == "model.npz" else None
    code = cli.main(command) if command else _resume(run)
    assert code == 2
    line = _one_line(capsys.readouterr().err)
    assert name in line, line


@pytest.mark.parametrize(
    "key, value",
    [
        ("step", np.array(10.5)),
        ("step", np.array(31)),
        ("losses", np.zeros(3)),
        ("evals", np.array("{}")),
        ("optim/fc1.weight.velocity", np.zeros(2)),
    ],
)
def test_a_checkpoint_that_does_not_fit_changes_nothing(tmp_path, reference, key, value):
    from normgrad.train import CheckpointError, Trainer, read_config

    run = tmp_path / "run"
    shutil.copytree(reference, run)
    state = load_verified(run / "checkpoint.npz")
    state[key] = value
    save_atomic(run / "checkpoint.npz", state)  # a valid checksum over a state that is wrong
    trainer = Trainer(read_config(run), run)
    before = trainer.model.state_dict()
    with pytest.raises(CheckpointError, match="does not fit this run"):
        trainer.load_checkpoint()
    assert trainer.step == 0 and trainer.opt.state == {}
    for k, v in trainer.model.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


def test_stale_temporaries_are_removed_at_the_next_start(tmp_path, reference):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    for name in RUN_FILES:
        (run / f".{name}.0123abcd.tmp").write_bytes(b"half")
    (run / ".notes.txt.0123abcd.tmp").write_text("not ours")
    assert _resume(run) == 0
    assert sorted(p.name for p in run.glob(".*.tmp")) == [".notes.txt.0123abcd.tmp"]


# -- SIGKILL at every stage of every file a run writes --------------------------------


def _killed_run(out: Path, fault: str) -> subprocess.CompletedProcess:
    env = os.environ | {normgrad.io.FAULT_ENV: fault}
    cmd = [sys.executable, "-m", "normgrad", "train", *RUN, "--out", str(out)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


# checkpoint.npz is written at steps 10, 20 and 30: :2 is mid-run.
KILL_POINTS = [f"{stage}:{name}" for name in ("config.json", "metrics.csv", "model.npz")
               for stage in ("write", "fsync", "rename", "dirsync")]  # fmt: skip
KILL_POINTS += [f"{stage}:checkpoint.npz:2" for stage in ("write", "fsync", "rename", "dirsync")]


@pytest.mark.parametrize("fault", KILL_POINTS)
def test_sigkill_while_writing_then_resume_is_bit_identical(tmp_path, capsys, reference, fault):
    run = tmp_path / "run"
    result = _killed_run(run, fault)
    assert result.returncode == -signal.SIGKILL, result.stderr
    if fault.endswith("config.json") and not fault.startswith("dirsync"):
        # config.json never reached its name: the run never started, and says so
        assert _resume(run) == 2
        assert "the run never started" in _one_line(capsys.readouterr().err)
        assert _train(run) == 0  # starting it again is allowed, and cleans up
    else:
        assert _resume(run) == 0
    _same_run(reference, run)
    _no_temporaries(run)


# -- SIGINT and SIGTERM ---------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_finishes_the_step_saves_and_resumes_exactly(
    tmp_path, capsys, monkeypatch, reference, signum
):
    from normgrad.train.trainer import Trainer

    original = Trainer.train_step

    def train_step(self, step):
        if step == 14:  # mid-step 15, between checkpoints
            os.kill(os.getpid(), signum)
        return original(self, step)

    monkeypatch.setattr(Trainer, "train_step", train_step)
    run = tmp_path / "run"
    assert _train(run) == 128 + signum
    line = _one_line(capsys.readouterr().err)
    assert f"stopped by {signal.Signals(signum).name} after step 15 of 30" in line
    assert f"continue with: normgrad train --resume {run}" in line
    assert int(load_verified(run / "checkpoint.npz")["step"]) == 15
    monkeypatch.setattr(Trainer, "train_step", original)
    assert _resume(run) == 0
    _same_run(reference, run)


def test_a_second_ctrl_c_is_not_deferred_and_the_last_checkpoint_stays(
    tmp_path, capsys, monkeypatch, reference
):
    from normgrad.train.trainer import Trainer

    original = Trainer.train_step

    def train_step(self, step):
        if step == 14:
            os.kill(os.getpid(), signal.SIGINT)  # noted: stop after this step
            os.kill(os.getpid(), signal.SIGINT)  # the impatient second one: stop now
        return original(self, step)

    monkeypatch.setattr(Trainer, "train_step", train_step)
    run = tmp_path / "run"
    assert _train(run) == 130
    assert _one_line(capsys.readouterr().err) == "normgrad train: interrupted"
    assert int(load_verified(run / "checkpoint.npz")["step"]) == 10
    monkeypatch.setattr(Trainer, "train_step", original)
    assert _resume(run) == 0
    _same_run(reference, run)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_a_training_process_exits_128_plus_the_signal(tmp_path, signum):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "normgrad", "train", *RUN, "--steps", "1000000",
           "--checkpoint-every", "100000", "--out", str(run)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (run / "config.json").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(1.0)  # past setup, into the steps (a signal before them ends without one)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    line = _one_line(err)
    step = int(line.split(" after step ")[1].split(" ")[0])
    assert int(load_verified(run / "checkpoint.npz")["step"]) == step
    assert f"normgrad train --resume {run}" in line


def test_ctrl_c_outside_training_is_one_line_and_130(capsys, monkeypatch):
    from normgrad import verify

    def interrupted(**kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(verify, "run_verify", interrupted)
    assert cli.main(["verify", "--no-torch"]) == 130
    assert _one_line(capsys.readouterr().err) == "normgrad verify: interrupted"


# -- a full disk ----------------------------------------------------------------------


def test_a_failing_write_keeps_the_previous_checkpoint_and_resumes_exactly(
    tmp_path, capsys, monkeypatch, reference
):
    real_fsync, calls = os.fsync, []

    def fsync(fd):  # the second checkpoint meets a full disk
        calls.append(os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc") else "")
        if sum(".checkpoint.npz." in c for c in calls) == 2 and ".checkpoint.npz." in calls[-1]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    if not os.path.exists("/proc/self/fd"):
        pytest.skip("needs /proc to tell files apart")
    monkeypatch.setattr(normgrad.io.os, "fsync", fsync)
    run = tmp_path / "run"
    assert _train(run) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"cannot write {run / 'checkpoint.npz'}: No space left on device" in line
    assert "the previous checkpoint is kept" in line and f"--resume {run}" in line
    assert int(load_verified(run / "checkpoint.npz")["step"]) == 10
    _no_temporaries(run)
    monkeypatch.setattr(normgrad.io.os, "fsync", real_fsync)
    assert _resume(run) == 0
    _same_run(reference, run)


def test_a_full_tmpfs_ends_cleanly_and_the_run_resumes_exactly(tmp_path, capsys, reference):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    # Room for config.json and one checkpoint, not for the second one beside it (an atomic
    # write holds the old file and the new one at once).
    checkpoint = (reference / "checkpoint.npz").stat().st_size
    size = (checkpoint * 3 // 2 // 4096 + 2) * 4096
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)]
    if subprocess.run(mount, capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        assert _train(disk / "run") == 2
        line = _one_line(capsys.readouterr().err)
        assert "No space left on device" in line and "is kept" in line
        _no_temporaries(disk / "run")
        shutil.copytree(disk / "run", tmp_path / "run")
    finally:
        subprocess.run(["umount", str(disk)], check=True)
    assert _resume(tmp_path / "run") == 0
    _same_run(reference, tmp_path / "run")


# -- state changes only after validation ----------------------------------------------


def test_a_refused_batch_changes_no_running_statistic():
    bn = nn.BatchNorm(3, momentum=None)
    before = {k: v.copy() for k, v in bn.buffers().items()}
    for bad in (np.ones((1, 3)), np.ones((4, 2)), np.ones((4, 3), dtype=int)):
        with pytest.raises((ValueError, TypeError)):
            bn.forward(bad)
    for k, v in bn.buffers().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


def test_optimizers_refuse_bad_state_and_gradients_without_changing_anything():
    model = nn.FullyConnectedNet(4, [3], 2, seed=0)
    for opt, bad_state in (
        (nn.SGD(model, lr=0.1, momentum=0.9), {"fc1.weight.velocity": np.zeros((2, 2))}),
        (nn.Adam(model, lr=0.1), {"t": np.array(1.5)}),
        (nn.Adam(model, lr=0.1), {"fc9.m": np.zeros(3)}),
    ):
        opt.state = {"marker": np.ones(1)}
        with pytest.raises(ValueError):
            opt.load_state_dict(bad_state)
        assert list(opt.state) == ["marker"]
    adam = nn.Adam(model, lr=0.1)
    params = {k: v.copy() for k, v in model.parameters().items()}
    del model["fc2"].grads["bias"]
    with pytest.raises(ValueError, match=r"gradient of fc2\.bias"):
        adam.step()
    assert "t" not in adam.state
    for k, v in model.parameters().items():
        np.testing.assert_array_equal(v, params[k], err_msg=k)


def test_linear_checks_its_sizes_and_its_input_before_saving_it():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="in_features must be a positive int; got 0"):
        nn.Linear(0, 3, rng=rng)
    with pytest.raises(ValueError, match=r"hidden_dims\[1\] must be a positive int; got -2"):
        nn.FullyConnectedNet(4, [3, -2], 2)
    layer = nn.Linear(5, 3, rng=rng)
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"takes x of shape \(N, 5\); got shape \(2, 4\)"):
        layer.forward(np.ones((2, 4)))
    with pytest.raises(RuntimeError, match="before forward"):  # the bad x was not kept
        layer.backward(np.ones((2, 3)))


# -- the smaller items ----------------------------------------------------------------


def test_matrix_masked_and_big_endian_inputs():
    rng = np.random.default_rng(0)
    x, g, b = rng.standard_normal((6, 3)), rng.standard_normal(3), rng.standard_normal(3)
    y = ng.batch_norm_forward(x, g, b)[0]
    with pytest.warns(PendingDeprecationWarning):  # NumPy's own word on np.matrix
        matrix = np.matrix(x)
    np.testing.assert_array_equal(ng.batch_norm_forward(matrix, g, b)[0], y)
    np.testing.assert_array_equal(ng.batch_norm_forward(x.astype(">f8"), g, b)[0], y)
    np.testing.assert_array_equal(ng.batch_norm_forward(x, g.astype(">f8"), b)[0], y)
    unmasked = np.ma.masked_array(x, mask=np.zeros_like(x, bool))
    np.testing.assert_array_equal(ng.batch_norm_forward(unmasked, g, b)[0], y)
    with pytest.raises(TypeError, match="masked array with 1 masked values"):
        ng.batch_norm_forward(np.ma.masked_array(x, mask=x == x[0, 0]), g, b)
    with pytest.raises(TypeError, match="running_mean must be a NumPy array"):
        ng.batch_norm_forward(x, g, b, running_mean=np.ma.zeros(3), running_var=np.ones(3))


def test_one_array_as_running_mean_and_var_and_a_bad_comm_are_refused():
    x = np.random.default_rng(0).standard_normal((6, 3))
    stats = np.zeros(3)
    with pytest.raises(ValueError, match="running_mean and running_var share memory"):
        ng.batch_norm_forward(x, np.ones(3), None, running_mean=stats, running_var=stats)
    np.testing.assert_array_equal(stats, 0)
    both = np.zeros(6)
    with pytest.raises(ValueError, match="share memory"):
        ng.batch_norm_forward(x, np.ones(3), None, running_mean=both[:3], running_var=both[2:5])
    with pytest.raises(TypeError, match="comm must be an mpi4py communicator"):
        ng.batch_norm_forward(x, np.ones(3), None, comm=True)


def test_check_gradients_on_integer_inputs():
    from normgrad.gradcheck import check_gradients

    x = np.arange(6).reshape(2, 3)  # integers: perturbing them in place would truncate
    dout = np.ones((2, 3))
    for mode in ("full", "directional"):
        (result,) = check_gradients(
            lambda x: x.astype(np.float64) ** 2, {"x": x}, dout, {"x": 2.0 * x}, mode=mode
        )
        assert result.passed, result


# -- MPI ------------------------------------------------------------------------------


def _mpiexec() -> str:
    pytest.importorskip("mpi4py")
    path = shutil.which("mpiexec") or str(Path(sys.executable).with_name("mpiexec"))
    if not Path(path).exists():
        pytest.skip("no mpiexec")
    return path


def _mpi_train(out, *per_rank_extra, env=None, timeout=120) -> subprocess.CompletedProcess:
    """One rank per entry of ``per_rank_extra`` (extra arguments for that rank)."""
    cmd = [_mpiexec()]
    for i, extra in enumerate(per_rank_extra):
        cmd += [":"] if i else []
        cmd += ["-n", "1", sys.executable, "-m", "normgrad", "train", *RUN, "--distributed",
                "--out", str(out), *extra]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env=os.environ | (env or {}))  # fmt: skip


def test_mpi_a_rank_failing_in_setup_ends_every_rank_with_its_message(tmp_path):
    start = time.monotonic()
    result = _mpi_train(tmp_path / "run", [], ["--data-dir", str(tmp_path / "typo")])
    assert result.returncode == 2, result.stderr
    line = _one_line(result.stderr)
    assert "rank 1 of 2: --data-dir is for" in line
    assert time.monotonic() - start < 60
    assert not (tmp_path / "run").exists()


def test_mpi_ranks_that_disagree_fail_together_before_the_first_step(tmp_path):
    result = _mpi_train(tmp_path / "run", [], ["--lr", "0.2"])
    assert result.returncode == 2, result.stderr
    line = _one_line(result.stderr)
    assert "the ranks disagree on the run's configuration: " in line
    assert "--lr 0.2 (rank 1) vs 0.1 (rank 0)" in line
    assert not (tmp_path / "run").exists()


def test_mpi_a_rank_killed_in_training_ends_the_job_and_the_run_resumes_exactly(tmp_path):
    ref = tmp_path / "ref"
    assert _mpi_train(ref, [], []).returncode == 0
    run = tmp_path / "run"
    start = time.monotonic()
    result = _mpi_train(run, [], [], env={normgrad.io.FAULT_ENV: "write:checkpoint.npz:2"})
    assert result.returncode != 0
    assert "Killed" in result.stdout + result.stderr  # mpiexec says how rank 0 ended
    assert time.monotonic() - start < 60
    cmd = [_mpiexec(), "-n", "2", sys.executable, "-m", "normgrad", "train", "--resume",
           str(run), "--distributed", "--no-progress"]  # fmt: skip
    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout and "at step 10 of 30" in resumed.stdout
    _same_run(ref, run)
    _no_temporaries(run)


def test_mpi_rank_timeout_names_the_silent_rank(tmp_path):
    start = time.monotonic()
    stop_rank_0 = {normgrad.io.FAULT_ENV: "write:checkpoint.npz:2:stop"}  # a hung disk
    result = _mpi_train(tmp_path / "run", ["--rank-timeout", "1"], ["--rank-timeout", "1"],
                        env=stop_rank_0, timeout=60)  # fmt: skip
    assert result.returncode != 0
    assert (
        "normgrad train: rank 1 waited" in result.stderr
        and "silent: rank 0 (no answer: stopped, hung or dead); aborting all ranks" in result.stderr
    ), result.stderr
    assert time.monotonic() - start < 30


def test_mpi_a_signal_stops_every_rank_after_the_same_step(tmp_path):
    run = tmp_path / "run"
    cmd = [_mpiexec(), "-n", "2", sys.executable, "-m", "normgrad", "train", *RUN,
           "--steps", "1000000", "--checkpoint-every", "100000", "--distributed", "--out",
           str(run)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (run / "config.json").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(1.0)  # past setup, into the steps
    proc.send_signal(signal.SIGTERM)  # mpiexec forwards it to every rank
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    line = [x for x in err.splitlines() if x.startswith("normgrad")]
    assert len(line) == 1, err
    step = int(line[0].split(" after step ")[1].split(" ")[0])
    assert int(load_verified(run / "checkpoint.npz")["step"]) == step
    assert f"mpiexec -n 2 normgrad train --resume {run} --distributed" in line[0]


def test_mpi_rank_timeout_names_a_rank_busy_outside_any_collective(tmp_path):
    script = str(Path(__file__).with_name("busy_rank.py"))
    cmd = [_mpiexec(), "-n", "2", sys.executable, script, "train", *RUN, "--distributed",
           "--rank-timeout", "1", "--out", str(tmp_path / "run")]  # fmt: skip
    start = time.monotonic()
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "silent: rank 0 (not in a collective: busy in step 20)" in result.stderr, result.stderr
    assert time.monotonic() - start < 25


def test_mpi_a_full_disk_on_rank_0_ends_every_rank_with_one_line(tmp_path):
    mpiexec = _mpiexec()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(disk)]  # config.json fits
    if subprocess.run(mount, capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        cmd = [mpiexec, "-n", "2", sys.executable, "-m", "normgrad", "train", *RUN,
               "--distributed", "--out", str(disk / "run")]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        _no_temporaries(disk / "run")
    finally:
        subprocess.run(["umount", str(disk)], check=True)
    # Every rank hears that rank 0 could not write and stops at the same step: no MPI_Abort
    # (whose teardown can swallow the line), the exit and the one line of any usage error.
    assert result.returncode == 2, result.stderr
    line = _one_line(result.stderr)
    assert "rank 0 of 2: cannot write" in line and "No space left on device" in line
    assert "no checkpoint was written yet" in line
    assert line.endswith("every rank stopped after step 10")


def test_mpi_a_failing_write_on_rank_0_stops_every_rank_and_keeps_the_last_checkpoint(tmp_path):
    """The same protocol as the full tmpfs above, on any machine: rank 0's second checkpoint
    meets a full disk (a failing fsync); every rank stops after that step with the one line,
    exit 2, the first checkpoint kept, and the run then resumes."""
    if not os.path.exists("/proc/self/fd"):
        pytest.skip("needs /proc to tell files apart")
    script = str(Path(__file__).with_name("full_disk_rank.py"))
    run = tmp_path / "run"
    cmd = [_mpiexec(), "-n", "2", sys.executable, script, "train", *RUN, "--distributed",
           "--out", str(run)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    line = _one_line(result.stderr)
    assert f"rank 0 of 2: cannot write {run / 'checkpoint.npz'}: No space left on device" in line
    assert "the previous checkpoint is kept" in line
    assert line.endswith("every rank stopped after step 20")
    assert int(load_verified(run / "checkpoint.npz")["step"]) == 10
    _no_temporaries(run)
    resume = [_mpiexec(), "-n", "2", sys.executable, "-m", "normgrad", "train", "--resume",
              str(run), "--distributed", "--no-progress"]  # fmt: skip
    resumed = subprocess.run(resume, capture_output=True, text=True, timeout=60)
    assert resumed.returncode == 0, resumed.stderr
    assert int(load_verified(run / "checkpoint.npz")["step"]) == 30
