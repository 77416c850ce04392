"""``normgrad explain``: the backward pass, one graph node at a time, on a small example.

Every number printed comes from the library on the example: the staged backward's own
intermediate gradients (:func:`normgrad.staged_backward` with ``return_steps=True``), the
closed form, the autodiff engine and central differences.
"""

from __future__ import annotations

import textwrap

import numpy as np

import normgrad as ng
from normgrad.gradcheck import max_rel_error, numerical_gradient
from normgrad.learn.examples import Example

WIDTH = 80

TITLES = {
    "batch_norm": "Batch norm",
    "layer_norm": "Layer norm",
    "group_norm": "Group norm",
    "instance_norm": "Instance norm",
}

# The forward nodes, as seed 002 numbers them.
FORWARD = [
    (1, "mu = mean(x)", "the mean of each group"),
    (2, "xmu = x - mu", "centre x"),
    (3, "sq = xmu ** 2", "square"),
    (4, "var = sum(sq) / M", "the variance of each group"),
    (5, "sqrtvar = sqrt(var + eps)", "eps keeps the root away from zero"),
    (6, "ivar = 1 / sqrtvar", "invert"),
    (7, "xhat = xmu * ivar", "normalize"),
    (8, "gammax = gamma * xhat", "scale"),
    (9, "out = gammax + beta", "shift"),
]

# What each node does to the gradient, in words; {R} names the reduced axes, {M} their size.
RULES = {
    9: "An addition passes its gradient on unchanged: d(a+b)/da = d(a+b)/db = 1. "
    "beta was broadcast over {R}, so its gradient is summed there: dbeta = sum(dout).",
    8: "A product sends each factor the incoming gradient times the other factor: "
    "d(ab)/da = b. So dxhat = dgammax * gamma, and dgamma = sum(dgammax * xhat), "
    "summed over {R} because gamma was broadcast.",
    7: "The same product rule. ivar is one number per group, so its gradient is summed "
    "over {R}: divar = sum(dxhat * xmu); and dxmu1 = dxhat * ivar.",
    6: "d(1/a)/da = -1/a^2: dsqrtvar = -divar / sqrtvar^2.",
    5: "d sqrt(a)/da = 1 / (2 sqrt(a)); eps is a constant and gets no gradient: "
    "dvar = dsqrtvar / (2 sqrt(var + eps)).",
    4: "A mean spreads its gradient evenly: each of the {M} values it averaged gets "
    "dvar / {M}: dsq = dvar / {M}, broadcast back over {R}.",
    3: "d(a^2)/da = 2a: dxmu2 = 2 * xmu * dsq.",
    2: "xmu fed two nodes (step 3 and step 7), so the two gradients that reach it are "
    "added: dxmu1 + dxmu2. Then d(a-b)/da = 1 sends that on to x as dx1, and "
    "d(a-b)/db = -1 sends minus its sum over {R} to mu: dmu = -sum(dxmu1 + dxmu2).",
    1: "Like step 4: each of the {M} values averaged gets dmu / {M}: dx2 = dmu / {M}.",
    0: "x fed two nodes (step 1 and step 2), so its two gradients are added: dx = dx1 + dx2.",
}

BESSEL_RULE_4 = (
    "With Bessel's correction var = sum(sq) / ({M} - 1): a sum, then a division by "
    "{M} - 1, so each value gets dvar / ({M} - 1), not dvar / {M}. This is the only change "
    "anywhere in the backward pass."
)

EVAL_RULE_2 = (
    "In eval mode mu and ivar are running statistics, constants: the only path to x is "
    "through xmu, and x - mu passes it on unchanged, dx = dxmu1."
)


def _wrap(text: str, indent: int = 2) -> str:
    return textwrap.fill(text, WIDTH, initial_indent=" " * indent, subsequent_indent=" " * indent)


def _array(a: np.ndarray, indent: int = 4) -> str:
    a = np.asarray(a)
    if a.ndim > 1 and a.shape[0] == 1 and a.size == a.shape[-1]:
        a = a.reshape(-1)  # a per-channel row, shown flat
    body = np.array2string(
        a,
        precision=4,
        suppress_small=True,
        max_line_width=WIDTH - indent,
        floatmode="maxprec_equal",
    )
    return textwrap.indent(body, " " * indent)


def _reduce_words(ex: Example, cache) -> str:
    layout = cache.layout
    if ex.op == "batch_norm" and len(layout.x_shape) == 2:
        return "the batch (axis 0, N)"
    axes = ", ".join(str(a) for a in layout.reduce_axes)
    view = (
        " of x viewed as " + str(layout.work_shape) if layout.work_shape != layout.x_shape else ""
    )
    return f"axes ({axes}){view}"


def explain(ex: Example) -> str:
    """The whole walk as one string, lines at most 80 characters."""
    _y, cache = ex.forward()
    dx, dgamma, dbeta, steps = ng.staged_backward(ex.dout, cache, return_steps=True)
    m = cache.layout.count
    reduce = _reduce_words(ex, cache)
    fmt = {"R": reduce, "M": str(m)}
    variance = "Bessel-corrected (/ (M - 1))" if ex.bessel else "biased (/ M)"
    groups = ""
    if ex.num_groups:
        groups = f", {ex.num_groups} group{'s' if ex.num_groups != 1 else ''}"
    out: list[str] = []
    title = f"{TITLES[ex.op]} backward, step by step (seed 002's graph)"
    out += [title, "=" * len(title)]
    out.append(
        _wrap(
            f"x has shape {ex.x.shape}{groups}; statistics over {reduce}, M = {m} values "
            f"per group; variance {variance}; eps = {ex.eps:g}.",
            0,
        )
    )
    out += ["", "x:", _array(ex.x), "gamma:", _array(ex.gamma), "beta:", _array(ex.beta)]
    out += ["dout (the upstream gradient):", _array(ex.dout), ""]
    out.append("Forward pass, node by node:")
    for number, node, what in FORWARD:
        if number == 4 and ex.bessel:
            node = "var = sum(sq) / (M - 1)"
        out.append(f"  step {number}  {node:<28} {what}")
    out += ["", "Backward pass, from the output (step 9) back to the input (step 0):"]

    for step in steps:
        out += ["", f"step {step.number}  {step.node}"]
        if step.number == 4 and ex.bessel:
            rule = BESSEL_RULE_4
        elif step.number == 2 and not cache.training:
            rule = EVAL_RULE_2
        else:
            rule = RULES[step.number]
        out.append(_wrap(rule.format(**fmt)))
        if step.meets:
            out.append(f"  >> two gradients meet here and are added: {step.meets}")
        for name, grad in step.grads.items():
            out.append(f"  {name}:")
            out.append(_array(grad))

    out += ["", "The closed form (seed 001) gives the same dx in one line:"]
    if ex.bessel:
        out.append("  dx = (ivar / M) * (M*dxhat - sum(dxhat) - M/(M-1) * xhat*sum(dxhat*xhat))")
        out.append(
            _wrap(
                "Where the n/(n-1) comes from: the mean path (steps 2 and 1) still divides by "
                "M, but the variance path (steps 4 and 3) now divides by M - 1. Taking ivar / M "
                "out of both leaves M/(M-1) on the variance term. This is seed 000's final "
                "formula. It is exact for this variance and wrong for the biased one that "
                "seed 000's own forward pass uses."
            )
        )
    else:
        out.append("  dx = (ivar / M) * (M*dxhat - sum(dxhat) - xhat * sum(dxhat * xhat))")
        if ex.op == "batch_norm":
            out.append("  (for batch norm: dx = gamma*ivar/M * (M*dout - dbeta - xhat*dgamma))")
    closed = ng.backends.numpy_backend.normalize_backward(ex.dout, cache)
    out.append("  dx =")
    out.append(_array(closed[0]))

    out += ["", "Check: four derivations of the same gradients, max|a - b| / max|b|:"]
    _auto_out, xt, gt, bt = ex.autodiff()
    f = ex.forward_fn()
    inputs = {"x": ex.x, "gamma": ex.gamma, "beta": ex.beta}
    numeric = [numerical_gradient(f, inputs, k, ex.dout) for k in inputs]
    rows = [
        ("staged (above)", (dx, dgamma, dbeta), 1e-10),
        ("automatic (normgrad.autodiff)", (xt.grad, gt.grad, bt.grad), 1e-10),
        ("numerical (central differences)", numeric, 1e-6),
    ]
    all_ok = True
    for label, grads, tol in rows:
        err = max(max_rel_error(a, b) for a, b in zip(grads, closed, strict=True))
        ok = err <= tol
        all_ok &= ok
        out.append(f"  {label:<34} vs closed form   {err:8.1e}  {'agree' if ok else 'DIFFER'}")
    out.append("")
    out.append(
        "All four agree." if all_ok else "The derivations DIFFER: this is a bug in normgrad."
    )
    return "\n".join(out)
