"""The fused Numba backend equals the NumPy path (1e-12 float64, 1e-5 float32)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import normgrad as ng
from _cases import Call, error_scales, norm_calls
from normgrad import backends as kernels
from normgrad.gradcheck import assert_close

pytest.importorskip("numba")

TOL = {np.float64: 1e-12, np.float32: 1e-5, np.float16: 2.0**-9}


def _compare(call: Call, dtype, dy):
    y1, c1 = call.forward(backend="numpy")
    y2, c2 = call.forward(backend="numba")
    assert c2.backend.name == "numba" and c1.backend.name == "numpy"
    g1, g2 = call.backward(dy, c1), call.backward(dy, c2)
    tol = TOL[dtype]
    scales = error_scales(call.x.astype(np.float64), call.gamma, dy.astype(np.float64), c1)
    assert_close(y2, y1, rtol=tol, atol=tol * scales["y"], name="y")
    for name, a, b in zip(("dx", "dgamma", "dbeta"), g2, g1, strict=True):
        assert_close(a, b, rtol=tol, atol=tol * scales[name], name=name)
    # the staged backward works on a fused cache too (it recovers xhat from x)
    staged = call.staged(dy, c2)
    assert_close(staged[0], g1[0], rtol=tol * 100, atol=tol * 100 * scales["dx"], name="staged")


@given(norm_calls(), st.sampled_from([np.float64, np.float32, np.float16]))
def test_fused_equals_numpy_for_every_op(call: Call, dtype):
    call = call.astype(dtype)  # non-contiguous layouts stay non-contiguous only for f64
    dy = np.random.default_rng(0).standard_normal(call.x.shape).astype(dtype)
    _compare(call, dtype, dy)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    ("shape", "axis"), [((4096, 64), 1), ((8, 16, 24, 24), 1), ((8, 24, 24, 16), -1)]
)
def test_fused_on_arrays_big_enough_for_the_parallel_kernels(dtype, shape, axis):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(shape) * 3 + 100).astype(dtype)
    c = shape[axis]
    call = Call("batch_norm", x, rng.standard_normal(c).astype(dtype),
                rng.standard_normal(c).astype(dtype), {"channel_axis": axis})  # fmt: skip
    assert x.size >= kernels.AUTO_MIN_SIZE
    _compare(call, dtype, rng.standard_normal(shape).astype(dtype))


@pytest.mark.parametrize(
    ("op", "shape", "options"),
    [
        ("layer_norm", (256, 300), {}),
        ("layer_norm", (16, 6, 400), {"normalized_ndim": 2}),
        ("group_norm", (8, 12, 24, 24), {"num_groups": 3}),
        ("instance_norm", (8, 6, 40, 40), {}),
        ("rms_norm", (256, 300), {}),
        ("rms_norm", (16, 6, 400), {"normalized_ndim": 2}),
    ],
)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fused_per_sample_norms_on_big_arrays(op, shape, options, dtype):
    rng = np.random.default_rng(3)
    spec = ng.get_op(op)
    x = (rng.standard_normal(shape) * 2 + 50).astype(dtype)
    p = spec.param_shape(shape, **options)
    beta = rng.standard_normal(p).astype(dtype) if spec.has_beta else None
    call = Call(op, x, rng.standard_normal(p).astype(dtype), beta, options)
    assert x.size >= kernels.AUTO_MIN_SIZE
    _compare(call, dtype, rng.standard_normal(shape).astype(dtype))


def test_fused_running_statistics_and_eval_mode():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((512, 80)) * 2 + 5
    rm1, rv1, rm2, rv2 = np.zeros(80), np.ones(80), np.zeros(80), np.ones(80)
    ng.batch_norm_forward(x, None, None, running_mean=rm1, running_var=rv1, backend="numpy")
    ng.batch_norm_forward(x, None, None, running_mean=rm2, running_var=rv2, backend="numba")
    assert_close(rm2, rm1, rtol=1e-13)
    assert_close(rv2, rv1, rtol=1e-13)
    y1, _ = ng.batch_norm_forward(x, None, None, training=False, running_mean=rm1,
                                  running_var=rv1, backend="numpy")  # fmt: skip
    y2, _ = ng.batch_norm_forward(x, None, None, training=False, running_mean=rm1,
                                  running_var=rv1, backend="numba")  # fmt: skip
    assert_close(y2, y1, rtol=1e-13)


def test_fused_keeps_unit_std_at_a_large_mean_in_float32():
    x = (1e3 + np.random.default_rng(0).standard_normal((2**20, 2))).astype(np.float32)
    y, _ = ng.batch_norm_forward(x, None, None, backend="numba")
    assert np.all(np.abs(y.astype(np.float64).std(axis=0) - 1) < 1e-3)


def test_backend_selection(monkeypatch):
    assert kernels.resolve("numpy") == "numpy"
    assert kernels.resolve("numba") == "numba"
    assert kernels.resolve("auto", size=10) == "numpy"
    assert kernels.resolve("auto", size=kernels.AUTO_MIN_SIZE) == "numba"
    monkeypatch.setenv(kernels.ENV_VAR, "numpy")
    assert kernels.resolve(None, size=10**9) == "numpy"
    monkeypatch.setenv(kernels.ENV_VAR, "cuda")
    with pytest.raises(ValueError, match="NORMGRAD_BACKEND must be one of"):
        kernels.resolve(None)
    monkeypatch.setattr(kernels, "numba_available", lambda: False)
    monkeypatch.delenv(kernels.ENV_VAR)
    assert kernels.resolve("auto", size=10**9) == "numpy"  # silently
    with pytest.raises(ImportError, match=r"pip install 'normgrad\[fast\]'"):
        kernels.resolve("numba")


@pytest.mark.parametrize(
    ("op", "shape", "options"),
    [
        ("batch_norm", (70000, 3), {}),  # widened to (4375, 48)
        ("batch_norm", (16, 20, 20, 64), {"channel_axis": -1}),  # widened to (1600, 256)
        ("batch_norm", (8, 16, 24, 24), {}),
        ("layer_norm", (512, 300), {}),
        ("group_norm", (8, 12, 24, 24), {"num_groups": 3}),
    ],
)
def test_fused_results_are_the_same_bits_at_any_thread_count(op, shape, options):
    import numba

    rng = np.random.default_rng(4)
    spec = ng.get_op(op)
    x = (rng.standard_normal(shape) * 2 + 50).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    p = spec.param_shape(shape, **options)
    gamma, beta = rng.standard_normal(p).astype(np.float32), np.zeros(p, np.float32)
    results = []
    before = numba.get_num_threads()
    try:
        for threads in sorted({1, before}):
            numba.set_num_threads(threads)
            y, cache = spec.forward(x, gamma, beta, backend="numba", **options)
            results.append((y, *spec.backward(dy, cache)))
    finally:
        numba.set_num_threads(before)
    for a, b in zip(results[0], results[-1], strict=True):
        assert np.array_equal(a, b)


def test_each_kernel_s_serial_and_parallel_compilations_have_their_own_cache_entry():
    """Numba's on-disk cache is keyed by the function's qualified name and signature, not
    by ``parallel``: compiled from one function, the serial and the parallel variant share
    an entry, and a warm cache then runs the "parallel" kernels on one thread (measured,
    2x at (1024, 1024) on two cores). Each variant must be a function of its own name."""
    from normgrad.backends import numba_kernels

    for name, (parallel, serial) in numba_kernels._KERNELS.items():
        assert parallel.targetoptions.get("parallel") is True, name
        assert not serial.targetoptions.get("parallel"), name
        assert parallel.py_func.__qualname__ != serial.py_func.__qualname__, name
        assert parallel.py_func.__code__ is serial.py_func.__code__, name  # the same loops
