"""The gradient checker itself: it must catch wrong gradients and say where."""

import numpy as np
import pytest

from normgrad import gradcheck as gc


def test_numerical_gradient_of_a_known_function():
    x = np.array([[1.0, -2.0], [0.5, 3.0]])
    dout = np.array([[1.0, 2.0], [3.0, 4.0]])
    g = gc.numerical_gradient(lambda x: x**3, {"x": x}, "x", dout)
    np.testing.assert_allclose(g, 3 * x**2 * dout, rtol=1e-9)


def test_check_passes_correct_and_fails_wrong_gradients_with_a_report():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
    dout = rng.standard_normal((3, 2))
    f = lambda a, b: a @ b  # noqa: E731
    good = {"a": dout @ b.T, "b": a.T @ dout}
    results = gc.check_gradients(f, {"a": a, "b": b}, dout, good)
    assert all(r.passed for r in results) and [r.name for r in results] == ["a", "b"]

    wrong = dict(good, b=good["b"] * 1.001)
    with pytest.raises(gc.GradcheckError) as info:
        gc.check_gradients(f, {"a": a, "b": b}, dout, wrong)
    report = str(info.value)
    assert "gradient wrt 'b' (full, 8 values): FAILED" in report
    assert "gradient wrt 'a' (full, 12 values): ok" in report
    assert "worst at index" in report and "numeric:" in report and "analytic:" in report
    assert "h = 1.0e-05" in report and "tolerance 1.0e-07" in report


def test_directional_mode_checks_large_arrays_and_catches_errors():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((100, 60))  # 6000 values: directional by default
    dout = rng.standard_normal(x.shape)
    f = lambda x: np.tanh(x)  # noqa: E731
    grad = (1 - np.tanh(x) ** 2) * dout
    (result,) = gc.check_gradients(f, {"x": x}, dout, {"x": grad})
    assert result.mode == "directional" and result.passed
    bad = grad.copy()
    bad[3, 7] += 0.5  # one wrong element is enough to move random projections
    (result,) = gc.check_gradients(f, {"x": x}, dout, {"x": bad}, raise_on_failure=False)
    assert not result.passed


def test_checker_never_modifies_inputs():
    x = np.linspace(-1, 1, 6).reshape(2, 3)
    before = x.copy()
    gc.check_gradients(lambda x: x * 2, {"x": x}, np.ones_like(x), {"x": 2 * np.ones_like(x)})
    gc.check_gradients(
        lambda x: x * 2, {"x": x}, np.ones_like(x), {"x": 2 * np.ones_like(x)}, mode="directional"
    )
    np.testing.assert_array_equal(x, before)


def test_rel_error_is_the_course_measure():
    x, y = np.array([1.0, 0.0]), np.array([1.1, 0.0])
    assert gc.rel_error(x, y) == pytest.approx(0.1 / 2.1)
    assert gc.max_rel_error(x, y) == pytest.approx(0.1 / 1.1)
    assert gc.max_rel_error(np.zeros(3), np.zeros(3)) == 0.0
    assert gc.max_rel_error(np.array([np.nan]), np.array([1.0])) == float("inf")


def test_atol_allows_cancellation_scale_errors_only_when_asked():
    assert not gc.within([1e-12], [0.0], rtol=1e-8)
    assert gc.within([1e-12], [0.0], rtol=1e-8, atol=1e-11)
    assert not gc.within([np.nan], [0.0], rtol=1.0, atol=1.0)


def test_assert_close_reports_shapes_none_and_values():
    with pytest.raises(AssertionError, match=r"shape \(2,\) differs from expected \(3,\)"):
        gc.assert_close(np.ones(2), np.ones(3), rtol=1e-9)
    with pytest.raises(AssertionError, match="one result is None"):
        gc.assert_close(None, np.ones(3), rtol=1e-9)
    with pytest.raises(AssertionError, match=r"dx: max_rel_error 5.000e-01 exceeds tolerance"):
        gc.assert_close(np.array([1.0, 2.0]), np.array([1.0, 1.0]), rtol=1e-9, name="dx")


def test_bad_checker_arguments():
    x = np.ones(3)
    with pytest.raises(ValueError, match="mode must be"):
        gc.check_gradients(lambda x: x, {"x": x}, x, {"x": x}, mode="fast")
    with pytest.raises(ValueError, match="'y' is not one of the inputs"):
        gc.check_gradients(lambda x: x, {"x": x}, x, {"y": x})
    with pytest.raises(ValueError, match=r"has shape \(2,\), input has \(3,\)"):
        gc.check_gradients(lambda x: x, {"x": x}, x, {"x": np.ones(2)})
