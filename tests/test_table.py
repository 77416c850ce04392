"""The table of ops and the backend objects: one description per op, caches that cannot change."""

import dataclasses

import numpy as np
import pytest

import normgrad as ng
from normgrad import backends
from normgrad.core.table import OPS, get_op

OPTIONS = {"group_norm": {"num_groups": 2}}


def _inputs(spec, seed=0, shape=None):
    rng = np.random.default_rng(seed)
    shape = shape or spec.example_shape
    options = OPTIONS.get(spec.name, {})
    pshape = spec.param_shape(shape, **options)
    x = rng.standard_normal(shape)
    gamma = rng.uniform(0.5, 1.5, pshape)
    beta = rng.standard_normal(pshape) if spec.has_beta else None
    return x, gamma, beta, rng.standard_normal(shape), options


def test_every_op_has_its_public_functions_and_one_name():
    assert list(OPS) == ["batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm"]
    for name, spec in OPS.items():
        assert spec.name == name
        for suffix in ("forward", "backward", "backward_staged"):
            assert f"{name}_{suffix}" in ng.__all__
        for alias in spec.aliases:
            assert get_op(alias) is spec
            assert alias not in OPS or alias == name
    all_aliases = [a for spec in OPS.values() for a in spec.aliases]
    assert len(all_aliases) == len(set(all_aliases))


def test_get_op_names_the_choices():
    assert get_op("BatchNorm".lower()) is OPS["batch_norm"]
    assert get_op("group-norm") is OPS["group_norm"]
    with pytest.raises(ValueError, match="unknown op 'power_norm'; expected one of batch_norm"):
        get_op("power_norm")


@pytest.mark.parametrize("name", list(OPS))
def test_uniform_calls_equal_the_public_functions(name):
    spec = OPS[name]
    x, gamma, beta, dy, options = _inputs(spec)
    y, cache = spec.forward(x, gamma, beta, **options)
    public_forward = getattr(ng, f"{name}_forward")
    args = (x, gamma, beta) if spec.has_beta else (x, gamma)
    y2, cache2 = public_forward(*args, **options)
    np.testing.assert_array_equal(y, y2)
    grads = spec.backward(dy, cache)
    public = getattr(ng, f"{name}_backward")(dy, cache2)
    assert len(public) == (3 if spec.has_beta else 2)
    for a, b in zip(grads, public, strict=False):
        np.testing.assert_array_equal(a, b)
    assert (grads[2] is None) == (not spec.has_beta)
    staged = spec.backward_staged(dy, cache)
    np.testing.assert_allclose(staged[0], grads[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(OPS))
def test_staged_steps_follow_the_tables_nodes(name):
    spec = OPS[name]
    x, gamma, beta, dy, options = _inputs(spec)
    _y, cache = spec.forward(x, gamma, beta, **options)
    *_, steps = spec.backward_staged(dy, cache, return_steps=True)
    nodes = spec.nodes()
    assert [s.number for s in steps] == [n.step for n in reversed(nodes)] + [0]
    assert [s.node for s in steps[:-1]] == [n.expr for n in reversed(nodes)]


def _backend_names():
    return ["numpy", "numba"] if backends.numba_available() else ["numpy"]


@pytest.mark.parametrize("backend", _backend_names())
@pytest.mark.parametrize("name", list(OPS))
def test_caches_are_immutable_and_carry_their_backend(name, backend):
    spec = OPS[name]
    x, gamma, beta, dy, options = _inputs(spec, shape=(8, 6, 5))
    y, cache = spec.forward(x, gamma, beta, backend=backend, **options)
    assert cache.backend.name == backend
    assert cache.backend is backends.choose(backend)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cache.eps = 1.0
    for array in (cache.xhat, cache.mean, cache.var, cache.inv_std, cache.gamma):
        with pytest.raises(ValueError, match="read-only"):
            array[...] = 0.0
    before = spec.backward(dy, cache)
    np.testing.assert_array_equal(cache.xhat, cache.xhat)  # asking twice changes nothing
    after = spec.backward(dy, cache)
    for a, b in zip(before, after, strict=True):
        if a is not None:
            np.testing.assert_array_equal(a, b)
    # The caller's arrays keep their own flags.
    assert x.flags.writeable and gamma.flags.writeable


def test_backend_objects_are_chosen_once():
    assert backends.choose("numpy") is backends.NUMPY
    assert backends.choose(backends.NUMPY) is backends.NUMPY
    x = np.random.default_rng(0).standard_normal((4, 3))
    _y, cache = ng.layer_norm_forward(x, None, None, backend=backends.NUMPY)
    assert cache.backend is backends.NUMPY
    if backends.numba_available():
        # comm= (synchronized statistics) only runs on NumPy, whatever was asked for.
        assert backends.choose("numba", 10**6, comm=object()) is backends.NUMPY
