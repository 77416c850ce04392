"""The known wrong ways to write a normalization, computed for given inputs.

The grader holds a learner's wrong output against each of these and names the closest.
Every variant is computed from the same inputs as the right answer, generic over the
reduction axes (so the same mistakes are recognised in batch, layer, spatial and group
norm). An op that does not centre (RMS norm) has mistakes of its own: subtracting the
mean (computing layer norm), dividing by the Euclidean norm instead of the root mean
square, dropping the path through the mean of squares. Several candidates may share a
name (there is more than one way to flip a sign).

The math the right answers follow is in docs/design.md (§4 the closed form, §5 the two
variance conventions, §6 RMS norm).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import numpy as np

from normgrad.autodiff import Tensor
from normgrad.backends.numpy_backend import normalize_backward, normalize_forward
from normgrad.core.layout import NormLayout

#: ``(dx, dgamma, dbeta)``; dbeta is None for an op without a shift.
Grads = tuple[np.ndarray, np.ndarray, np.ndarray | None]


@dataclass(frozen=True)
class Mistake:
    """A known mistake.

    Attributes:
        name: its short name, for autograders (``"eps_outside_sqrt"``).
        title: what it is called, in words a student can search for
            (``"eps outside the square root"``).
        description: what went wrong and what is due instead.
    """

    name: str
    title: str
    description: str


MISTAKES = {
    m.name: m
    for m in [
        # ---- backward
        Mistake(
            "bessel",
            "Bessel's correction n/(n-1) in the backward",
            "the Bessel-corrected formula's n/(n-1) factor where the biased gradient is due: "
            "the factor belongs to var = sum/(N-1), but the forward pass divides by N",
        ),
        Mistake(
            "no_mean_path",
            "missing gradient through the mean",
            "the mean path is missing: the gradient through mu (step 1, dx2 = dmu / N) never "
            "reaches dx",
        ),
        Mistake(
            "no_variance_path",
            "missing gradient through the variance",
            "the variance path is missing: the gradient through var (steps 6 to 3, dxmu2) "
            "never reaches dx",
        ),
        Mistake(
            "params_not_summed",
            "dgamma/dbeta not summed over the batch",
            "dgamma (and dbeta) not summed over the batch: the parameters are broadcast over "
            "N (and H, W), so their gradients must be summed over those axes",
        ),
        Mistake(
            "eps_outside_sqrt",
            "eps outside the square root",
            "eps outside the square root: the forward pass divides by sqrt(var + eps) (for "
            "RMS norm sqrt(mean(x^2) + eps)), not sqrt(var) + eps",
        ),
        Mistake("sign_flipped", "a flipped sign", "a sign is flipped"),
        Mistake(
            "x_grads_not_added",
            "the two gradients into x not added",
            "the two gradients into x were not added: dx = dx1 + dx2 (step 0), one of them "
            "is missing",
        ),
        Mistake(
            "gamma_missing_in_dx",
            "gamma missing from dx",
            "dx ignores gamma: the gradient that reaches xhat is dout * gamma (step 8), not dout",
        ),
        Mistake(
            "reshape_not_transposed_back_dx",
            "dx reshaped without transposing back",
            "dx was computed in (N*H*W, C) order and reshaped to (N, C, H, W) without "
            "transposing back: reshape to (N, H, W, C), then transpose(0, 3, 1, 2)",
        ),
        Mistake(
            "params_summed_wrong_axis",
            "dgamma/dbeta summed over the wrong axis",
            "dgamma and dbeta were summed over axis 1; they are summed over the batch "
            "(axis 0), one value per feature, as gamma and beta are",
        ),
        Mistake(
            "wrong_count",
            "the wrong N in the backward",
            "the closed form divides by the other axis's size (N where layer norm averages "
            "over D, or D where batch norm averages over N): M is the number of values each "
            "mean is taken over",
        ),
        # ---- forward, train mode
        Mistake(
            "eps_missing",
            "eps missing",
            "x is divided by sqrt(var), without eps; it must be sqrt(var + eps) (eps keeps "
            "a constant feature from dividing by zero)",
        ),
        Mistake(
            "bessel_forward",
            "unbiased variance (N - 1) in the forward",
            "the forward pass divides the variance by N - 1; batch norm's variance is the "
            "biased one, divided by N",
        ),
        Mistake(
            "batch_norm_over_features",
            "batch norm over the wrong axis",
            "statistics per sample over its features (axis 1, as layer norm does); batch norm "
            "takes each feature's statistics over the batch (axis 0)",
        ),
        Mistake(
            "layer_norm_over_batch",
            "layer norm over the batch axis",
            "statistics per feature over the batch (axis 0, as batch norm does); layer norm "
            "takes each sample's statistics over its features (axis 1)",
        ),
        Mistake(
            "rms_norm_over_batch",
            "RMS norm over the batch axis",
            "the mean square per feature over the batch (axis 0); RMS norm takes each "
            "sample's over its features (axis 1)",
        ),
        Mistake("wrong_axes", "normalized over the wrong axes", "normalized over the wrong axes"),
        Mistake(
            "spatial_per_position",
            "spatial batch norm per position",
            "statistics for each (c, h, w) over N only; spatial batch norm takes one mean and "
            "variance per channel, over N, H and W",
        ),
        Mistake(
            "spatial_per_sample",
            "spatial batch norm per sample",
            "statistics per sample (over its C, H and W, or per channel over H and W only); "
            "spatial batch norm takes one mean and variance per channel, over N, H and W",
        ),
        Mistake(
            "reshape_not_transposed_back",
            "reshape without transposing back",
            "x was transposed to (N, H, W, C) and flattened, but the result was reshaped to "
            "(N, C, H, W) without transposing back: reshape to (N, H, W, C), then "
            "transpose(0, 3, 1, 2)",
        ),
        Mistake(
            "reshape_without_transpose",
            "reshape without transposing first",
            "x was reshaped to (N*H*W, C) directly, which mixes channels: transpose to "
            "(N, H, W, C) first (x.transpose(0, 2, 3, 1).reshape(-1, C))",
        ),
        Mistake(
            "groups_interleaved",
            "group norm groups the wrong channels",
            "the channels were grouped by x.reshape(N, C // G, G, ...): channel c went to "
            "group c % G; group g holds the consecutive channels g*C/G to (g+1)*C/G - 1, "
            "x.reshape(N, G, C // G, H, W)",
        ),
        Mistake(
            "groups_of_size_g",
            "group norm with G channels per group",
            "G was taken as the number of channels per group; it is the number of groups "
            "(each of C / G channels)",
        ),
        Mistake(
            "groups_ignored",
            "group norm over all channels",
            "statistics over all channels of a sample (layer norm); group norm takes them "
            "per group of C / G channels",
        ),
        Mistake(
            "affine_missing",
            "gamma and beta not applied",
            "gamma and beta are not applied (y should be gamma*xhat + beta)",
        ),
        # ---- forward, test mode
        Mistake(
            "test_eps_outside_sqrt",
            "eps outside the square root at test time",
            "at test time x is divided by sqrt(running_var) + eps; it must be "
            "sqrt(running_var + eps), as in training",
        ),
        Mistake(
            "test_affine_missing",
            "gamma and beta not applied at test time",
            "at test time the output is (x - running_mean) / sqrt(running_var + eps); it must "
            "be scaled by gamma and shifted by beta, as in training",
        ),
        Mistake(
            "test_batch_stats",
            "batch statistics used at test time",
            "at test time the batch's own mean and variance were used; test mode normalizes "
            "with running_mean and running_var",
        ),
        Mistake(
            "test_sqrt_missing",
            "square root missing at test time",
            "at test time x is divided by running_var + eps; it must be divided by "
            "sqrt(running_var + eps)",
        ),
        Mistake(
            "test_eps_missing",
            "eps missing at test time",
            "at test time x is divided by sqrt(running_var); it must be "
            "sqrt(running_var + eps), as in training",
        ),
        # ---- running statistics
        Mistake(
            "running_var_of_std",
            "running variance updated with the standard deviation",
            "the running variance was updated with the batch's standard deviation "
            "(sqrt(var + eps)); it keeps the variance itself, and test time takes the "
            "square root",
        ),
        Mistake(
            "running_var_with_eps",
            "eps added to the running variance",
            "the running variance was updated with var + eps; it keeps var itself (test "
            "time adds eps under the square root)",
        ),
        Mistake(
            "running_not_updated",
            "running statistics never updated",
            "bn_param['running_mean'] and bn_param['running_var'] are left as they were; "
            "each training step must store momentum * running + (1 - momentum) * batch",
        ),
        Mistake(
            "running_replaced",
            "running statistics replaced by the batch's",
            "the running statistics are set to the batch's own; they are a moving average: "
            "momentum * running + (1 - momentum) * batch",
        ),
        Mistake(
            "momentum_ignored",
            "momentum ignored",
            "momentum 0.9 was used whatever bn_param['momentum'] says; read it with "
            "bn_param.get('momentum', 0.9)",
        ),
        Mistake(
            "momentum_reversed",
            "momentum on the wrong side",
            "momentum weights the new batch (PyTorch's convention); the course's weights the "
            "old value: running = momentum * running + (1 - momentum) * batch",
        ),
        Mistake(
            "unbiased_running_var",
            "running variance updated with the unbiased variance",
            "the running variance is the unbiased (N - 1) batch variance; the course keeps "
            "the biased one",
        ),
        # ---- RMS norm's own
        Mistake(
            "mean_subtracted",
            "mean subtracted in RMS norm",
            "the mean is subtracted: that is layer norm (without beta), not RMS norm, which "
            "scales x itself by 1 / sqrt(mean(x^2) + eps)",
        ),
        Mistake(
            "l2_norm_instead",
            "L2 norm instead of root mean square",
            "x is divided by its Euclidean norm sqrt(sum(x^2) + eps), not by its root mean "
            "square sqrt(mean(x^2) + eps): the sum must be divided by D",
        ),
        Mistake(
            "scale_missing", "gamma not applied", "gamma is not applied (y should be gamma * xhat)"
        ),
        Mistake(
            "no_mean_square_path",
            "missing gradient through the mean of squares",
            "the path through the mean of squares is missing: dx = dxhat * ivar treats ivar "
            "as a constant, but the term - ivar * xhat * sum(dxhat * xhat) / D is due "
            "(steps 6 to 3)",
        ),
        Mistake(
            "mean_path_added",
            "a mean path RMS norm does not have",
            "a mean path RMS norm does not have: the - sum(dxhat) term belongs to layer "
            "norm's gradient; RMS norm subtracts no mean, so no gradient flows through one",
        ),
        Mistake(
            "sum_not_averaged",
            "sum not divided by D in the mean of squares",
            "the 1/D of the mean of squares is missing from its path: the term is "
            "- ivar * xhat * sum(dxhat * xhat) / D, divided by D",
        ),
    ]
}

#: Not a mistake (the result passes), but worth a note when the large-mean case shows it.
NAIVE_VARIANCE = (
    "variance computed as E[x^2] - E[x]^2 (one pass): it loses precision when the mean is "
    "large compared with the spread, and can even turn negative; mean((x - mu)**2) does not"
)


def _eps_outside(layout: NormLayout, x, gamma, beta, eps, dy=None):
    """``y = gamma * xc / (sqrt(var) + eps) + beta`` (``xc = x - mu``, or x itself where the
    layout does not centre); with ``dy``, its gradients ``(dx, dgamma, dbeta)`` (autodiff)."""
    xt = Tensor(x.reshape(layout.work_shape))
    gt = Tensor(gamma.reshape(layout.param_bcast))
    bt = None if beta is None else Tensor(beta.reshape(layout.param_bcast))
    axes = layout.reduce_axes
    xc = xt - xt.mean(axis=axes, keepdims=True) if layout.centered else xt
    var = (xc**2).mean(axis=axes, keepdims=True)
    y = gt * (xc / (var.sqrt() + eps))
    if bt is not None:
        y = y + bt
    if dy is None:
        return y.data.reshape(x.shape)
    y.backward(dy.reshape(layout.work_shape))
    return (
        xt.grad.reshape(x.shape),
        gt.grad.reshape(layout.param_shape),
        None if bt is None else bt.grad.reshape(layout.param_shape),
    )


def backward_variants(layout: NormLayout, x, gamma, beta, dy, eps) -> dict[str, list[Grads]]:
    """Each known backward mistake's ``(dx, dgamma, dbeta)`` for these inputs (biased
    variance; beta None for an op without a shift)."""
    _, cache, _ = normalize_forward(x, gamma, beta, layout, eps=eps)
    axes, m = layout.reduce_axes, layout.count
    r, xhat = cache.inv_std, cache.xhat
    dyw = dy.reshape(layout.work_shape)
    dxhat = dyw * cache.gamma

    def s(a):
        return np.sum(a, axis=axes, keepdims=True)

    def param(a):
        return np.sum(a, axis=layout.param_sum_axes, keepdims=True).reshape(layout.param_shape)

    def dx_of(w):
        return w.reshape(x.shape)

    # The closed form (docs/design.md §4, §6) is dx = r/M * (M dxhat - mean_term - var_term);
    # an op that does not centre has no mean term.
    mean_term = s(dxhat) if layout.centered else 0.0
    var_term = xhat * s(dxhat * xhat)
    dgamma, dbeta = param(dyw * xhat), None if beta is None else param(dyw)
    unsummed_dbeta = None if beta is None else dx_of(dyw)

    def closed(dxh=dxhat, mean=mean_term, var=var_term, factor=1.0):
        return dx_of(r / m * (m * dxh - mean - factor * var))

    # The closed form with r' = 1 / (sqrt(var) + eps) and xhat' = xc * r' throughout: a
    # right forward pass with the wrong r in the backward.
    eps_r = 1.0 / (np.sqrt(cache.var) + eps)
    eps_xhat = xhat / r * eps_r
    eps_closed = eps_r / m * (m * dxhat - mean_term - eps_xhat * s(dxhat * eps_xhat))
    dy_xhat = xhat * s(dyw * xhat)
    variants = {
        "params_not_summed": [(closed(), dx_of(dyw * xhat), unsummed_dbeta)],
        "eps_outside_sqrt": [
            _eps_outside(layout, x, gamma, beta, eps, dy),
            (dx_of(eps_closed), param(dyw * eps_xhat), dbeta),
        ],
        "sign_flipped": [
            (-closed(), dgamma, dbeta),
            (closed(var=-var_term), dgamma, dbeta),
        ],
        "gamma_missing_in_dx": [
            (closed(dxh=dyw, mean=s(dyw) if layout.centered else 0.0, var=dy_xhat), dgamma, dbeta)
        ],
    }
    if layout.op == "batch_norm" and x.ndim == 4:
        not_back = closed().transpose(0, 2, 3, 1).reshape(x.shape)
        variants["reshape_not_transposed_back_dx"] = [(not_back, dgamma, dbeta)]
    if x.ndim == 2:  # the other axis's sum, or its size, where this axis's is due
        m_other = x.shape[1 - layout.reduce_axes[0]]
        over = [np.sum(a, axis=1) for a in (dyw * xhat, dyw)]  # the parameters are per feature
        variants["params_summed_wrong_axis"] = [
            (closed(), over[0], None if beta is None else over[1])
        ]
        variants["wrong_count"] = [
            (dx_of(r * (dxhat - (mean_term + var_term) / m_other)), dgamma, dbeta)
        ]
    if layout.centered:
        dx1 = r * (dxhat - var_term / m)  # the path through xmu only
        variants |= {
            "bessel": [(closed(factor=m / (m - 1)), dgamma, dbeta)],
            "no_mean_path": [(dx_of(dx1), dgamma, dbeta)],
            "no_variance_path": [(dx_of(r * (dxhat - mean_term / m)), dgamma, dbeta)],
            "x_grads_not_added": [(dx_of(np.broadcast_to(-s(dx1) / m, dx1.shape)), dgamma, dbeta)],
        }
        variants["sign_flipped"].append((closed(mean=-mean_term), dgamma, dbeta))
    else:
        # Layer norm's gradient, whole (the learner computed layer norm), and RMS norm's
        # with layer norm's mean term added.
        centred = replace(layout, centered=True)
        _, ln_cache, _ = normalize_forward(x, gamma, None, centred, eps=eps)
        ln_dx, ln_dgamma, _ = normalize_backward(dy, ln_cache)
        variants |= {
            "no_mean_square_path": [(dx_of(r * dxhat), dgamma, dbeta)],
            "mean_subtracted": [(ln_dx, ln_dgamma, dbeta)],
            "mean_path_added": [(closed(mean=s(dxhat)), dgamma, dbeta)],
            "sum_not_averaged": [(closed(var=m * var_term), dgamma, dbeta)],
        }
    return variants


def _normalize_over(x, gamma, beta, axes: tuple[int, ...], eps, centered=True):
    """Normalize ``x`` over ``axes`` (gamma and beta already broadcast against x)."""
    xc = x - x.mean(axis=axes, keepdims=True) if centered else x
    y = xc / np.sqrt((xc**2).mean(axis=axes, keepdims=True) + eps)
    y = y if gamma is None else y * gamma
    return y if beta is None else y + beta


def _spatial_variants(layout: NormLayout, x, g, b, eps) -> dict[str, list[np.ndarray]]:
    """Spatial batch norm's mistakes (x of shape (N, C, H, W); g, b of shape (1, C, 1, 1))."""
    c = x.shape[1]
    named = {(0,): "spatial_per_position", (1, 2, 3): "spatial_per_sample"}
    named[(2, 3)] = "spatial_per_sample"
    variants: dict[str, list[np.ndarray]] = {name: [] for name in named.values()}
    variants["wrong_axes"] = []  # last: a named mistake is the likelier reading of a tie
    for k in range(1, 5):
        for axes in itertools.combinations(range(4), k):
            if axes != layout.reduce_axes:
                name = named.get(axes, "wrong_axes")
                variants[name].append(_normalize_over(x, g, b, axes, eps))
    right = _normalize_over(x, g, b, layout.reduce_axes, eps)
    flat = x.reshape(-1, c)  # no transpose first: every row mixes channels
    variants["reshape_not_transposed_back"] = [right.transpose(0, 2, 3, 1).reshape(x.shape)]
    variants["reshape_without_transpose"] = [
        _normalize_over(flat, g.reshape(c), b.reshape(c), (0,), eps).reshape(x.shape)
    ]
    return variants


def _group_variants(layout: NormLayout, x, g, b, eps) -> dict[str, list[np.ndarray]]:
    """Group norm's mistakes (x of shape (N, C, *S); g, b of shape (1, C, 1, ...))."""
    n, c, *spatial = x.shape
    groups = layout.work_shape[1]
    rest = tuple(range(3, 3 + len(spatial)))

    def over(view_shape, axes):
        y = _normalize_over(x.reshape(view_shape), None, None, axes, eps).reshape(x.shape)
        return y * g + b

    variants = {
        "groups_interleaved": [over((n, c // groups, groups, *spatial), (1, *rest))],
        "groups_of_size_g": [over((n, c // groups, groups, *spatial), (2, *rest))],
    }
    if groups != 1:
        variants["groups_ignored"] = [over(x.shape, tuple(range(1, x.ndim)))]
    return variants


def forward_variants(layout: NormLayout, x, gamma, beta, eps) -> dict[str, list[np.ndarray]]:
    """Each known train-mode forward mistake's output for these inputs (gamma and beta of
    the op's parameter shape; beta None for an op without a shift)."""
    variants = {"eps_outside_sqrt": [_eps_outside(layout, x, gamma, beta, eps)]}
    with np.errstate(all="ignore"):  # a constant group has variance 0
        variants["eps_missing"] = [normalize_forward(x, gamma, beta, layout, eps=0.0)[0]]
    if layout.centered:
        variants |= {
            "bessel_forward": [normalize_forward(x, gamma, beta, layout, eps=eps, bessel=True)[0]],
            "affine_missing": [normalize_forward(x, None, None, layout, eps=eps)[0]],
        }
    else:
        xw = x.reshape(layout.work_shape)
        norm = np.sqrt(np.sum(xw**2, axis=layout.reduce_axes, keepdims=True) + eps)
        l2 = (xw / norm * gamma.reshape(layout.param_bcast)).reshape(x.shape)
        variants |= {
            "mean_subtracted": [
                normalize_forward(x, gamma, None, replace(layout, centered=True), eps=eps)[0]
            ],
            "l2_norm_instead": [l2],
            "scale_missing": [normalize_forward(x, None, None, layout, eps=eps)[0]],
        }
    g = gamma.reshape(layout.param_bcast) if layout.work_shape == x.shape else None
    b = None if beta is None or g is None else beta.reshape(layout.param_bcast)
    if x.ndim == 2:  # over samples instead of features, or the reverse
        other = tuple(a for a in range(2) if a not in layout.reduce_axes)
        name = {"batch_norm": "batch_norm_over_features", "layer_norm": "layer_norm_over_batch"}
        variants[name.get(layout.op, "rms_norm_over_batch")] = [
            _normalize_over(x, g, b, other, eps, layout.centered)
        ]
    elif layout.op == "batch_norm" and x.ndim == 4:
        variants |= _spatial_variants(layout, x, g, b, eps)
    elif layout.op == "group_norm":
        c = x.shape[1]
        bcast = (1, c) + (1,) * (x.ndim - 2)
        variants |= _group_variants(layout, x, gamma.reshape(bcast), beta.reshape(bcast), eps)
    return variants


def naive_variance_forward(layout: NormLayout, x, gamma, beta, eps) -> np.ndarray:
    """The forward with the one-pass variance E[x^2] - E[x]^2 (see :data:`NAIVE_VARIANCE`)."""
    xw = x.reshape(layout.work_shape)
    axes = layout.reduce_axes
    mu = xw.mean(axis=axes, keepdims=True)
    var = (xw**2).mean(axis=axes, keepdims=True) - mu**2
    y = (xw - mu) / np.sqrt(var + eps) * gamma.reshape(layout.param_bcast)
    if beta is not None:
        y = y + beta.reshape(layout.param_bcast)
    return y.reshape(x.shape)


def test_mode_variants(
    layout: NormLayout, x, gamma, beta, running_mean, running_var, eps
) -> dict[str, list[np.ndarray]]:
    """Each known test-mode mistake's output (batch norm; every parameter of shape (C,))."""
    bc = layout.param_bcast
    g, b = gamma.reshape(bc), beta.reshape(bc)
    xc = x - running_mean.reshape(bc)
    rv = running_var.reshape(bc)
    right = g * xc / np.sqrt(rv + eps) + b
    variants = {
        "test_eps_outside_sqrt": [g * xc / (np.sqrt(rv) + eps) + b],
        "test_affine_missing": [xc / np.sqrt(rv + eps)],
        "test_batch_stats": [normalize_forward(x, gamma, beta, layout, eps=eps)[0]],
        "test_sqrt_missing": [g * xc / (rv + eps) + b],
        "test_eps_missing": [g * xc / np.sqrt(rv) + b],
    }
    if x.ndim == 4:  # the spatial layer's reshape slips, in test mode too
        c = x.shape[1]
        variants["reshape_not_transposed_back"] = [right.transpose(0, 2, 3, 1).reshape(x.shape)]
        flat = (x.reshape(-1, c) - running_mean) / np.sqrt(running_var + eps) * gamma + beta
        variants["reshape_without_transpose"] = [flat.reshape(x.shape)]
    return variants


def running_variants(
    old_mean, old_var, batch_mean, batch_var, count: int, momentum: float, eps: float
) -> dict[str, list[dict[str, np.ndarray]]]:
    """Each known mistake's ``{"running_mean", "running_var"}`` after one training step
    (every array of shape (C,); ``batch_var`` the biased batch variance over ``count``)."""

    def step(m, mean, var):
        return {
            "running_mean": m * old_mean + (1 - m) * mean,
            "running_var": m * old_var + (1 - m) * var,
        }

    unbiased = batch_var * count / max(count - 1, 1)
    variants = {
        "running_not_updated": [{"running_mean": old_mean, "running_var": old_var}],
        "running_replaced": [{"running_mean": batch_mean, "running_var": batch_var}],
        "momentum_reversed": [step(1 - momentum, batch_mean, batch_var)],
        "unbiased_running_var": [step(momentum, batch_mean, unbiased)],
    }
    variants["running_var_of_std"] = [
        step(momentum, batch_mean, np.sqrt(batch_var + eps)),
        step(momentum, batch_mean, np.sqrt(batch_var)),
    ]
    variants["running_var_with_eps"] = [step(momentum, batch_mean, batch_var + eps)]
    if momentum != 0.9:
        variants["momentum_ignored"] = [
            step(0.9, batch_mean, batch_var),
            step(0.9, batch_mean, unbiased),
        ]
    return variants
