"""Fused normalization kernels (Numba): batch norm on a per-channel view ``(A, C, B)`` of x,
the per-sample norms on a per-row view ``(R, K, S)``.

Any batch-norm layout is a view ``(A, C, B)`` with the channel in the middle: A is the
product of the axes before the channel axis and B of those after it. (N, D) and NHWC are
``(N*H*W, C, 1)``; NCHW is ``(N, C, H*W)``. Statistics are per channel over A and B.

Memory traffic is what costs (docs/design.md §11). Where a reduction group fits in a
core's cache, a kernel *sweeps* it: one thread takes the group's statistics and, while
the group is still in cache, normalizes it (forward: read x, write y), or takes its two
sums and then dx (backward: read x and dy, write dx) -- 5 transfers of x in a training
step. The groups are a channel of an NCHW view (``_ch_*``) and a row of the per-sample
view (``_row_*``). A sweep is right whether or not the group fits; where it does not, the
group is simply read twice from memory. The columns of an ``(A, C)`` view are taken in two
streaming passes (``_stats2``/``_affine*``, ``_sums2``/``_dx2``): 8 transfers.

Precision (docs/design.md §10): the statistics accumulate in float64 around a per-group
shift K (the group's first value), so the variance stays exact when the mean dwarfs the
spread and no square can overflow for finite float32 input; every element-wise result is
computed in float64 from x and the float64 mean and rounded once to x's dtype, so float32
outputs are within about half an ulp of the float64 result.

Determinism: a group's sums are taken by one thread in a fixed order, and where groups are
split (the two-pass kernels, the per-sample norms' dgamma) it is into a fixed number of
chunks set by the shape alone (:func:`_chunks`, never the thread count) added in order: the
same bits at any thread count.

Every kernel that reads x in the pass that also checks it takes x's *fingerprint*
``sum_e bits(x_e) * (2e + 1) mod 2^64`` over x's flat index e (:func:`fingerprint`), so the
backward can tell that x was not written since the forward at no cost in memory traffic.
"""

from __future__ import annotations

import math
import types as types_module

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic

# The fingerprint's mixing constants (SplitMix64's), defined once with the NumPy one.
from normgrad.core.cache import GOLDEN, MIX_MULTIPLIER, MIX_SHIFT

CACHE = True  # numba's on-disk cache: a second process does not recompile
#: Parts a reduction is split into where one group is shared by several threads: a number
#: set by the shape alone, so that the order of the additions does not depend on the thread
#: count.
NCHUNKS = 16


@intrinsic
def _fma(typingctx, a, b, c):
    """``a * b + c`` in float64 rounded once (LLVM's llvm.fma; one instruction on x86-64
    with FMA3, and it vectorizes)."""
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return sig, codegen


@njit(inline="always", cache=CACHE)
def _mix(bits, e):
    """Element e's term of the fingerprint (see :func:`fingerprint`)."""
    v = (np.uint64(bits) ^ (np.uint64(e) * GOLDEN)) * MIX_MULTIPLIER
    return v ^ (v >> MIX_SHIFT)


@njit(inline="always", cache=CACHE)
def _group_statistics(sum_d, sum_d2, shift, n, div, eps, centered):
    """A group's ``(mean, m2, inv_std)`` from the sums of ``d = x - shift`` and of ``d^2``
    over its n values: taken around a value of the group, M2 stays exact when the mean
    dwarfs the spread. Without centring (RMS norm, shift 0) the mean is 0 and M2 the sum of
    squares; ``div`` is M or M - 1."""
    mean_shifted = sum_d / n if centered else 0.0
    m2 = max(sum_d2 - sum_d * mean_shifted, 0.0)
    return shift + mean_shifted, m2, 1.0 / np.sqrt(m2 / div + eps)


@njit(cache=CACHE)
def _statistics_into(sum_d, sum_d2, shift, n, div, eps, mean, m2, inv_std):
    """:func:`_group_statistics` per channel, for the sums of the two-pass forward."""
    for c in range(mean.size):
        mean[c], m2[c], inv_std[c] = _group_statistics(
            sum_d[c], sum_d2[c], np.float64(shift[c]), n, div, eps, True
        )


def _chunks(n: int) -> int:
    """Chunks for n rows: at most NCHUNKS, and at least 64 rows each, so that the
    per-chunk float64 partial sums (a row's worth each, twice) stay within a sixteenth of
    x's size and the fused path's extra memory within its outputs."""
    return max(1, min(NCHUNKS, n // 64))


# --------------------------------------------------------------------------- batch norm
# NCHW-like views (B > 1): one channel per thread.


def _ch_fwd_py(x, xb, g, beta, eps, div, out, mean_out, m2_out, inv_out, fp_out):
    a_len, c_len, b_len = x.shape
    n = a_len * b_len
    for c in prange(c_len):
        shift = np.float64(x[0, c, 0])
        acc1 = 0.0
        acc2 = 0.0
        h = np.uint64(0)
        for a in range(a_len):
            base = (a * c_len + c) * b_len
            for b in range(b_len):
                d = np.float64(x[a, c, b]) - shift
                acc1 += d
                acc2 += d * d
                h += _mix(xb[a, c, b], base + b)
        mu, m2, r = _group_statistics(acc1, acc2, shift, n, div, eps, True)
        mean_out[c] = mu
        m2_out[c] = m2
        inv_out[c] = r
        fp_out[c] = h
        s = g[c] * r
        t = beta[c]
        for a in range(a_len):
            for b in range(b_len):
                out[a, c, b] = (np.float64(x[a, c, b]) - mu) * s + t


def _ch_bwd_py(dy, x, xb, mean, g, inv, factor, training, dx, sdy_out, sdyx_out, fp_out):
    a_len, c_len, b_len = x.shape
    n = a_len * b_len
    for c in prange(c_len):
        mu = mean[c]
        acc1 = 0.0
        acc2 = 0.0
        h = np.uint64(0)
        for a in range(a_len):
            base = (a * c_len + c) * b_len
            for b in range(b_len):
                d = np.float64(dy[a, c, b])
                acc1 += d
                acc2 += d * (np.float64(x[a, c, b]) - mu)
                h += _mix(xb[a, c, b], base + b)
        sdy_out[c] = acc1
        sdyx_out[c] = acc2
        fp_out[c] = h
        r = inv[c]
        p = g[c] * r
        q = -p * r * r * factor * acc2 / n if training else 0.0
        o = -p * acc1 / n if training else 0.0
        for a in range(a_len):
            for b in range(b_len):
                dx[a, c, b] = p * dy[a, c, b] + q * (np.float64(x[a, c, b]) - mu) + o


# (A, C) views (N, C) and channels-last: two streaming passes, the inner loop over the
# contiguous channels, A split into NCHUNKS chunks each with its own per-channel
# accumulators. A sweep over blocks of columns (a block one cache line wide, all A rows,
# kept in cache between its statistics and its normalization) would move 5 transfers
# instead of 8 where A * 64 bytes fits in cache, but written as a Numba loop it ran 4x
# slower than these passes at (4096, 1024) float32 (24 ms against 5.5 ms forward, one
# thread): the strided rows defeat the prefetcher and the loop did not vectorize.


def _stats2_py(x, shift, nchunks, s1, s2):
    a_len, c_len = x.shape
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


def _sums2_py(dy, x, xb, mean, nchunks, s1, s2, fp_out):
    a_len, c_len = x.shape
    step = (a_len + nchunks - 1) // nchunks
    for t in prange(nchunks):
        acc1 = np.zeros(c_len)
        acc2 = np.zeros(c_len)
        h = np.uint64(0)
        for a in range(t * step, min(a_len, (t + 1) * step)):
            for c in range(c_len):
                d = np.float64(dy[a, c])
                acc1[c] += d
                acc2[c] += d * (np.float64(x[a, c]) - mean[c])
                h += _mix(xb[a, c], a * c_len + c)
        s1[t, :] = acc1
        s2[t, :] = acc2
        fp_out[t] = h


def _dx2_py(dy, x, mean, kp, kq, ko, nchunks, out):
    a_len, c_len = x.shape
    step = (a_len + nchunks - 1) // nchunks
    for t in prange(nchunks):
        for a in range(t * step, min(a_len, (t + 1) * step)):
            for c in range(c_len):
                out[a, c] = kp[c] * dy[a, c] + kq[c] * (np.float64(x[a, c]) - mean[c]) + ko[c]


# y = (x - mean) * scale + beta with known statistics: eval mode, and the second pass of
# the two-pass forward. It takes x's fingerprint too (eval's backward reads x for dgamma).
# For output narrower than float64, (A, C) views use the folded form
# y = fma(x, scale, offset_hi) + offset_lo, with offset_hi + offset_lo = beta - mean * scale
# to twice float64's precision (``_offset_parts``) and offset_lo stored in float32: per
# channel 20 bytes instead of 24, which at C = 1024 lets the parameters and the rows of x
# and y share a 32 KB L1 (measured at (4096, 1024) float32, two threads: 2.12 against
# 0.97 ms). Exactness is kept: the FMA rounds x * scale + offset_hi once, so the value is
# that of (x - mean) * scale + beta with the same rounded scale, and offset_lo restores
# the offset's rounding (a plain x * scale + offset left elements near zero 24 ulp off at
# mean 1e6; this is within half an ulp, as before). float64 output keeps (x - mean) * scale.


def _affine2_py(x, xb, mean, scale, beta, nchunks, out, fp_out):
    a_len, c_len = x.shape
    step = (a_len + nchunks - 1) // nchunks
    for t in prange(nchunks):
        h = np.uint64(0)
        for a in range(t * step, min(a_len, (t + 1) * step)):
            for c in range(c_len):
                out[a, c] = (np.float64(x[a, c]) - mean[c]) * scale[c] + beta[c]
                h += _mix(xb[a, c], a * c_len + c)
        fp_out[t] = h


def _scale_shift2_py(x, xb, scale, offset_hi, offset_lo, nchunks, out, fp_out):
    a_len, c_len = x.shape
    step = (a_len + nchunks - 1) // nchunks
    for t in prange(nchunks):
        h = np.uint64(0)
        for a in range(t * step, min(a_len, (t + 1) * step)):
            for c in range(c_len):
                y = _fma(np.float64(x[a, c]), scale[c], offset_hi[c])
                out[a, c] = y + np.float64(offset_lo[c])
                h += _mix(xb[a, c], a * c_len + c)
        fp_out[t] = h


@njit(cache=CACHE)
def _offset_parts(mean, scale, beta, offset_hi, offset_lo):
    """``beta - mean * scale`` as ``offset_hi + offset_lo``, exact to float64's square: the
    product's rounding error by an FMA, the subtraction's by Knuth's two-sum."""
    for c in range(mean.size):
        p = mean[c] * scale[c]
        p_err = _fma(mean[c], scale[c], -p)  # mean * scale == p + p_err exactly
        t = beta[c] - p
        v = t - beta[c]
        t_err = (beta[c] - (t - v)) + (-p - v)  # beta - p == t + t_err exactly
        offset_hi[c] = t
        offset_lo[c] = t_err - p_err


def _affine3_py(x, xb, mean, scale, beta, nchunks, out, fp_out):
    a_len, c_len, b_len = x.shape
    step = (a_len + nchunks - 1) // nchunks
    for t in prange(nchunks):
        h = np.uint64(0)
        for a in range(t * step, min(a_len, (t + 1) * step)):
            for c in range(c_len):
                m = mean[c]
                s = scale[c]
                o = beta[c]
                base = (a * c_len + c) * b_len
                for b in range(b_len):
                    out[a, c, b] = (np.float64(x[a, c, b]) - m) * s + o
                    h += _mix(xb[a, c, b], base + b)
        fp_out[t] = h


# --------------------------------------------------------------------------- per-sample norms
# Layer, group and instance norm take their statistics per row of a view (R, K, S) -- R
# rows (samples x groups), each normalized over its K * S values -- while gamma and beta
# vary along K and repeat every G rows: the parameter of element (r, k, s) is
# gamma2[r % G, k]. Layer norm is (N, D, 1) with G = 1; group norm (N*G, C/G, spatial);
# instance norm (N*C, 1, spatial) with G = C. RMS norm is layer norm's view, not centred.
# A row is a reduction group: one thread sweeps it.


def _row_fwd3_py(x, xb, gamma2, beta2, eps, div, centered, out, mean_out, m2_out, inv_out, fp_out):
    r_len, k_len, s_len = x.shape
    groups = gamma2.shape[0]
    n = k_len * s_len
    for r in prange(r_len):
        shift = np.float64(x[r, 0, 0]) if centered else 0.0
        acc1 = 0.0
        acc2 = 0.0
        h = np.uint64(0)
        for k in range(k_len):
            base = (r * k_len + k) * s_len
            for s in range(s_len):
                d = np.float64(x[r, k, s]) - shift
                acc1 += d
                acc2 += d * d
                h += _mix(xb[r, k, s], base + s)
        mu, m2, rs = _group_statistics(acc1, acc2, shift, n, div, eps, centered)
        mean_out[r] = mu
        m2_out[r] = m2
        inv_out[r] = rs
        fp_out[r] = h
        gi = r % groups
        for k in range(k_len):
            a = rs * gamma2[gi, k]
            b = beta2[gi, k]
            for s in range(s_len):
                out[r, k, s] = (np.float64(x[r, k, s]) - mu) * a + b


def _row_fwd2_py(x, xb, gamma2, beta2, eps, div, centered, out, mean_out, m2_out, inv_out, fp_out):
    r_len, k_len = x.shape
    groups = gamma2.shape[0]
    for r in prange(r_len):
        shift = np.float64(x[r, 0]) if centered else 0.0
        acc1 = 0.0
        acc2 = 0.0
        h = np.uint64(0)
        base = r * k_len
        for k in range(k_len):
            d = np.float64(x[r, k]) - shift
            acc1 += d
            acc2 += d * d
            h += _mix(xb[r, k], base + k)
        mu, m2, rs = _group_statistics(acc1, acc2, shift, k_len, div, eps, centered)
        mean_out[r] = mu
        m2_out[r] = m2
        inv_out[r] = rs
        fp_out[r] = h
        gi = r % groups
        for k in range(k_len):
            out[r, k] = (np.float64(x[r, k]) - mu) * (rs * gamma2[gi, k]) + beta2[gi, k]


def _row_bwd3_py(dy, x, xb, mean, inv, gamma2, factor, centered, nchunks, dx, dg, db, fp_out):
    r_len, k_len, s_len = x.shape
    groups = gamma2.shape[0]
    n = k_len * s_len
    step = (r_len + nchunks - 1) // nchunks
    for t in prange(nchunks):
        h = np.uint64(0)
        for r in range(t * step, min(r_len, (t + 1) * step)):
            mu = mean[r]
            rs = inv[r]
            gi = r % groups
            acc1 = 0.0  # sum of dxhat = dy * gamma
            acc2 = 0.0  # sum of dxhat * (x - mean)
            for k in range(k_len):
                pg = 0.0  # sum over s of dy * (x - mean), for dgamma
                pb = 0.0  # sum over s of dy, for dbeta
                base = (r * k_len + k) * s_len
                for s in range(s_len):
                    d = np.float64(dy[r, k, s])
                    pg += d * (np.float64(x[r, k, s]) - mu)
                    pb += d
                    h += _mix(xb[r, k, s], base + s)
                g = gamma2[gi, k]
                acc1 += g * pb
                acc2 += g * pg
                dg[t, gi, k] += pg * rs
                db[t, gi, k] += pb
            q = -factor * rs * rs * rs * acc2 / n
            o = -rs * acc1 / n if centered else 0.0
            for k in range(k_len):
                pk = rs * gamma2[gi, k]
                for s in range(s_len):
                    dx[r, k, s] = pk * dy[r, k, s] + q * (np.float64(x[r, k, s]) - mu) + o
        fp_out[t] = h


def _row_bwd2_py(dy, x, xb, mean, inv, gamma2, factor, centered, nchunks, dx, dg, db, fp_out):
    r_len, k_len = x.shape
    groups = gamma2.shape[0]
    step = (r_len + nchunks - 1) // nchunks
    for t in prange(nchunks):
        h = np.uint64(0)
        for r in range(t * step, min(r_len, (t + 1) * step)):
            mu = mean[r]
            rs = inv[r]
            gi = r % groups
            acc1 = 0.0
            acc2 = 0.0
            base = r * k_len
            for k in range(k_len):
                d = np.float64(dy[r, k])
                xm = np.float64(x[r, k]) - mu
                g = gamma2[gi, k]
                acc1 += g * d
                acc2 += g * d * xm
                dg[t, gi, k] += d * xm * rs
                db[t, gi, k] += d
                h += _mix(xb[r, k], base + k)
            q = -factor * rs * rs * rs * acc2 / k_len
            o = -rs * acc1 / k_len if centered else 0.0
            for k in range(k_len):
                dx[r, k] = (rs * gamma2[gi, k]) * dy[r, k] + q * (np.float64(x[r, k]) - mu) + o
        fp_out[t] = h


# Each kernel is compiled twice: a parallel version for large arrays and a serial one for
# small ones, where starting the thread pool would cost more than the work. Both run the
# same loops in the same order, so they give the same bits.
PARALLEL_MIN_SIZE = 1 << 16


def _variants(fn):
    """``(parallel, serial)`` compilations of ``fn``. The serial one is compiled from a
    copy of ``fn`` under its own name: Numba's on-disk cache is keyed by the function's
    name and signature, not by ``parallel``, so two compilations of one function share a
    cache entry and whichever was compiled first is loaded for both (measured: the
    "parallel" kernels of a warm cache ran on one thread, 341 us against 170 us at
    (1024, 1024) float32 on two cores)."""
    fast = {"reassoc", "contract"}  # let the sum reductions vectorize (float64 accumulators)
    serial = types_module.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial")
    serial.__qualname__ = fn.__qualname__ + "_serial"
    return (
        njit(parallel=True, cache=CACHE, fastmath=fast)(fn),
        njit(cache=CACHE, fastmath=fast)(serial),
    )


_KERNELS = {
    name: _variants(fn)
    for name, fn in {
        "ch_fwd": _ch_fwd_py, "ch_bwd": _ch_bwd_py, "stats2": _stats2_py, "sums2": _sums2_py,
        "dx2": _dx2_py, "affine2": _affine2_py, "scale_shift2": _scale_shift2_py,
        "affine3": _affine3_py, "row_fwd3": _row_fwd3_py,
        "row_fwd2": _row_fwd2_py, "row_bwd3": _row_bwd3_py, "row_bwd2": _row_bwd2_py,
    }.items()
}  # fmt: skip


def _kernel(name: str, size: int):
    parallel, serial = _KERNELS[name]
    return serial if size < PARALLEL_MIN_SIZE else parallel


def _bits(a: np.ndarray) -> np.ndarray:
    """The same memory as unsigned integers of a's width (for the fingerprint)."""
    return a.view(np.uint32 if a.itemsize == 4 else np.uint64)


def _total(parts: np.ndarray) -> int:
    """The fingerprint from its parts: their sum modulo 2^64 (any order gives the same)."""
    return int(np.add.reduce(parts, dtype=np.uint64))


def fingerprint(a: np.ndarray) -> int:
    """The kernels' fingerprint of x, computed by NumPy in blocks (for the staged backward,
    which reads x outside the kernels). Over x's C-order flat index e, with ``b_e`` the
    element's bits as an unsigned integer::

        v_e = (b_e xor e * 0x9E3779B97F4A7C15) * 0xBF58476D1CE4E5B9    (mod 2^64)
        fingerprint = sum_e (v_e xor (v_e >> 31))                      (mod 2^64)

    Each term is a bijection of ``b_e``, so one changed element always changes the sum;
    changes of many (``x *= 2``, a permutation) cancel with probability about 2^-64. The
    sum does not depend on its order: the parallel kernels take it in the passes that
    read x anyway, with no extra memory traffic.
    """
    bits = _bits(np.ascontiguousarray(a)).reshape(-1)
    block = 1 << 14
    total = 0
    positions = np.arange(block, dtype=np.uint64) * GOLDEN
    for start in range(0, bits.size, block):
        n = min(block, bits.size - start)
        offset = np.uint64(start * int(GOLDEN) % 2**64)
        v = bits[start : start + n].astype(np.uint64) ^ (positions[:n] + offset)
        v *= MIX_MULTIPLIER
        v ^= v >> MIX_SHIFT
        total += int(np.add.reduce(v))
    return total & 0xFFFFFFFFFFFFFFFF


# --------------------------------------------------------------------------- entry points


#: An (A, C) view with few channels (channels-last: C = 64) is taken as (A / k, k * C), k
#: rows of x per row of the kernels' view, so that the inner loop runs over about this many
#: columns: with 64 a row's loop overhead costs as much as its arithmetic (measured at
#: (100352, 64) float32, caches cold: a training step 7.8 ms as (A, 64), 6.2 as (A/4, 256)).
#: The flat index of every element, and so the fingerprint, is the same in either view.
WIDE_COLUMNS = 256


def _widening(a_len: int, c_len: int) -> int:
    """k for :data:`WIDE_COLUMNS`: a power of two dividing a_len, set by the shape alone
    (so the order of the sums, and the bits, do not depend on anything else)."""
    k = 1
    while 2 * k * c_len <= WIDE_COLUMNS and a_len % (2 * k) == 0:
        k *= 2
    return k


def _tile(a: np.ndarray, k: int) -> np.ndarray:
    """Per-channel ``a`` repeated for the k rows of x in a widened row (a itself for k = 1:
    np.tile is a dozen Python calls, which a small array's call notices)."""
    return a if k == 1 else np.tile(a, k)


def _per_channel(parts: np.ndarray, k: int) -> np.ndarray:
    """Per-chunk sums over the widened view's k * C columns -> per-channel sums (C,)."""
    return parts.sum(axis=0).reshape(k, -1).sum(axis=0)


def view3(x: np.ndarray, channel_axis: int) -> np.ndarray:
    """x as (A, C, B), C-contiguous (copied if x is not)."""
    shape = x.shape
    a = math.prod(shape[:channel_axis])
    b = math.prod(shape[channel_axis + 1 :])
    return np.ascontiguousarray(x).reshape(a, shape[channel_axis], b)


def bn_forward(x3, g, beta, eps, div):
    """Training forward of the (A, C, B) view: ``(y, mean, m2, inv_std, fingerprint)``."""
    a_len, c_len, b_len = x3.shape
    dt = x3.dtype
    out = np.empty(x3.shape, dt)
    mean, m2, inv = np.empty(c_len), np.empty(c_len), np.empty(c_len)
    if b_len > 1:
        fp = np.empty(c_len, np.uint64)
        kernel = _kernel("ch_fwd", x3.size)
        kernel(x3, _bits(x3), g, beta, eps, div, out, mean, m2, inv, fp)
        return out, mean, m2, inv, _total(fp)
    k = _widening(a_len, c_len)
    x2 = x3.reshape(a_len // k, k * c_len)
    nchunks = _chunks(x2.shape[0])
    shift = x2[0, :c_len]  # in x's own dtype: exact, and half the bytes of float64
    s1, s2 = np.empty((nchunks, k * c_len)), np.empty((nchunks, k * c_len))
    _kernel("stats2", x3.size)(x2, _tile(shift, k), nchunks, s1, s2)
    _statistics_into(_per_channel(s1, k), _per_channel(s2, k), shift, a_len, div, eps,
                     mean, m2, inv)  # fmt: skip
    fp = bn_affine_into(x3, mean, g * inv, beta, out)
    return out, mean, m2, inv, fp


def bn_affine_into(x3, mean, scale, beta, out) -> int:
    """``out = (x - mean) * scale + beta`` per channel; returns x's fingerprint."""
    a_len, c_len, b_len = x3.shape
    if b_len > 1:
        nchunks = _chunks(a_len)
        fp = np.empty(nchunks, np.uint64)
        _kernel("affine3", x3.size)(x3, _bits(x3), mean, scale, beta, nchunks, out, fp)
        return _total(fp)
    k = _widening(a_len, c_len)
    shape2 = (a_len // k, k * c_len)
    x2, out2 = x3.reshape(shape2), out.reshape(shape2)
    nchunks = _chunks(shape2[0])
    fp = np.empty(nchunks, np.uint64)
    if out.dtype != np.float64:  # the folded form (see _scale_shift2_py)
        offset_hi, offset_lo = np.empty(c_len), np.empty(c_len)
        _offset_parts(mean, scale, beta, offset_hi, offset_lo)
        wide = (_tile(scale, k), _tile(offset_hi, k), _tile(offset_lo.astype(np.float32), k))
        _kernel("scale_shift2", x3.size)(x2, _bits(x2), *wide, nchunks, out2, fp)
    else:
        wide = (_tile(mean, k), _tile(scale, k), _tile(beta, k))
        _kernel("affine2", x3.size)(x2, _bits(x2), *wide, nchunks, out2, fp)
    return _total(fp)


def bn_backward(dy3, x3, mean, g, inv, factor, training):
    """``(dx, sum(dy), sum(dy * (x - mean)), fingerprint)`` of the (A, C, B) view."""
    a_len, c_len, b_len = x3.shape
    dx = np.empty(x3.shape, x3.dtype)
    sdy, sdyx = np.empty(c_len), np.empty(c_len)
    if b_len > 1:
        fp = np.empty(c_len, np.uint64)
        kernel = _kernel("ch_bwd", x3.size)
        kernel(dy3, x3, _bits(x3), mean, g, inv, factor, training, dx, sdy, sdyx, fp)
        return dx, sdy, sdyx, _total(fp)
    k = _widening(a_len, c_len)
    shape2 = (a_len // k, k * c_len)
    x2, dy2, dx2 = x3.reshape(shape2), dy3.reshape(shape2), dx.reshape(shape2)
    nchunks = _chunks(shape2[0])
    s1, s2 = np.empty((nchunks, k * c_len)), np.empty((nchunks, k * c_len))
    fp = np.empty(nchunks, np.uint64)
    _kernel("sums2", x3.size)(dy2, x2, _bits(x2), _tile(mean, k), nchunks, s1, s2, fp)
    sdy, sdyx = _per_channel(s1, k), _per_channel(s2, k)
    p = g * inv
    if training:
        q, o = -p * inv * inv * factor * sdyx / a_len, -p * sdy / a_len
    else:
        q, o = np.zeros(c_len), np.zeros(c_len)
    wide = (_tile(mean, k), _tile(p, k), _tile(q, k), _tile(o, k))
    _kernel("dx2", x3.size)(dy2, x2, *wide, nchunks, dx2)
    return dx, sdy, sdyx, _total(fp)


def rows_forward(x3, gamma2, beta2, eps, div, centered):
    """Per-row forward of the (R, K, S) view: ``(y, mean, m2, inv_std, fingerprint)``."""
    r_len = x3.shape[0]
    out = np.empty(x3.shape, x3.dtype)
    mean, m2, inv = np.empty(r_len), np.empty(r_len), np.empty(r_len)
    fp = np.empty(r_len, np.uint64)
    args = (gamma2, beta2, eps, div, centered)
    if x3.shape[2] == 1:
        x2 = x3.reshape(x3.shape[:2])
        _kernel("row_fwd2", x3.size)(x2, _bits(x2), *args, out.reshape(x2.shape), mean, m2, inv, fp)
    else:
        _kernel("row_fwd3", x3.size)(x3, _bits(x3), *args, out, mean, m2, inv, fp)
    return out, mean, m2, inv, _total(fp)


def rows_backward(dy3, x3, mean, inv, gamma2, factor, centered):
    """``(dx, dgamma2, dbeta2, fingerprint)`` of the (R, K, S) view; dgamma2 and dbeta2 have
    gamma2's shape (G, K)."""
    nchunks = _chunks(x3.shape[0])
    dx = np.empty(x3.shape, x3.dtype)
    dg = np.zeros((nchunks, *gamma2.shape))
    db = np.zeros((nchunks, *gamma2.shape))
    fp = np.empty(nchunks, np.uint64)
    args = (mean, inv, gamma2, factor, centered, nchunks)
    if x3.shape[2] == 1:
        shape2 = x3.shape[:2]
        x2, dy2 = x3.reshape(shape2), dy3.reshape(shape2)
        _kernel("row_bwd2", x3.size)(dy2, x2, _bits(x2), *args, dx.reshape(shape2), dg, db, fp)
    else:
        _kernel("row_bwd3", x3.size)(dy3, x3, _bits(x3), *args, dx, dg, db, fp)
    return dx, dg.sum(axis=0), db.sum(axis=0), _total(fp)
