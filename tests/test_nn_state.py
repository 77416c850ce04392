"""load_state_dict checks every entry before it copies any: a refused state leaves the model
exactly as it was, and nothing is truncated on the way in."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from normgrad.nn import FullyConnectedNet

RNG = np.random.default_rng(0)


def _net(dtype=np.float64, seed=0):
    net = FullyConnectedNet(4, [3], 2, normalization="batch_norm", seed=seed, dtype=dtype)
    net(RNG.standard_normal((5, 4)).astype(dtype))  # move the running statistics
    return net


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        assert a[k].dtype == b[k].dtype, k


def _corrupt(state, key, how):
    """``state`` with entry ``key`` spoiled in one way; None if that way does not apply."""
    value = state[key]
    is_int = np.issubdtype(value.dtype, np.integer)
    spoiled = {
        "shape": lambda: np.zeros((*value.shape, 2), value.dtype),
        "strings": lambda: np.full(value.shape, "1"),
        "booleans": lambda: np.ones(value.shape, bool),
        "complex": lambda: value.astype(np.complex128),
        "fraction": lambda: value + 0.5 if is_int else None,
        "nan": lambda: np.full(value.shape, np.nan) if is_int else None,
        "out of range": lambda: np.full(value.shape, 2.0**70) if is_int else None,
        "overflow": lambda: np.full(value.shape, 1e300) if value.dtype == np.float32 else None,
        "missing": lambda: ...,
        "unexpected": lambda: ...,
    }[how]()
    if spoiled is None:
        return None
    if how == "missing":
        return {k: v for k, v in state.items() if k != key}
    if how == "unexpected":
        return state | {f"{key}.extra": value}
    return state | {key: spoiled}


CORRUPTIONS = ("shape", "strings", "booleans", "complex", "fraction", "nan", "out of range",
               "overflow", "missing", "unexpected")  # fmt: skip


@given(st.sampled_from([np.float64, np.float32]), st.data(), st.sampled_from(CORRUPTIONS))
def test_a_refused_state_leaves_the_model_untouched(dtype, data, how):
    target = _net(dtype, seed=1)
    before = target.state_dict()
    source = _net(dtype, seed=2).state_dict()
    # the model's last entry by default: the old loader copied every entry before it
    key = data.draw(st.sampled_from([*source][::-1]))
    bad = _corrupt(source, key, how)
    if bad is None:
        return
    with pytest.raises(ValueError, match="state"):
        target.load_state_dict(bad)
    _assert_same_state(target.state_dict(), before)


def test_integral_floats_load_into_the_batch_counter_as_integers():
    net = _net()
    state = net.state_dict() | {"norm1.num_batches_tracked": np.float64(7.0)}
    net.load_state_dict(state)
    counter = net.buffers()["norm1.num_batches_tracked"]
    assert counter.dtype == np.int64 and int(counter) == 7
    with pytest.raises(ValueError, match=r"num_batches_tracked.*integral values"):
        net.load_state_dict(state | {"norm1.num_batches_tracked": np.float64(7.5)})
    assert int(counter) == 7


def test_a_float64_state_loads_into_a_float32_model():
    source, target = _net(np.float64, seed=1), _net(np.float32, seed=2)
    target.load_state_dict(source.state_dict())
    for k, v in target.state_dict().items():
        assert v.dtype == (np.int64 if k.endswith("num_batches_tracked") else np.float32)
        np.testing.assert_allclose(v, source.state_dict()[k], rtol=1e-7)
