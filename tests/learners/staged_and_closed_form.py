"""A learner whose batchnorm_backward is the staged backward (Kratzert's computational-graph
walk) and whose batchnorm_backward_alt is the closed form (Thorey), as the write-ups have
them (normgrad.reference.writeups; docs/sources.md)."""

from normgrad.reference import writeups


def batchnorm_forward(x, gamma, beta, bn_param):
    mode, eps = bn_param["mode"], bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.9)
    D = x.shape[1]
    running_mean = bn_param.get("running_mean", 0.0 * x[0])
    running_var = bn_param.get("running_var", 0.0 * x[0])
    if mode == "train":
        out, cache = writeups.graph_walk_forward(x, gamma, beta, eps)
        xhat, gamma, xmu, ivar, sqrtvar, var, eps = cache
        running_mean = momentum * running_mean + (1 - momentum) * x.mean(axis=0)
        running_var = momentum * running_var + (1 - momentum) * var
    else:
        out = gamma * (x - running_mean) / (running_var + eps) ** 0.5 + beta
        cache = None
    bn_param["running_mean"], bn_param["running_var"] = running_mean, running_var
    assert out.shape[1] == D
    return out, cache


def batchnorm_backward(dout, cache):
    return writeups.graph_walk_backward(dout, cache)


def batchnorm_backward_alt(dout, cache):
    return writeups.closed_form_backward(dout, cache)
