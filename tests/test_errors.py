"""Bad input: a clear ValueError or TypeError naming the argument, what was expected, what came."""

import numpy as np
import pytest

import normgrad as ng

X = np.random.default_rng(0).standard_normal((4, 3))
G, B = np.ones(3), np.zeros(3)


@pytest.mark.parametrize(
    ("kwargs", "exc", "pattern"),
    [
        ({"gamma": np.ones(4)}, ValueError, r"gamma must have shape \(3,\).*got shape \(4,\)"),
        ({"beta": np.ones((1, 3))}, ValueError, r"beta must have shape \(3,\).*got shape \(1, 3\)"),
        ({"channel_axis": 2}, ValueError, r"channel_axis=2 is out of range.*\(4, 3\)"),
        ({"channel_axis": -3}, ValueError, r"channel_axis=-3 is out of range"),
        ({"channel_axis": 1.0}, TypeError, r"channel_axis must be an int"),
        ({"eps": 0.0}, ValueError, r"eps must be a positive finite number; got 0.0"),
        ({"eps": -1e-5}, ValueError, r"eps must be a positive"),
        ({"eps": float("nan")}, ValueError, r"eps must be a positive"),
        ({"eps": "1e-5"}, TypeError, r"eps must be a positive real number"),
        ({"momentum": 1.5}, ValueError, r"momentum must be in \[0, 1\]; got 1.5"),
        ({"momentum": -0.1}, ValueError, r"momentum must be in \[0, 1\]"),
        ({"momentum": None}, TypeError, r"momentum must be a number"),
        ({"training": "yes"}, TypeError, r"training must be True or False"),
        ({"bessel": 1}, TypeError, r"bessel must be True or False"),
        (
            {"running_mean": np.zeros(4), "running_var": np.ones(4)},
            ValueError,
            r"running_mean must have shape \(3,\).*got \(4,\)",
        ),
        (
            {"running_mean": [0.0, 0.0, 0.0], "running_var": np.ones(3)},
            TypeError,
            r"running_mean must be a NumPy array \(it is updated in place\)",
        ),
        (
            {"running_mean": np.zeros(3)},
            ValueError,
            r"running_mean and running_var must be given together",
        ),
        (
            {"running_mean": np.zeros(3, int), "running_var": np.ones(3)},
            TypeError,
            r"running_mean must be a floating-point array.*int64",
        ),
        ({"training": False}, ValueError, r"training=False normalizes with running statistics"),
    ],
)
def test_batch_norm_bad_arguments(kwargs, exc, pattern):
    args = {"gamma": G, "beta": B} | kwargs
    gamma, beta = args.pop("gamma"), args.pop("beta")
    with pytest.raises(exc, match=pattern):
        ng.batch_norm_forward(X, gamma, beta, **args)


@pytest.mark.parametrize(
    ("x", "pattern"),
    [
        (np.ones((4, 3), dtype=np.int64), r"x must be a floating-point array.*got dtype int64"),
        (np.ones((4, 3), dtype=bool), r"got dtype bool"),
        (np.ones((4, 3), dtype=np.complex128), r"got dtype complex128"),
        (np.array([[object()] * 3] * 4), r"got dtype object"),
        (
            np.ones((4, 3), dtype=np.longdouble)
            if np.dtype(np.longdouble).itemsize > 8
            else np.ones((4, 3), dtype=np.int8),
            r"x must be a floating-point array",
        ),
    ],
)
def test_non_float_inputs_are_type_errors(x, pattern):
    with pytest.raises(TypeError, match=pattern):
        ng.batch_norm_forward(x, G, B)


def test_non_float_gamma_is_a_type_error():
    with pytest.raises(TypeError, match=r"gamma must be a floating-point array.*int64"):
        ng.layer_norm_forward(X, np.ones(3, dtype=np.int64), None)


@pytest.mark.parametrize(
    ("shape", "kwargs", "pattern"),
    [
        (
            (1, 4),
            {},
            r"Expected more than 1 value per channel when training, got input size \(1, 4\)",
        ),
        (
            (1, 3, 1, 1),
            {},
            r"Expected more than 1 value per channel when training, got input size \(1, 3, 1, 1\)",
        ),
        ((1, 4), {"bessel": True}, r"Expected more than 1 value per channel with bessel=True"),
    ],
)
def test_batch_norm_needs_two_values_per_channel(shape, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        ng.batch_norm_forward(np.ones(shape), None, None, **kwargs)


def test_one_value_per_channel_is_fine_in_eval_mode():
    y, _ = ng.batch_norm_forward(
        np.ones((1, 4)),
        None,
        None,
        training=False,
        running_mean=np.zeros(4),
        running_var=np.ones(4),
    )
    assert y.shape == (1, 4)


def test_one_value_per_group_errors():
    with pytest.raises(ValueError, match=r"more than 1 value per sample with bessel=True"):
        ng.layer_norm_forward(np.ones((3, 1)), None, None, bessel=True)
    with pytest.raises(
        ValueError, match=r"more than 1 value per \(sample, channel\), got input size \(2, 3, 1\)"
    ):
        ng.instance_norm_forward(np.ones((2, 3, 1)), None, None)
    with pytest.raises(ValueError, match=r"per \(sample, group\) with bessel=True"):
        ng.group_norm_forward(np.ones((2, 4)), None, None, 4, bessel=True)


def test_group_norm_bad_groups():
    x = np.ones((2, 6, 3))
    with pytest.raises(ValueError, match=r"num_groups=4 must divide the number of channels C=6"):
        ng.group_norm_forward(x, None, None, 4)
    with pytest.raises(ValueError, match=r"num_groups must be a positive int; got 0"):
        ng.group_norm_forward(x, None, None, 0)
    with pytest.raises(TypeError, match=r"num_groups must be a positive int"):
        ng.group_norm_forward(x, None, None, 2.0)
    with pytest.raises(ValueError, match=r"gamma must have shape \(6,\)"):
        ng.group_norm_forward(x, np.ones(3), None, 3)


def test_shape_requirements():
    with pytest.raises(
        ValueError,
        match=r"x must have shape \(N, C, \.\.\.\) with at least 2 dimensions; got shape \(5,\)",
    ):
        ng.batch_norm_forward(np.ones(5), None, None)
    with pytest.raises(
        ValueError, match=r"x must have shape \(N, C, \*spatial\) with at least one spatial"
    ):
        ng.instance_norm_forward(np.ones((2, 3)), None, None)
    with pytest.raises(ValueError, match=r"at least normalized_ndim=3"):
        ng.layer_norm_forward(np.ones((2, 3)), None, None, normalized_ndim=3)
    with pytest.raises(ValueError, match=r"gamma must have shape \(3, 4\)"):
        ng.layer_norm_forward(np.ones((2, 3, 4)), np.ones(4), None, normalized_ndim=2)


def test_backward_rejects_foreign_caches_and_bad_dy():
    y, cache = ng.layer_norm_forward(X, G, B)
    with pytest.raises(
        ValueError, match=r"cache comes from layer_norm_forward.*layer_norm_backward"
    ):
        ng.batch_norm_backward(np.ones_like(X), cache)
    with pytest.raises(ValueError, match=r"cache comes from layer_norm_forward"):
        ng.batch_norm_backward_staged(np.ones_like(X), cache)
    with pytest.raises(TypeError, match=r"cache returned by a normgrad forward.*got tuple"):
        ng.layer_norm_backward(np.ones_like(X), (1, 2, 3))
    with pytest.raises(
        ValueError,
        match=r"dy must have the shape of the forward output, \(4, 3\); got shape \(3, 4\)",
    ):
        ng.layer_norm_backward(np.ones((3, 4)), cache)
    with pytest.raises(TypeError, match=r"dy must be a floating-point array"):
        ng.layer_norm_backward(np.ones((4, 3), dtype=int), cache)


def test_read_only_running_arrays_are_refused_before_any_work():
    rm, rv = np.zeros(3), np.ones(3)
    rm.flags.writeable = False
    with pytest.raises(ValueError, match=r"running_mean must be writeable"):
        ng.batch_norm_forward(X, G, B, running_mean=rm, running_var=rv)
    np.testing.assert_array_equal(rv, np.ones(3))


def test_fold_requires_running_statistics():
    with pytest.raises(ValueError, match=r"running_mean and running_var are required"):
        ng.fold_batch_norm(np.ones((3, 2)), None, None, None)
    with pytest.raises(ValueError, match=r"running_var must have shape \(3,\)"):
        ng.fold_batch_norm(np.ones((3, 2)), None, np.zeros(3), np.ones(2))
