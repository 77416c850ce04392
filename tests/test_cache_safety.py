"""A cache refers to the caller's x: writing x between the forward and the backward raises
InputModifiedError on every backend, for every op (closed-form and staged backward), and an
unchanged x gives the same gradients as ever. Issue 11, item 2."""

import numpy as np
import pytest

from normgrad import backends
from normgrad.core.cache import EXACT_BYTES, InputModifiedError, fingerprint
from normgrad.core.table import get_op

BACKENDS = ["numpy"] + (["numba"] if backends.numba_available() else [])

#: (op, shape, options): small shapes (serial kernels) and large ones (parallel kernels, the
#: per-channel sweep and the two-pass path of batch norm).
CASES = [
    ("batch_norm", (40, 6), {}),
    ("batch_norm", (4096, 64), {}),  # (N, C): two streaming passes
    ("batch_norm", (70000, 2), {}),  # two streaming passes
    ("batch_norm", (8, 16, 24, 24), {}),  # one channel per thread
    ("batch_norm", (8, 24, 24, 16), {"channel_axis": -1}),
    ("layer_norm", (30, 7), {}),
    ("layer_norm", (256, 300), {}),
    ("group_norm", (8, 12, 24, 24), {"num_groups": 3}),
    ("instance_norm", (8, 6, 40, 40), {}),
    ("rms_norm", (256, 300), {}),
    ("rms_norm", (5, 3, 4), {"normalized_ndim": 2}),
]


def _inputs(op, shape, options, dtype=np.float64):
    rng = np.random.default_rng(0)
    spec = get_op(op)
    x = (rng.standard_normal(shape) * 2 + 3).astype(dtype)
    p = spec.param_shape(shape, **options)
    gamma = rng.standard_normal(p).astype(dtype)
    beta = rng.standard_normal(p).astype(dtype) if spec.has_beta else None
    return spec, x, gamma, beta, rng.standard_normal(shape).astype(dtype)


def _changes(x):
    """Ways a caller writes x in place: one element by one ulp, everything, a row swap."""

    def nudge(a):
        a.reshape(-1)[a.size // 2] = np.nextafter(a.reshape(-1)[a.size // 2], np.inf)

    def scale(a):
        a *= 2

    def swap_rows(a):
        a[[0, 1]] = a[[1, 0]]

    return {"one ulp": nudge, "x *= 2": scale, "two rows swapped": swap_rows}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("op", "shape", "options"), CASES)
def test_writing_x_after_the_forward_raises(backend, op, shape, options):
    spec, x, gamma, beta, dy = _inputs(op, shape, options)
    for what, change in _changes(x).items():
        xc = x.copy()
        _, cache = spec.forward(xc, gamma, beta, backend=backend, **options)
        assert cache.backend.name == backend
        change(xc)
        with pytest.raises(InputModifiedError, match=r"x \(shape .*\) was modified after"):
            spec.backward(dy, cache)
        with pytest.raises(InputModifiedError):
            spec.backward_staged(dy, cache)
        change_back = x.copy()  # restoring the values makes the cache valid again
        xc[...] = change_back
        spec.backward(dy, cache), what


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("op", "shape", "options"), CASES)
def test_unchanged_x_gives_the_gradients_of_a_private_copy(backend, op, shape, options):
    spec, x, gamma, beta, dy = _inputs(op, shape, options)
    _, own = spec.forward(x.copy(), gamma, beta, backend=backend, **options)
    _, cache = spec.forward(x, gamma, beta, backend=backend, **options)
    for a, b in zip(spec.backward(dy, cache), spec.backward(dy, own), strict=True):
        assert (a is None and b is None) or np.array_equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_copies_made_by_the_forward_are_checked_too(backend, dtype):
    """float16 (computed in a float32 copy) and non-contiguous x (made contiguous) behave
    as a contiguous float64 x does: the caller's array is what is checked."""
    spec, x, gamma, beta, dy = _inputs("batch_norm", (4096, 64), {}, dtype)
    for xs in (x.copy(), np.asfortranarray(x)):
        _, cache = spec.forward(xs, gamma, beta, backend=backend)
        xs[3, 5] += 1
        with pytest.raises(InputModifiedError):
            spec.backward(dy, cache)


@pytest.mark.parametrize("backend", BACKENDS)
def test_eval_mode_checks_x(backend):
    spec, x, gamma, beta, dy = _inputs("batch_norm", (4096, 64), {})
    rm, rv = np.zeros(64), np.ones(64)
    _, cache = spec.forward(x, gamma, beta, backend=backend, training=False,
                            running_mean=rm, running_var=rv)  # fmt: skip
    x[0, 0] = 7.0
    with pytest.raises(InputModifiedError):
        spec.backward(dy, cache)


def test_the_fingerprint_sees_every_element_and_its_place():
    rng = np.random.default_rng(1)
    cases = [(np.float64, (33, 7)), (np.float32, (1001, 3)), (np.float16, (5,)),
             (np.float64, (3000, 3)), (np.float32, (5001, 7)), (np.float16, (40001,))]  # fmt: skip
    for dtype, shape in cases:
        x = rng.standard_normal(shape).astype(dtype)
        base = fingerprint(x)
        assert fingerprint(x.copy()) == base
        assert fingerprint(np.asfortranarray(x)) == base  # the values in C order
        assert isinstance(base, int) == (x.nbytes > EXACT_BYTES)
        for i in range(0, x.size, max(1, x.size // 500)):
            y = x.copy().reshape(-1)
            y[i] = np.nextafter(y[i], np.inf)
            assert fingerprint(y.reshape(shape)) != base
        y = x.copy().reshape(-1)
        y[[0, -1]] = y[[-1, 0]]
        assert fingerprint(y) != base


MASK = 2**64 - 1


def _kernel_term(e, b):
    v = ((int(b) ^ (e * 0x9E3779B97F4A7C15 & MASK)) * 0xBF58476D1CE4E5B9) & MASK
    return v ^ (v >> 31)


@pytest.mark.skipif("numba" not in BACKENDS, reason="needs numba")
def test_the_kernels_fingerprint_is_numpys_computation_of_the_same_sum():
    from normgrad.backends import numba_kernels as k

    rng = np.random.default_rng(2)
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal((300, 70, 3)).astype(dtype)
        bits = x.reshape(-1).view(np.uint32 if dtype == np.float32 else np.uint64)
        expected = sum(_kernel_term(e, b) for e, b in enumerate(bits)) & MASK
        assert k.fingerprint(x) == expected
        y = np.empty_like(x)
        assert k.bn_affine_into(x, np.zeros(70), np.ones(70), np.zeros(70), y) == expected
