"""The grader on a corpus of learner files (tests/learners/): correct ones in several
course years' styles, and one per mistake a student makes. Each file says in EXPECTED
what the grader must report for every function it defines: the verdict and, where there
is one, the mistake it names (or words its report must contain)."""

import ast
import json
import re
import threading
import time
from pathlib import Path

import pytest

from normgrad import cli
from normgrad.learn import grader, mistakes

LEARNERS = Path(__file__).parent / "learners"


def _expected(path: Path) -> dict | None:
    """The file's EXPECTED, read without importing it."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "EXPECTED":
            return ast.literal_eval(node.value)
    return None


CORPUS = sorted(p for p in LEARNERS.rglob("*.py") if _expected(p) is not None)


def _check_report(report, expected: dict) -> None:
    text = report.text()
    assert {f.name for f in report.functions} == set(expected), text
    for name, (verdict, marker) in expected.items():
        f = report[name]
        assert f.verdict == verdict, f"{name}: {f.verdict}, expected {verdict}\n{text}"
        if marker in mistakes.MISTAKES:
            assert marker in {x.mistake for x in f.findings}, text
            title = mistakes.MISTAKES[marker].title
            assert f"looks like {title}" in " ".join("\n".join(f.lines()).split())
        elif marker:
            assert marker in " ".join("\n".join(f.lines()).split()), text


def test_the_corpus_has_every_mistake_class_and_several_correct_files():
    assert len(CORPUS) >= 20
    named = {m for p in CORPUS for _, m in _expected(p).values() if m in mistakes.MISTAKES}
    assert {
        "test_eps_outside_sqrt",
        "test_affine_missing",
        "test_batch_stats",
        "running_not_updated",
        "momentum_ignored",
        "momentum_reversed",
        "unbiased_running_var",
        "spatial_per_position",
        "reshape_not_transposed_back",
        "groups_interleaved",
        "layer_norm_over_batch",
        "eps_outside_sqrt",
    } <= named
    correct = [p for p in CORPUS if all(v == "pass" for v, _ in _expected(p).values())]
    assert len(correct) >= 3


@pytest.mark.parametrize("path", CORPUS, ids=[str(p.relative_to(LEARNERS)) for p in CORPUS])
def test_each_learner_file_gets_the_right_verdict_and_diagnosis(path):
    _check_report(grader.grade(path, timeout=0.5), _expected(path))


def test_two_space_indentation_is_graded_like_four(tmp_path):
    source = (LEARNERS / "course_2023_dict.py").read_text()
    two = re.sub(r"(?m)^((?:    )+)", lambda m: "  " * (len(m.group(1)) // 4), source)
    assert "\n  def" not in two and "\n  mode = " in two
    path = tmp_path / "layers.py"
    path.write_text(two)
    _check_report(grader.grade(path), _expected(LEARNERS / "course_2023_dict.py"))


def test_a_python2_file_is_refused_in_one_line(tmp_path, capsys):
    path = tmp_path / "layers.py"
    path.write_text('import numpy as np\n\ndef batchnorm_forward(x, g, b, p):\n  print "hi"\n')
    assert cli.main(["check", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "is Python 2 code (a print statement at line 4)" in err and "2to3" in err


def test_a_missing_course_sibling_is_named(tmp_path, capsys):
    pkg = tmp_path / "assignment2" / "cs231n"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "layers.py").write_text("from cs231n.fast_layers import *\n")
    assert cli.main(["check", str(pkg / "layers.py")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "imports cs231n.fast_layers, a file of the course that is not there" in err
    assert "put fast_layers.py next to layers.py" in err
    # a loose file in a cs231n/ folder without __init__.py imports its sibling the same way
    loose = tmp_path / "loose" / "cs231n"
    loose.mkdir(parents=True)
    (loose / "layers.py").write_text(
        "from cs231n.layer_utils import batchnorm_forward, batchnorm_backward\n"
    )
    assert cli.main(["check", str(loose / "layers.py")]) == 2
    assert "imports cs231n.layer_utils, a file of the course" in capsys.readouterr().err
    (loose / "layer_utils.py").write_text(
        (LEARNERS / "course_2019_tuple.py").read_text().replace("EXPECTED", "_EXPECTED")
    )
    assert cli.main(["check", str(loose / "layers.py")]) == 0


def test_the_report_is_always_written(tmp_path, capsys):
    """Timeouts, sys.exit() and KeyboardInterrupt in learner code: the table, --json and
    --gradescope are all written, and the exit code says something failed."""
    out, scope = tmp_path / "report.json", tmp_path / "results.json"
    argv = ["check", str(LEARNERS / "runaway.py"), "--timeout", "0.5"]
    assert cli.main([*argv, "--json", str(out), "--gradescope", str(scope)]) == 1
    said = capsys.readouterr()
    text = said.out
    assert "6 functions: 1 pass, 1 timed out, 2 crashed, 1 not implemented" in text
    # the time-out is said on stderr when it happens, once
    assert said.err.count("batchnorm_backward timed out after 0.5 s; stopped at runaway.py:2") == 1
    report = json.loads(out.read_text())
    verdicts = {f["function"]: f["verdict"] for f in report["functions"]}
    assert verdicts["batchnorm_backward"] == "timed out"
    assert report["counts"]["crashed"] == 2 and not report["passed"]
    results = json.loads(scope.read_text())
    assert results["score"] == 1.0
    tests = {t["name"]: t for t in results["tests"]}
    assert tests["batchnorm_forward"]["score"] == 1.0
    assert tests["batchnorm_backward"]["status"] == "failed"
    assert "timed out after 0.5 s" in tests["batchnorm_backward"]["output"]
    assert all(t["max_score"] == 1.0 for t in results["tests"])


def test_a_time_limit_stops_learner_code_outside_the_main_thread():
    """Where no signal can be used (a notebook's worker thread), the time limit still holds."""
    found = {}

    def run():
        found["report"] = grader.grade(LEARNERS / "runaway.py", "batchnorm_backward", timeout=0.3)

    start = time.perf_counter()
    worker = threading.Thread(target=run)
    worker.start()
    worker.join(10)
    assert not worker.is_alive()
    assert time.perf_counter() - start < 5
    f = found["report"]["batchnorm_backward"]
    assert f.verdict == "timed out" and "stopped at runaway.py:2" in "\n".join(f.lines())


def test_ctrl_c_during_grading_reports_what_was_graded(tmp_path):
    path = tmp_path / "layers.py"
    path.write_text(
        "import os, signal\n"
        "from normgrad.cs231n import batchnorm_forward, batchnorm_backward\n"
        "from normgrad.cs231n import layernorm_forward\n"
        "def layernorm_backward(dout, cache):\n"
        "    os.kill(os.getpid(), signal.SIGINT)  # what a Ctrl-C does\n"
    )
    report = grader.grade(path)
    assert report.interrupted and not report.passed
    assert report["batchnorm_backward"].verdict == "pass"
    assert "interrupted" in report.text()


def test_a_fifteen_function_file_is_graded_in_under_two_seconds(tmp_path):
    (tmp_path / "rms.py").write_text((LEARNERS / "rmsnorm.py").read_text())
    path = tmp_path / "layers.py"
    path.write_text(
        "import numpy as np\n"
        "from normgrad.cs231n import *  # noqa: F403\n"
        "from rms import rmsnorm_forward, rmsnorm_backward\n"
        "def affine_forward(x, w, b):\n    return x @ w + b, (x, w, b)\n"
        "def affine_backward(dout, cache):\n    x, w, b = cache\n"
        "    return dout @ w.T, x.T @ dout, dout.sum(0)\n"
        "def relu_forward(x):\n    return np.maximum(x, 0), x\n"
        "def relu_backward(dout, cache):\n    return dout * (cache > 0)\n"
    )
    start = time.perf_counter()
    report = grader.grade(path)
    elapsed = time.perf_counter() - start
    # 15 functions, 11 of them graded (the course's 9, RMS norm's 2)
    assert len(report.functions) == 11 and report.passed, report.text()
    assert elapsed < 2.0, f"{elapsed:.2f} s"


def test_verbose_adds_the_per_case_table(capsys):
    path = str(LEARNERS / "keepdims_habit.py")
    assert cli.main(["check", path]) == 1
    short = capsys.readouterr().out
    assert cli.main(["check", path, "--verbose"]) == 1
    long = capsys.readouterr().out
    assert long.startswith(short.rstrip("\n")) and "rel error" in long and "rel error" not in short
    # the diagnosis is said once per function, not once per case
    assert " ".join(short.split()).count("likely keepdims=True") == 4  # 2 outputs x 2 backwards


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf"])
def test_a_bad_timeout_is_one_line(value, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["check", str(LEARNERS / "template.py"), "--timeout", value])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert (
        len(err.splitlines()) == 1
        and f"expected a positive number of seconds; got '{value}'" in err
    )


def test_a_file_that_cannot_be_graded_still_gets_its_reports(tmp_path, capsys):
    bad = tmp_path / "layers.py"
    bad.write_text("import numpy as np\nx = 1 / 0\n")
    out, scope = tmp_path / "report.json", tmp_path / "results.json"
    assert cli.main(["check", str(bad), "--json", str(out), "--gradescope", str(scope)]) == 2
    err = capsys.readouterr().err
    assert "failed to import: ZeroDivisionError" in err
    assert "ZeroDivisionError" in json.loads(out.read_text())["error"]
    results = json.loads(scope.read_text())
    assert results["score"] == 0.0 and "ZeroDivisionError" in results["output"]


def test_writing_into_gamma_is_a_finding_and_changes_nothing_else(tmp_path):
    """The learner's forward gets its own gamma; the reference and the other functions
    never see what it wrote."""
    path = tmp_path / "layers.py"
    path.write_text(
        "from normgrad import cs231n\n"
        "from normgrad.cs231n import layernorm_forward\n"
        "def batchnorm_forward(x, gamma, beta, bn_param):\n"
        "    out, cache = cs231n.batchnorm_forward(x, gamma.copy(), beta, bn_param)\n"
        "    gamma *= 2\n"
        "    return out, cache\n"
    )
    report = grader.grade(path)
    assert report.passed, report.text()
    assert "finding: writes into its argument gamma" in " ".join(report.text().split())
    assert not report["layernorm_forward"].notes


def test_an_outer_timer_keeps_running(tmp_path):
    """pytest-timeout and the like arm SIGALRM themselves: the grader gives their timer
    back what is left of it."""
    signal = pytest.importorskip("signal")
    if not hasattr(signal, "setitimer"):
        pytest.skip("no setitimer here")
    old = signal.signal(signal.SIGALRM, lambda *a: None)
    try:
        signal.setitimer(signal.ITIMER_REAL, 30.0)
        grader.grade(LEARNERS / "runaway.py", "batchnorm_backward", timeout=0.2)
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 20.0 < left < 30.0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_a_function_called_with_the_wrong_arguments_is_told_the_courses_api(tmp_path):
    path = tmp_path / "layers.py"
    path.write_text(
        "def spatial_groupnorm_forward(x, gamma, beta, gn_param):\n    return x, None\n"
    )
    report = grader.grade(path)
    text = " ".join(report.text().split())
    assert report["spatial_groupnorm_forward"].verdict == "crashed"
    assert "the course calls it as spatial_groupnorm_forward(x, gamma, beta, G, gn_param)" in text


def test_what_the_course_files_print_while_importing_is_not_in_the_report(capsys):
    assert cli.main(["check", str(LEARNERS / "course_package" / "cs231n" / "layers.py")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("normgrad check:") and "try again" not in out
