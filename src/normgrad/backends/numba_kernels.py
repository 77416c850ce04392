"""Fused normalization kernels (Numba): batch norm on a per-channel view ``(A, C, B)`` of x,
the per-sample norms on a per-row view ``(R, K, S)``.

Any batch-norm layout is a view ``(A, C, B)`` with the channel in the middle: A is the
product of the axes before the channel axis and B of those after it. (N, D) and NHWC are
``(N*H*W, C, 1)``; NCHW is ``(N, C, H*W)``. Statistics are per channel over A and B.

Memory traffic is what costs (docs/design.md §11), so each pass reads x once:

- ``stats``: per channel, sums of ``x - K`` and ``(x - K)^2`` in float64 with a per-channel
  shift K (the channel's first value). Shifting by a value near the mean keeps the variance
  exact when the mean dwarfs the spread, where ``E[x^2] - E[x]^2`` would fail. The
  accumulators are float64, so float32 sums over 2^20 rows do not drift.
- ``affine``: ``y = (x - mean_c) * scale_c + beta_c``, one read and one write.
- ``grad_sums``: ``sum(dy)`` and ``sum(dy * (x - mean))`` per channel, one read of each.
- ``grad_input``: ``dx = p_c * dy + q_c * (x - mean_c) + r_c``, one read of each and one write.

x - mean is formed in every pass rather than folded into a constant: in float32 with a mean
of 1e3, ``x * q - mean * q`` would lose three digits to cancellation.

Each kernel splits A into chunks across threads; every thread keeps its own per-channel
accumulators, which are added at the end (float64, so the order of addition barely matters).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

CACHE = True  # numba's on-disk cache: a second process does not recompile


def _chunks(a: int) -> int:
    return max(1, min(a, 4 * numba.get_num_threads()))


def _stats_py(x, shift, nchunks):
    a_len, c_len, b_len = x.shape
    s1 = np.zeros((nchunks, c_len))
    s2 = np.zeros((nchunks, c_len))
    step = (a_len + nchunks - 1) // nchunks
    for t in prange(nchunks):
        for a in range(t * step, min(a_len, (t + 1) * step)):
            for c in range(c_len):
                k = shift[c]
                acc1 = 0.0
                acc2 = 0.0
                for b in range(b_len):
                    d = np.float64(x[a, c, b]) - k
                    acc1 += d
                    acc2 += d * d
                s1[t, c] += acc1
                s2[t, c] += acc2
    return s1.sum(axis=0), s2.sum(axis=0)


def _affine_py(x, mean, scale, beta, out, nchunks):
    a_len, c_len, b_len = x.shape
    step = (a_len + nchunks - 1) // nchunks
    for t in prange(nchunks):
        for a in range(t * step, min(a_len, (t + 1) * step)):
            for c in range(c_len):
                m = mean[c]
                s = scale[c]
                h = beta[c]
                for b in range(b_len):
                    out[a, c, b] = (x[a, c, b] - m) * s + h


def _grad_sums_py(dy, x, mean, nchunks):
    a_len, c_len, b_len = x.shape
    s_dy = np.zeros((nchunks, c_len))
    s_dyx = np.zeros((nchunks, c_len))
    step = (a_len + nchunks - 1) // nchunks
    for t in prange(nchunks):
        for a in range(t * step, min(a_len, (t + 1) * step)):
            for c in range(c_len):
                m = mean[c]
                acc1 = 0.0
                acc2 = 0.0
                for b in range(b_len):
                    g = np.float64(dy[a, c, b])
                    acc1 += g
                    acc2 += g * (np.float64(x[a, c, b]) - m)
                s_dy[t, c] += acc1
                s_dyx[t, c] += acc2
    return s_dy.sum(axis=0), s_dyx.sum(axis=0)


def _grad_input_py(dy, x, mean, kp, kq, kr, out, nchunks):
    a_len, c_len, b_len = x.shape
    step = (a_len + nchunks - 1) // nchunks
    for t in prange(nchunks):
        for a in range(t * step, min(a_len, (t + 1) * step)):
            for c in range(c_len):
                m = mean[c]
                p = kp[c]
                q = kq[c]
                r = kr[c]
                for b in range(b_len):
                    out[a, c, b] = p * dy[a, c, b] + q * (x[a, c, b] - m) + r


# Channels-last views have B == 1: their inner loop must run over the channels, which are
# contiguous, so that it vectorizes; these are the same passes written for (A, C).


def _stats2_py(x, shift, nchunks):
    a_len, c_len = x.shape
    s1 = np.zeros((nchunks, c_len))
    s2 = np.zeros((nchunks, c_len))
    step = (a_len + nchunks - 1) // nchunks
    for t in prange(nchunks):
        acc1 = np.zeros(c_len)
        acc2 = np.zeros(c_len)
        for a in range(t * step, min(a_len, (t + 1) * step)):
            for c in range(c_len):
                d = np.float64(x[a, c]) - shift[c]
                acc1[c] += d
                acc2[c] += d * d
        s1[t, :] = acc1
        s2[t, :] = acc2
    return s1.sum(axis=0), s2.sum(axis=0)


def _affine2_py(x, mean, scale, beta, out, nchunks):
    a_len, c_len = x.shape
    step = (a_len + nchunks - 1) // nchunks
    for t in prange(nchunks):
        for a in range(t * step, min(a_len, (t + 1) * step)):
            for c in range(c_len):
                out[a, c] = (x[a, c] - mean[c]) * scale[c] + beta[c]


def _grad_sums2_py(dy, x, mean, nchunks):
    a_len, c_len = x.shape
    s_dy = np.zeros((nchunks, c_len))
    s_dyx = np.zeros((nchunks, c_len))
    step = (a_len + nchunks - 1) // nchunks
    for t in prange(nchunks):
        acc1 = np.zeros(c_len)
        acc2 = np.zeros(c_len)
        for a in range(t * step, min(a_len, (t + 1) * step)):
            for c in range(c_len):
                g = np.float64(dy[a, c])
                acc1[c] += g
                acc2[c] += g * (np.float64(x[a, c]) - mean[c])
        s_dy[t, :] = acc1
        s_dyx[t, :] = acc2
    return s_dy.sum(axis=0), s_dyx.sum(axis=0)


def _grad_input2_py(dy, x, mean, kp, kq, kr, out, nchunks):
    a_len, c_len = x.shape
    step = (a_len + nchunks - 1) // nchunks
    for t in prange(nchunks):
        for a in range(t * step, min(a_len, (t + 1) * step)):
            for c in range(c_len):
                out[a, c] = kp[c] * dy[a, c] + kq[c] * (x[a, c] - mean[c]) + kr[c]


# Each kernel is compiled twice: a parallel version for large arrays and a serial one for
# small ones, where starting the thread pool would cost more than the work (about 0.5 ms
# a call on the 2-core machine, against microseconds for a 60 x 100 batch).
PARALLEL_MIN_SIZE = 1 << 16


def _variants(fn):
    fast = {"reassoc", "contract"}  # let the sum reductions vectorize (float64 accumulators)
    return (
        njit(parallel=True, cache=CACHE, fastmath=fast)(fn),
        njit(cache=CACHE, fastmath=fast)(fn),
    )


_STATS = _variants(_stats_py) + _variants(_stats2_py)
_AFFINE = _variants(_affine_py) + _variants(_affine2_py)
_GRAD_SUMS = _variants(_grad_sums_py) + _variants(_grad_sums2_py)
_GRAD_INPUT = _variants(_grad_input_py) + _variants(_grad_input2_py)


def _pick(variants, x3):
    """(kernel, number of chunks, how to view arrays) for an array of this shape and size."""
    two_d = x3.shape[2] == 1
    serial = x3.size < PARALLEL_MIN_SIZE
    kernel = variants[2 * two_d + serial]
    nchunks = 1 if serial else _chunks(x3.shape[0])

    def view(a):
        return a.reshape(a.shape[0], a.shape[1]) if two_d else a

    return kernel, nchunks, view


def view3(x: np.ndarray, channel_axis: int) -> np.ndarray:
    """x as (A, C, B), C-contiguous (copied if x is not)."""
    shape = x.shape
    a = int(np.prod(shape[:channel_axis], dtype=np.int64))
    b = int(np.prod(shape[channel_axis + 1 :], dtype=np.int64))
    return np.ascontiguousarray(x).reshape(a, shape[channel_axis], b)


def moments(x3: np.ndarray):
    """Per-channel (count, mean, M2) of the (A, C, B) view, in float64."""
    count = x3.shape[0] * x3.shape[2]
    shift = x3[0, :, 0].astype(np.float64)
    kernel, nchunks, view = _pick(_STATS, x3)
    s1, s2 = kernel(view(x3), shift, nchunks)
    mean_shifted = s1 / count
    m2 = np.maximum(s2 - s1 * mean_shifted, 0.0)
    return count, shift + mean_shifted, m2


def affine(x3: np.ndarray, mean, scale, beta) -> np.ndarray:
    """``y = (x - mean) * scale + beta`` per channel, in x's dtype (float32 or float64)."""
    dt = x3.dtype
    out = np.empty(x3.shape, dtype=dt)
    kernel, nchunks, view = _pick(_AFFINE, x3)
    kernel(view(x3), mean.astype(dt), scale.astype(dt), beta.astype(dt), view(out), nchunks)
    return out


def grad_sums(dy3: np.ndarray, x3: np.ndarray, mean: np.ndarray):
    """Per-channel ``sum(dy)`` and ``sum(dy * (x - mean))`` in float64."""
    kernel, nchunks, view = _pick(_GRAD_SUMS, x3)
    return kernel(view(dy3), view(x3), mean.astype(np.float64), nchunks)


def grad_input(dy3, x3, mean, kp, kq, kr) -> np.ndarray:
    """``dx = kp * dy + kq * (x - mean) + kr`` per channel, in x's dtype."""
    dt = x3.dtype
    out = np.empty(x3.shape, dtype=dt)
    consts = [k.astype(dt) for k in (mean, kp, kq, kr)]
    kernel, nchunks, view = _pick(_GRAD_INPUT, x3)
    kernel(view(dy3), view(x3), *consts, view(out), nchunks)
    return out


# --------------------------------------------------------------------------- per-sample norms
# Layer, group and instance norm take their statistics per row of a view (R, K, S) -- R
# rows (samples x groups), each normalized over its K * S values -- while gamma and beta
# vary along K and repeat every G rows: the parameter of element (r, k, s) is
# gamma2[r % G, k]. Layer norm is (N, D, 1) with G = 1; group norm (N*G, C/G, spatial);
# instance norm (N*C, 1, spatial) with G = C.


def _row_stats_py(x, out_mean, out_m2, centered):
    r_len, k_len, s_len = x.shape
    for r in prange(r_len):
        shift = np.float64(x[r, 0, 0]) if centered else 0.0
        acc1 = 0.0
        acc2 = 0.0
        for k in range(k_len):
            for s in range(s_len):
                d = np.float64(x[r, k, s]) - shift
                acc1 += d
                acc2 += d * d
        n = k_len * s_len
        mean_shifted = acc1 / n if centered else 0.0
        out_mean[r] = shift + mean_shifted
        out_m2[r] = max(acc2 - acc1 * mean_shifted, 0.0)


def _row_affine_py(x, mean, inv_std, gamma2, beta2, out):
    r_len, k_len, s_len = x.shape
    groups = gamma2.shape[0]
    for r in prange(r_len):
        m = mean[r]
        rs = inv_std[r]
        gi = r % groups
        for k in range(k_len):
            a = rs * gamma2[gi, k]
            b = beta2[gi, k]
            for s in range(s_len):
                out[r, k, s] = (x[r, k, s] - m) * a + b


def _row_grad_sums_py(dy, x, mean, inv_std, gamma2, s1, s2, dgamma_parts, dbeta_parts, nchunks):
    r_len, k_len, s_len = x.shape
    groups = gamma2.shape[0]
    step = (r_len + nchunks - 1) // nchunks
    for t in prange(nchunks):
        for r in range(t * step, min(r_len, (t + 1) * step)):
            m = mean[r]
            rs = inv_std[r]
            gi = r % groups
            acc1 = 0.0
            acc2 = 0.0
            for k in range(k_len):
                g = np.float64(gamma2[gi, k])
                pg = 0.0  # sum over s of dy * xhat, for dgamma
                pb = 0.0  # sum over s of dy, for dbeta
                for s in range(s_len):
                    d = np.float64(dy[r, k, s])
                    xm = np.float64(x[r, k, s]) - m
                    pg += d * xm
                    pb += d
                acc1 += g * pb
                acc2 += g * pg
                dgamma_parts[t, gi, k] += pg * rs
                dbeta_parts[t, gi, k] += pb
            s1[r] = acc1
            s2[r] = acc2


def _row_grad_input_py(dy, x, mean, kp, kq, kr, gamma2, out):
    r_len, k_len, s_len = x.shape
    groups = gamma2.shape[0]
    for r in prange(r_len):
        m = mean[r]
        p = kp[r]
        q = kq[r]
        o = kr[r]
        gi = r % groups
        for k in range(k_len):
            pg = p * gamma2[gi, k]
            for s in range(s_len):
                out[r, k, s] = pg * dy[r, k, s] + q * (x[r, k, s] - m) + o


# S == 1 (layer norm over a feature axis): the same passes with the inner loop over the
# contiguous K axis, so that it vectorizes.


def _row_stats2_py(x, out_mean, out_m2, centered):
    r_len, k_len = x.shape
    for r in prange(r_len):
        shift = np.float64(x[r, 0]) if centered else 0.0
        acc1 = 0.0
        acc2 = 0.0
        for k in range(k_len):
            d = np.float64(x[r, k]) - shift
            acc1 += d
            acc2 += d * d
        mean_shifted = acc1 / k_len if centered else 0.0
        out_mean[r] = shift + mean_shifted
        out_m2[r] = max(acc2 - acc1 * mean_shifted, 0.0)


def _row_affine2_py(x, mean, inv_std, gamma2, beta2, out):
    r_len, k_len = x.shape
    groups = gamma2.shape[0]
    for r in prange(r_len):
        m = mean[r]
        rs = inv_std[r]
        gi = r % groups
        for k in range(k_len):
            out[r, k] = (x[r, k] - m) * (rs * gamma2[gi, k]) + beta2[gi, k]


def _row_grad_sums2_py(dy, x, mean, inv_std, gamma2, s1, s2, dgamma_parts, dbeta_parts, nchunks):
    r_len, k_len = x.shape
    groups = gamma2.shape[0]
    step = (r_len + nchunks - 1) // nchunks
    for t in prange(nchunks):
        for r in range(t * step, min(r_len, (t + 1) * step)):
            m = mean[r]
            rs = inv_std[r]
            gi = r % groups
            acc1 = 0.0
            acc2 = 0.0
            for k in range(k_len):
                d = np.float64(dy[r, k])
                xm = np.float64(x[r, k]) - m
                g = gamma2[gi, k]
                acc1 += g * d
                acc2 += g * d * xm
                dgamma_parts[t, gi, k] += d * xm * rs
                dbeta_parts[t, gi, k] += d
            s1[r] = acc1
            s2[r] = acc2


def _row_grad_input2_py(dy, x, mean, kp, kq, kr, gamma2, out):
    r_len, k_len = x.shape
    groups = gamma2.shape[0]
    for r in prange(r_len):
        m = mean[r]
        p = kp[r]
        q = kq[r]
        o = kr[r]
        gi = r % groups
        for k in range(k_len):
            out[r, k] = p * gamma2[gi, k] * dy[r, k] + q * (x[r, k] - m) + o


_ROW_STATS = _variants(_row_stats_py) + _variants(_row_stats2_py)
_ROW_AFFINE = _variants(_row_affine_py) + _variants(_row_affine2_py)
_ROW_GRAD_SUMS = _variants(_row_grad_sums_py) + _variants(_row_grad_sums2_py)
_ROW_GRAD_INPUT = _variants(_row_grad_input_py) + _variants(_row_grad_input2_py)


def _row_pick(variants, x3):
    """(kernel, view) for this shape: the 2-D variants when S == 1; serial when small."""
    two_d = x3.shape[2] == 1
    kernel = variants[2 * two_d + (x3.size < PARALLEL_MIN_SIZE)]

    def view(a):
        return a.reshape(a.shape[0], a.shape[1]) if two_d else a

    return kernel, view


def row_moments(x3, centered: bool = True):
    """Per-row mean and M2 of the (R, K, S) view, float64. With ``centered=False`` (RMS
    norm) the mean is 0 and M2 is the plain sum of squares."""
    mean = np.empty(x3.shape[0])
    m2 = np.empty(x3.shape[0])
    kernel, view = _row_pick(_ROW_STATS, x3)
    kernel(view(x3), mean, m2, centered)
    return mean, m2


def row_affine(x3, mean, inv_std, gamma2, beta2):
    dt = x3.dtype
    out = np.empty(x3.shape, dtype=dt)
    kernel, view = _row_pick(_ROW_AFFINE, x3)
    kernel(view(x3), mean, inv_std, gamma2.astype(dt), beta2.astype(dt), view(out))
    return out


def row_grad_sums(dy3, x3, mean, inv_std, gamma2):
    """Per row: sum(dy * g) and sum(dy * g * (x - mean)); per (G, K): dgamma and dbeta."""
    r_len = x3.shape[0]
    serial = x3.size < PARALLEL_MIN_SIZE
    nchunks = 1 if serial else _chunks(r_len)
    s1, s2 = np.empty(r_len), np.empty(r_len)
    dg = np.zeros((nchunks, *gamma2.shape))
    db = np.zeros((nchunks, *gamma2.shape))
    kernel, view = _row_pick(_ROW_GRAD_SUMS, x3)
    kernel(view(dy3), view(x3), mean, inv_std, gamma2.astype(np.float64), s1, s2, dg, db, nchunks)
    return s1, s2, dg.sum(axis=0), db.sum(axis=0)


def row_grad_input(dy3, x3, mean, kp, kq, kr, gamma2):
    dt = x3.dtype
    out = np.empty(x3.shape, dtype=dt)
    consts = [a.astype(dt) for a in (mean, kp, kq, kr, gamma2)]
    kernel, view = _row_pick(_ROW_GRAD_INPUT, x3)
    kernel(view(dy3), view(x3), *consts, view(out))
    return out
