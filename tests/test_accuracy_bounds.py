"""The accuracy bounds of compensated float32 statistics: max |y - y_float64| in std units
<= 1e-6 at mean/std = 1e4 and <= 3e-7 at mean 0, for every op and layout; dx to the same
standard (normwise relative); float16 outputs within one float16 ulp of the correctly
rounded truth. The truth is float64 arithmetic on the same (rounded) input."""

import numpy as np
import pytest

import normgrad as ng
from normgrad.backends import numba_available

LAYOUTS = [
    ("batch_norm", (4096, 8), {}),
    ("batch_norm", (16, 8, 16, 16), {}),
    ("batch_norm", (16, 16, 16, 8), {"channel_axis": -1}),
    ("layer_norm", (64, 1024), {}),
    ("group_norm", (16, 8, 16, 16), {"num_groups": 4}),
    ("instance_norm", (8, 8, 32, 32), {}),
    ("rms_norm", (64, 1024), {}),
]


def _backends():
    yield pytest.param("numpy", id="numpy")
    marks = []
    if not numba_available():
        marks.append(pytest.mark.skip(reason="Numba not installed"))
    yield pytest.param("numba", id="numba", marks=marks)


def _ids(case):
    name, shape, option = case
    return f"{name}{list(shape)}" + ("-last" if option.get("channel_axis") == -1 else "")


def _run(name, shape, option, dtype, mean, backend):
    rng = np.random.default_rng(7)
    spec = ng.get_op(name)
    x = (mean + rng.standard_normal(shape)).astype(dtype)
    dy = rng.standard_normal(shape)
    option = dict(option, eps=1e-6)  # one eps for both (RMS norm's default is per dtype)
    y, cache = spec.forward(x, None, None, backend=backend, **option)
    dx, *_ = spec.backward(dy.astype(dtype), cache)
    y64, cache64 = spec.forward(x.astype(np.float64), None, None, **option)
    dx64, *_ = spec.backward(dy.astype(dtype).astype(np.float64), cache64)
    return y, y64, dx, dx64


@pytest.mark.parametrize("backend", list(_backends()))
@pytest.mark.parametrize("case", LAYOUTS, ids=_ids)
def test_float32_at_mean_1e4_within_1e6_std_units(case, backend):
    _check_float32(*case, mean=1e4, bound=1e-6, backend=backend)


@pytest.mark.parametrize("backend", list(_backends()))
@pytest.mark.parametrize("case", LAYOUTS, ids=_ids)
def test_float32_at_mean_0_within_3e7_std_units(case, backend):
    _check_float32(*case, mean=0.0, bound=3e-7, backend=backend)


def _check_float32(name, shape, option, *, mean, bound, backend):
    if name == "rms_norm" and mean:
        pytest.skip("RMS norm does not centre: a mean of 1e4 is its signal, not an offset")
    y, y64, dx, dx64 = _run(name, shape, option, np.float32, mean, backend)
    assert y.dtype == np.float32
    y_err = float(np.max(np.abs(y.astype(np.float64) - y64)))  # y has unit std: std units
    dx_err = float(np.max(np.abs(dx - dx64)) / np.max(np.abs(dx64)))
    assert y_err <= bound, f"y error {y_err:.2e} std units, bound {bound:.0e}"
    assert dx_err <= 1e-6, f"dx error {dx_err:.2e} (normwise relative)"


@pytest.mark.parametrize("backend", list(_backends()))
@pytest.mark.parametrize("case", LAYOUTS, ids=_ids)
def test_float16_output_within_one_ulp_of_the_rounded_truth(case, backend):
    name, shape, option = case
    y, y64, _, _ = _run(
        name, shape, option, np.float16, 100.0 if name != "rms_norm" else 0, backend
    )
    assert y.dtype == np.float16
    rounded = y64.astype(np.float16)
    ulps = np.abs(y.astype(np.float64) - rounded) / np.spacing(np.abs(rounded).astype(np.float16))
    assert float(np.max(ulps)) <= 1.0
