"""PyTorch's own test inputs: the OpInfo samples of the norm ops (``op_db``) and the
ModuleInfo samples of the norm modules (``module_db``), from ``torch.testing._internal``,
run through normgrad and compared with PyTorch: forward, running statistics, gradients.

Samples outside normgrad's domain (a negative eps, a momentum outside [0, 1] in training,
a 1-D batch-norm input, unbatched instance norm) must be refused with a message naming the
argument; every other sample must agree. Skipped when torch or its test helpers (which
need ``expecttest``) are missing."""

import numpy as np
import pytest

import normgrad as ng
from normgrad import nn
from normgrad.gradcheck import assert_close

torch = pytest.importorskip("torch")
try:
    from torch.testing._internal.common_methods_invocations import op_db
    from torch.testing._internal.common_modules import module_db
except Exception as exc:  # internals move between versions; their import needs expecttest
    pytest.skip(f"torch.testing._internal is not usable here: {exc}", allow_module_level=True)

OPS = {
    "nn.functional.batch_norm": "batch_norm",
    "nn.functional.layer_norm": "layer_norm",
    "nn.functional.group_norm": "group_norm",
    "nn.functional.instance_norm": "instance_norm",
    "nn.functional.rms_norm": "rms_norm",
}
#: Normwise relative error allowed against PyTorch, by dtype.
TOL = {torch.float64: 1e-10, torch.float32: 2e-5}
#: What normgrad refuses that PyTorch's samples contain, by the words of its message.
REFUSED = ("eps must be a positive", "momentum must be in [0, 1]", "x must have shape (N, C")


def _np(t):
    return None if t is None else t.detach().numpy().copy()


def _call(name, sample):
    """``(normgrad op, x, gamma, beta, keywords, running arrays)`` for one OpInfo sample,
    as normgrad's functional API takes it."""
    x, args, kw = sample.input, list(sample.args), dict(sample.kwargs)
    running = None
    if name == "batch_norm":
        rm, rv, weight, bias = (args + [None] * 4)[:4]
        weight, bias = kw.get("weight", weight), kw.get("bias", bias)
        training = kw.get("training", False)  # F.batch_norm's default
        options = {"training": training, "momentum": kw.get("momentum", 0.1),
                   "eps": kw.get("eps", 1e-5)}  # fmt: skip
        if rm is not None:
            running = (_np(rm), _np(rv))
            options |= {"running_mean": running[0], "running_var": running[1]}
    elif name in ("layer_norm", "rms_norm"):
        shape, *rest = args
        weight = rest[0] if rest else kw.get("weight")
        bias = (rest[1] if len(rest) > 1 else kw.get("bias")) if name == "layer_norm" else None
        options = {"normalized_ndim": len(shape), "eps": kw.get("eps")}
        if name == "layer_norm" and options["eps"] is None:
            options["eps"] = 1e-5
    elif name == "group_norm":
        options = {"num_groups": args[0], "eps": kw.get("eps", 1e-5)}
        weight, bias = kw.get("weight"), kw.get("bias")
    else:  # instance_norm: the functional API normalizes; running stats go to nn below
        weight, bias = kw.get("weight"), kw.get("bias")
        options = {"eps": kw.get("eps", 1e-5)}
    return x, weight, bias, options, running


def _in_float64(sample):
    """The sample with every tensor a float64 copy (leaves stay leaves)."""

    def conv(a):
        if isinstance(a, torch.Tensor):
            return a.detach().double().clone().requires_grad_(a.requires_grad)
        return a

    return type(sample)(conv(sample.input), args=tuple(conv(a) for a in sample.args),
                        kwargs={k: conv(v) for k, v in sample.kwargs.items()})  # fmt: skip


def _grads(y, leaves, dy):
    """PyTorch's gradients of sum(y * dy) for the leaves (zeros where none flows)."""
    if not y.numel():
        return [np.zeros(tuple(t.shape)) for t in leaves]
    got = torch.autograd.grad(y, leaves, torch.from_numpy(dy).to(y.dtype), allow_unused=True)
    return [
        np.zeros(tuple(t.shape)) if g is None else _np(g) for g, t in zip(got, leaves, strict=True)
    ]


def _agree(ours, theirs, truth, tol, name):
    """normgrad agrees with PyTorch to ``tol``, or is closer than PyTorch to the float64
    truth (in float32, a value's exact mean is subtracted exactly here and not there)."""
    ours, theirs, truth = (np.asarray(a, np.float64) for a in (ours, theirs, truth))
    if ours.size == 0:
        return
    scale = max(np.abs(truth).max(), np.abs(theirs).max(), 1e-300)
    if np.abs(ours - theirs).max() <= tol * max(scale, 1.0):
        return
    mine, pytorch = np.abs(ours - truth).max(), np.abs(theirs - truth).max()
    assert mine <= max(pytorch, tol * scale), (
        f"{name}: normgrad is {mine:.2e} from the float64 truth, PyTorch {pytorch:.2e}"
    )


def _op_samples(dtype):
    for info in op_db:
        if info.name in OPS and info.variant_test_name == "":
            for i, sample in enumerate(info.sample_inputs("cpu", dtype, requires_grad=True)):
                yield OPS[info.name], i, sample, info


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_opinfo_samples_of_the_norm_ops(dtype):
    counts = {"agreed": 0, "refused": 0}
    rng = np.random.default_rng(0)
    for name, i, sample, info in _op_samples(dtype):
        spec = ng.get_op(name)
        x, weight, bias, options, running = _call(name, sample)
        where = f"{name} sample {i}: x {tuple(x.shape)}, {options}"
        try:
            y, cache = spec.forward(_np(x), _np(weight), _np(bias), **options)
        except (ValueError, TypeError) as exc:
            assert any(words in str(exc) for words in REFUSED), f"{where}: {exc}"
            counts["refused"] += 1
            continue
        # PyTorch on the same sample (it updates its own running tensors in place), and in
        # float64 on the same values, the truth a float32 result is measured against
        truth = _in_float64(sample)
        y64 = info.op(truth.input, *truth.args, **truth.kwargs)
        y_t = info.op(sample.input, *sample.args, **sample.kwargs)
        tol = TOL[dtype]
        _agree(y, _np(y_t), _np(y64), tol, f"{where}: y")
        if running is not None:  # normgrad wrote its copies; PyTorch wrote its own arrays
            for k, stat in enumerate(("running_mean", "running_var")):
                _agree(running[k], _np(sample.args[k]), _np(truth.args[k]), tol, f"{where}: {stat}")
        dy = rng.standard_normal(y.shape).astype(y.dtype)
        ours = spec.backward(dy, cache)
        leaves = [t for t in (x, weight, bias) if t is not None and t.requires_grad]
        theirs = _grads(y_t, leaves, dy)
        x64, w64, b64 = _call(name, truth)[:3]
        exact = _grads(y64, [t for t in (x64, w64, b64) if t is not None and t.requires_grad], dy)
        mine = dict(zip(("x", "gamma", "beta"), ours, strict=True))
        names = [n for n, t in zip(("x", "gamma", "beta"), (x, weight, bias), strict=True)
                 if t is not None and t.requires_grad]  # fmt: skip
        for n, t, t64 in zip(names, theirs, exact, strict=True):
            _agree(mine[n], t, t64, tol, f"{where}: d{n}")
        counts["agreed"] += 1
    assert counts["agreed"] >= 40, counts  # most of PyTorch's samples are in the domain


def _layer(module):
    """normgrad's layer built as the PyTorch module was, its state copied over."""
    cls, dtype = type(module).__name__, np.float64
    has_bias = getattr(module, "bias", None) is not None
    if cls.startswith("BatchNorm"):
        layer = nn.BatchNorm(
            module.num_features, eps=module.eps, momentum=module.momentum, affine=module.affine,
            bias=has_bias or not module.affine, track_running_stats=module.track_running_stats,
            dtype=dtype,
        )  # fmt: skip
    elif cls.startswith("InstanceNorm"):
        layer = nn.InstanceNorm(
            module.num_features, eps=module.eps, momentum=module.momentum, affine=module.affine,
            bias=has_bias or not module.affine, track_running_stats=module.track_running_stats,
            dtype=dtype,
        )  # fmt: skip
    elif cls == "GroupNorm":
        layer = nn.GroupNorm(
            module.num_groups, module.num_channels, eps=module.eps, affine=module.affine,
            bias=has_bias or not module.affine, dtype=dtype,
        )  # fmt: skip
    elif cls == "LayerNorm":
        layer = nn.LayerNorm(module.normalized_shape, eps=module.eps,
                             elementwise_affine=module.elementwise_affine,
                             bias=has_bias or not module.elementwise_affine,
                             dtype=dtype)  # fmt: skip
    else:
        layer = nn.RMSNorm(module.normalized_shape, eps=module.eps,
                           elementwise_affine=module.elementwise_affine, dtype=dtype)  # fmt: skip
    for ours, theirs in (("gamma", "weight"), ("beta", "bias")):
        if ours in layer.params:
            layer.params[ours][...] = _np(getattr(module, theirs))
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        if name in layer.buffers():
            layer.buffers()[name][...] = _np(getattr(module, name))
    return layer


def _module_inputs():
    for info in module_db:
        cls = info.module_cls.__name__
        if "Norm" not in cls or cls == "LocalResponseNorm":
            continue
        for inp in info.module_inputs_func(info, device="cpu", dtype=torch.float64,
                                           requires_grad=True, training=True):  # fmt: skip
            yield info, inp


def test_modulinfo_samples_of_the_norm_modules():
    rng = np.random.default_rng(1)
    counts = {"agreed": 0, "unbatched": 0}
    for info, inp in _module_inputs():
        c = inp.constructor_input
        module = info.module_cls(*c.args, **c.kwargs).double()
        (x,) = inp.forward_input.args
        where = f"{info.module_cls.__name__}{c.args}{c.kwargs or ''} on x {tuple(x.shape)}"
        layer = _layer(module)
        for training in (True, False):
            module.train(training)
            layer.train(training)
            x_np = _np(x)
            try:
                y = layer(x_np)
            except ValueError as exc:  # unbatched (C, *spatial) input: normgrad wants N
                unbatched = "x.shape[1]" in str(exc) or "x must have shape" in str(exc)
                assert "InstanceNorm" in where and unbatched, f"{where}: {exc}"
                counts["unbatched"] += 1
                break
            xt = x.detach().clone().requires_grad_(True)
            y_t = module(xt)
            assert_close(y, _np(y_t), rtol=1e-10, atol=1e-12, name=f"{where} training={training}")
            dy = rng.standard_normal(y.shape)
            dx = layer.backward(dy)
            params = [p for p in (getattr(module, "weight", None), getattr(module, "bias", None))
                      if p is not None]  # fmt: skip
            if y.size:
                grads = torch.autograd.grad(y_t, [xt, *params], torch.from_numpy(dy),
                                            allow_unused=True)  # fmt: skip
            else:
                grads = [torch.zeros_like(t) for t in (xt, *params)]
            assert_close(dx, _np(grads[0]), rtol=1e-10, atol=1e-12, name=f"{where}: dx")
            ours = [layer.grads[k] for k in ("gamma", "beta") if k in layer.grads]
            for mine, theirs in zip(ours, grads[1:], strict=True):
                assert_close(mine, _np(theirs), rtol=1e-10, atol=1e-12, name=f"{where}: dparam")
            for name in ("running_mean", "running_var"):
                if name in layer.buffers():
                    assert_close(layer.buffers()[name], _np(getattr(module, name)), rtol=1e-10,
                                 name=f"{where}: {name}")  # fmt: skip
            counts["agreed"] += 1
    assert counts["agreed"] >= 100 and counts["unbatched"] > 0, counts
