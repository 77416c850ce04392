"""explain, graph and the grader (normgrad.learn) and their command lines."""

import importlib.util
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from normgrad import cli
from normgrad.core.table import OPS
from normgrad.learn import examples, grader, mistakes
from normgrad.learn.examples import make_example
from normgrad.learn.explain import explain
from normgrad.learn.graph import build_graph, draw_example, example_graph

LEARNERS = Path(__file__).parent / "learners"
TEMPLATE = (LEARNERS / "template.py").read_text()
BESSEL_OPS = [name for name, spec in OPS.items() if spec.bessel_allowed]


# --------------------------------------------------------------------------- explain


def test_explain_is_stable_and_its_numbers_are_the_librarys():
    ex = make_example("batch_norm", seed=3)
    text = explain(ex)
    assert text == explain(make_example("batch_norm", seed=3))
    assert max(len(line) for line in text.splitlines()) <= 80
    steps = [int(m) for m in re.findall(r"^step (\d)  ", text, flags=re.M)]
    assert steps == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    import normgrad as ng

    _, cache = ex.forward()
    dx, dgamma, dbeta, stages = ng.batch_norm_backward_staged(ex.dout, cache, return_steps=True)
    from normgrad.learn.explain import _array

    assert _array(dx) in text and _array(dgamma) in text and _array(dbeta) in text
    assert _array(stages[4].grads["dvar"]) in text  # an intermediate, from step 5
    assert "dxmu = dxmu1 + dxmu2" in text and "dx = dx1 + dx2" in text
    assert text.rstrip().endswith("All four agree.")


def _walked_steps(text: str) -> list[int]:
    return [int(m) for m in re.findall(r"^step (\d)  ", text, flags=re.M)]


@pytest.mark.parametrize("op", list(OPS))
def test_explain_every_op_in_the_table(op):
    spec = OPS[op]
    text = explain(make_example(op, seed=1))
    assert max(len(line) for line in text.splitlines()) <= 80
    assert text.startswith(spec.title)
    # The walk visits the table's nodes from the last down, then x (step 0).
    assert _walked_steps(text) == [n.step for n in reversed(spec.nodes())] + [0]
    for node in spec.nodes():
        assert f"step {node.step}  {node.expr}" in text
    assert text.rstrip().endswith("All four agree.")


@pytest.mark.parametrize("op", BESSEL_OPS)
def test_explain_every_op_with_bessel(op):
    text = explain(make_example(op, bessel=True))
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "n/(n-1)" in text and "var = sum(sq) / (M - 1)" in text
    assert "the Bessel-corrected formula" in " ".join(text.split())
    assert text.rstrip().endswith("All four agree.")


def test_explain_rms_norm_walks_from_step_8_without_the_mean():
    text = explain(make_example("rms_norm"))
    assert _walked_steps(text) == [8, 7, 6, 5, 4, 3, 0]
    assert "from the output (step 8) back to the input (step 0)" in text
    assert "mu = mean(x)" not in text and "xmu = x - mu" not in text
    assert "dx = dxmu1 + dxmu2" in text  # the two gradients meet at x
    assert "x fed two nodes (step 3 and step 7)" in text
    assert "dx = (ivar / M) * (M*dxhat - xhat * sum(dxhat * xhat))" in text
    assert "beta" not in text  # no shift
    for label in ("the staged backward", "autodiff", "central differences"):
        assert re.search(rf"  {label}.*agree$", text, flags=re.M), label
    assert text.rstrip().endswith("All four agree.")


@pytest.mark.parametrize(
    ("op", "shape", "seed"),
    [
        ("rms_norm", (2, 1), 2),  # one value per group, one of them 0: dx cancels, ivar huge
        ("instance_norm", (1, 1, 2), 40),  # dout constant over the group: dx = dgamma = 0
        ("layer_norm", (2, 3, 2), 16),  # a group of equal values: sharp curvature in x
    ],
)
def test_explain_agrees_where_gradients_cancel(op, shape, seed):
    for bessel in [False, True] if OPS[op].bessel_allowed else [False]:
        text = explain(make_example(op, shape, seed=seed, bessel=bessel))
        assert text.rstrip().endswith("All four agree."), text[-600:]


def test_explain_cli(capsys):
    assert cli.main(["explain", "--shape", "5,2", "--seed", "1"]) == 0
    assert "x has shape (5, 2)" in capsys.readouterr().out
    assert cli.main(["explain", "--op", "rms_norm"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("All four agree.")


def test_examples_read_the_table():
    assert tuple(OPS) == examples.OPS
    assert {name: spec.example_shape for name, spec in OPS.items()} == examples.DEFAULT_SHAPES
    assert make_example("rms").beta is None and make_example("gn").options == {"num_groups": 2}
    with pytest.raises(ValueError, match="no Bessel-corrected variant"):
        make_example("rms_norm", bessel=True)
    with pytest.raises(ValueError, match="layer_norm does not take num_groups"):
        make_example("layer_norm", num_groups=2)


# --------------------------------------------------------------------------- graph


def test_graph_dot_has_the_nodes_steps_and_meeting_points(tmp_path):
    path = draw_example(make_example("batch_norm"), tmp_path / "bn.dot")
    dot = path.read_text()
    for name, step in [("mu", 1), ("xmu", 2), ("sq", 3), ("var", 4), ("sqrtvar", 5),
                       ("ivar", 6), ("xhat", 7), ("gammax", 8), ("out", 9)]:  # fmt: skip
        assert f"{name}   (step {step})" in dot
    assert dot.count("2 gradients meet here and are summed") == 2  # x and xmu
    assert "grad  " in dot and "value " in dot and "shape (4, 3)" in dot
    assert dot.startswith("digraph")


@pytest.mark.parametrize("op", list(OPS))
def test_graph_dot_for_every_op_labels_the_tables_nodes(op):
    spec = OPS[op]
    dot = example_graph(make_example(op)).source
    assert dot.startswith("digraph") and spec.title in dot
    for node in spec.nodes():
        assert f"{node.name}   (step {node.step})\\l{node.expr}\\l" in dot
    # Gradients meet at x and at xmu; without centring only at x.
    meetings = 2 if spec.centered else 1
    assert dot.count("2 gradients meet here and are summed") == meetings


def test_graph_edges_point_forward():
    ex = make_example("layer_norm")
    out, *_ = ex.autodiff()
    dot = build_graph(out).source
    order = out.topological_order()
    assert dot.count("->") == sum(len(n.parents) for n in order)


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot program not installed")
@pytest.mark.parametrize("fmt", ["svg", "png"])
def test_graph_renders_with_dot(tmp_path, fmt):
    assert cli.main(["graph", "--op", "group_norm", "--out", str(tmp_path / f"g.{fmt}")]) == 0
    data = (tmp_path / f"g.{fmt}").read_bytes()
    assert data.startswith(b"\x89PNG") if fmt == "png" else b"<svg" in data


def test_graph_without_dot_writes_the_dot_file_and_says_how(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert cli.main(["graph", "--out", str(tmp_path / "bn.svg")]) == 1
    err = capsys.readouterr().err
    assert (tmp_path / "bn.dot").read_text().startswith("digraph")
    assert "dot -Tsvg" in err and "apt-get install graphviz" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["graph", "--op", "softmax", "--out", "x.svg"], "invalid choice: 'softmax'"),
        (["graph", "--shape", "0,3", "--out", "x.svg"], "invalid shape '0,3'"),
        (["graph", "--shape", "4,x", "--out", "x.svg"], "invalid shape '4,x'"),
        (["graph", "--out", "/no/such/dir/x.svg"], "the output directory '/no/such/dir'"),
        (["graph", "--out", "x.gif"], "cannot tell the format"),
        (["explain", "--shape", "1,3"], "Expected more than 1 value per channel"),
        (["explain", "--op", "group_norm", "--shape", "2,3,2", "--groups", "2"], "must divide"),
        (["check", "/no/such/file.py"], "no such file"),
        (["check", "learner.py:"], "malformed target"),
        (["check", "learner.py:softmax_loss"], "not a function the grader knows"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        code = cli.main(argv)
        raise SystemExit(code)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------- grader


def _learner(tmp_path, body: str, name="learner.py") -> Path:
    src = re.sub(
        r"# BACKWARD\n.*?# END", "# BACKWARD\n    " + body + "\n    # END", TEMPLATE, flags=re.S
    )
    path = tmp_path / name
    path.write_text(src)
    return path


def test_the_reference_passes_everything(tmp_path):
    path = tmp_path / "reference.py"
    path.write_text("from normgrad.cs231n import *  # noqa: F403\n")
    rows = grader.grade(path).rows
    assert rows and all(r.passed for r in rows)
    # The course has no RMS norm; the learner fixture tests/learners/rmsnorm.py stands in.
    rms = {"rmsnorm_forward", "rmsnorm_backward"}
    assert rms <= set(grader.GRADABLE)
    assert {r.function for r in rows} == set(grader.GRADABLE) - rms


def test_the_staged_backward_and_the_closed_form_pass():
    rows = grader.grade(LEARNERS / "staged_and_closed_form.py").rows
    assert {r.function for r in rows} == {
        "batchnorm_forward",
        "batchnorm_backward",
        "batchnorm_backward_alt",
    }
    assert all(r.passed for r in rows), grader.format_rows(rows)


def test_the_template_learner_passes(tmp_path):
    assert all(r.passed for r in grader.grade(LEARNERS / "template.py").rows)


def _closed(sign_mean="-", sign_var="-", factor=""):
    return (
        f"dx = ivar / N * (N * dxhat {sign_mean} dxhat.sum(axis=0) "
        f"{sign_var} {factor}xhat * (dxhat * xhat).sum(axis=0))"
    )


MISTAKE_BODIES = {
    # the Bessel-corrected formula on the biased forward
    "bessel": _closed(factor="N / (N - 1) * "),
    "no_mean_path": "dx = ivar * (dxhat - xhat * (dxhat * xhat).sum(axis=0) / N)",
    "no_variance_path": "dx = ivar * (dxhat - dxhat.sum(axis=0) / N)",
    "params_not_summed": _closed() + "; dgamma = dout * xhat; dbeta = dout",
    "eps_outside_sqrt": "r = 1 / (np.sqrt(var) + eps); xh = xmu * r; dxh = dout * gamma; "
    "dgamma = (dout * xh).sum(axis=0); "
    "dx = r / N * (N * dxh - dxh.sum(axis=0) - xh * (dxh * xh).sum(axis=0))",
    "sign_flipped": _closed(sign_var="+"),
    "x_grads_not_added": "dx1 = ivar * (dxhat - xhat * (dxhat * xhat).sum(axis=0) / N); "
    "dx = np.broadcast_to(-dx1.sum(axis=0) / N, dx1.shape)",
}


@pytest.mark.parametrize("mistake", list(MISTAKE_BODIES))
def test_each_mistake_fails_and_is_named(tmp_path, mistake):
    rows = grader.grade(_learner(tmp_path, MISTAKE_BODIES[mistake]), "batchnorm_backward").rows
    failed = [r for r in rows if not r.passed]
    assert failed, f"{mistake} passed the grader"
    assert {r.mistake for r in failed} == {mistake}, grader.format_rows(rows)
    assert grader.format_rows(rows).count("looks like") >= 1


def test_mistakes_are_recognised_in_layer_norm_too(tmp_path):
    path = tmp_path / "ln.py"
    path.write_text(
        "import numpy as np\n"
        "from normgrad.cs231n import layernorm_forward\n"
        "def layernorm_backward(dout, cache):\n"
        "    xhat, r, g = cache.xhat, cache.inv_std, cache.gamma\n"
        "    D = dout.shape[1]\n"
        "    dxhat = dout * g\n"
        "    dx = r * (dxhat - dxhat.mean(axis=1, keepdims=True))  # variance path forgotten\n"
        "    return dx, (dout * xhat).sum(axis=0), dout.sum(axis=0)\n"
    )
    failed = [r for r in grader.grade(path).rows if not r.passed]
    assert failed and {r.mistake for r in failed if r.output == "dx"} == {"no_variance_path"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "raise ValueError('not done yet')",
            "batchnorm_backward raised ValueError: not done yet (at learner.py:",
        ),
        ("dx = dxhat * np.nan", "dx contains NaN"),
        ("dx = dxhat.T", "dx has shape (5, 4), expected (4, 5)"),
        ("return dxhat", "batchnorm_backward returned a ndarray; expected (dx, dgamma, dbeta)"),
    ],
)
def test_broken_learner_functions_get_one_clear_line(tmp_path, body, message, capsys):
    path = _learner(tmp_path, body)
    code = cli.main(["check", f"{path}:batchnorm_backward"])
    out = capsys.readouterr().out
    assert code == 1
    assert message in out, out
    assert "Traceback" not in out


def test_import_failures_exit_2_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.py"
    bad.write_text("import numpy as np\nx = 1 / 0\n")
    assert cli.main(["check", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "failed to import: ZeroDivisionError: division by zero (at bad.py:2" in err
    assert len(err.splitlines()) == 1
    bad.write_text("def batchnorm_forward(:\n")
    assert cli.main(["check", str(bad)]) == 2
    assert "does not parse" in capsys.readouterr().err
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    assert cli.main(["check", str(empty)]) == 2
    assert "defines none of the functions" in capsys.readouterr().err


def test_backward_without_its_forward_is_a_usage_error(tmp_path, capsys):
    path = tmp_path / "only_backward.py"
    path.write_text("def batchnorm_backward(dout, cache):\n    return dout, None, None\n")
    assert cli.main(["check", f"{path}:batchnorm_backward"]) == 2
    assert "graded through the learner's batchnorm_forward" in capsys.readouterr().err


def test_check_json_for_autograders(tmp_path, capsys):
    out = tmp_path / "results.json"
    path = _learner(tmp_path, MISTAKE_BODIES["bessel"])
    assert cli.main(["check", str(path), "--json", str(out)]) == 1
    rows = json.loads(out.read_text())["rows"]
    assert {"function", "case", "output", "error", "passed", "diagnosis", "mistake"} <= set(rows[0])
    assert any(r["mistake"] == "bessel" for r in rows)
    assert all(r["passed"] for r in rows if r["function"] == "batchnorm_forward")


def test_forward_mistakes_are_named(tmp_path):
    src = TEMPLATE.replace("var = (xmu**2).mean(axis=0)", "var = (xmu**2).sum(axis=0) / (N - 1)")
    path = tmp_path / "fwd.py"
    path.write_text(src)
    rows = grader.grade(path, "batchnorm_forward").rows
    assert {r.mistake for r in rows if not r.passed and r.output == "out"} == {"bessel_forward"}
    src = TEMPLATE.replace(
        "running_mean = momentum * running_mean + (1 - momentum) * mu",
        "running_mean = (1 - momentum) * running_mean + momentum * mu",
    ).replace(
        "running_var = momentum * running_var + (1 - momentum) * var",
        "running_var = (1 - momentum) * running_var + momentum * var",
    )
    path.write_text(src)
    rows = grader.grade(path, "batchnorm_forward").rows
    assert {r.mistake for r in rows if not r.passed} == {"momentum_reversed"}


def test_grading_does_not_depend_on_the_learner_modifying_inputs(tmp_path):
    """A learner that scribbles over x or dout gets its own copies, not the reference's."""
    body = _closed() + "; dout *= 0"
    rows = grader.grade(_learner(tmp_path, body), "batchnorm_backward").rows
    assert all(r.passed for r in rows if r.output == "dx")
    assert np.isfinite([r.error for r in rows if r.error is not None]).all()


# --------------------------------------------------------------------------- RMS norm


def test_the_rms_norm_learner_passes(capsys):
    rows = grader.grade(LEARNERS / "rmsnorm.py").rows
    assert {r.function for r in rows} == {"rmsnorm_forward", "rmsnorm_backward"}
    assert all(r.passed for r in rows), grader.format_rows(rows)
    cases = {r.case for r in rows}
    assert {"N=1", "D=1", "large values", "small values", "gamma zeros", "eps=0.1"} <= cases
    assert {r.output for r in rows if r.function == "rmsnorm_backward"} == {"dx", "dgamma"}
    assert cli.main(["check", str(LEARNERS / "rmsnorm.py")]) == 0


def _rms_learner(tmp_path: Path, forward: str, backward: str | None) -> Path:
    """A module defining the fixture's ``forward`` and ``backward`` under the grader's names."""
    (tmp_path / "rmsnorm_fixture.py").write_text((LEARNERS / "rmsnorm.py").read_text())
    lines = [f"from rmsnorm_fixture import {forward} as rmsnorm_forward"]
    if backward:
        lines.append(f"from rmsnorm_fixture import {backward} as rmsnorm_backward")
    path = tmp_path / "learner.py"
    path.write_text("\n".join(lines) + "\n")
    return path


def _rms_mistakes():
    spec = importlib.util.spec_from_file_location("rmsnorm_learner", LEARNERS / "rmsnorm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.GRADED_MISTAKES


@pytest.mark.parametrize(
    ("mistake", "forward", "backward"),
    _rms_mistakes(),
    ids=[f"{f}-{b}" for _, f, b in _rms_mistakes()],
)
def test_each_rms_norm_mistake_fails_and_is_named(tmp_path, mistake, forward, backward):
    path = _rms_learner(tmp_path, forward, backward)
    only = "rmsnorm_backward" if forward == "rmsnorm_forward" else None
    report = grader.grade(path, only)
    rows = report.rows
    # The wrong function fails and is named: the forward where it is the wrong one (its
    # backward then depends on it), else the backward.
    wrong = "rmsnorm_backward" if only else "rmsnorm_forward"
    failed = [r for r in rows if not r.passed]
    assert any(r.function == wrong for r in failed), f"{mistake} passed the grader"
    # (With N = 1 an unsummed dgamma is right but (1, D): a wrong shape, not a mistake.)
    own = {r.mistake for r in failed if r.status not in {"depends", "wrong shape"}}
    assert own == {mistake}, grader.format_rows(rows)
    assert all(r.function == "rmsnorm_backward" for r in failed if r.status == "depends")
    text = " ".join(report.text().split())
    named = mistakes.MISTAKES[mistake]
    assert f"looks like {named.title}" in text and named.description[:30] in text, text


# --------------------------------------------------------------------------- wording


def test_nothing_learn_prints_names_the_sources_by_number(tmp_path):
    """The sources are named by what they are (docs/sources.md), never "seed 000"."""
    texts = []
    for op in OPS:
        texts.append(explain(make_example(op)))
        texts.append(example_graph(make_example(op)).source)
    for op in BESSEL_OPS:
        texts.append(explain(make_example(op, bessel=True)))
    for body in MISTAKE_BODIES.values():
        texts.append(grader.format_rows(grader.grade(_learner(tmp_path, body)).rows))
    for _mistake, forward, backward in _rms_mistakes():
        path = _rms_learner(tmp_path, forward, backward)
        texts.append(grader.format_rows(grader.grade(path).rows))
    texts.append(grader.format_rows(grader.grade(LEARNERS / "staged_and_closed_form.py").rows))
    for path in sorted(LEARNERS.rglob("*.py")):  # the whole corpus, as a teacher reads it
        if "EXPECTED" in path.read_text():
            report = grader.grade(path, timeout=0.3)
            texts += [report.text(verbose=True), report.json()]
    texts += [m.description for m in mistakes.MISTAKES.values()]
    for text in texts:
        assert not re.search(r"seed ?0\d\d", text, flags=re.I), text
