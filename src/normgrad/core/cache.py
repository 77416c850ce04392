"""What a forward pass keeps for its backward pass, and the checks on what comes back.

A cache is made by one backend (:mod:`normgrad.backends`) and carries that backend, so the
backward always runs on the forward's implementation. Each backend has its own cache class,
holding what it needs and nothing else: the NumPy backend keeps ``xhat``; the fused Numba
backend keeps x as its kernels saw it and recomputes ``xhat`` when asked. Caches are
immutable in fact: frozen dataclasses whose arrays are read-only.

A cache that refers to the caller's x (rather than to a copy of its own) also keeps a
*fingerprint* of x's bits taken in the forward pass; the backward takes it again and raises
:class:`InputModifiedError` if x was written in between, on every backend alike, as
PyTorch does. Without it the fused backward would silently compute the gradient of the new
x with the old statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from normgrad.core.layout import NormLayout
from normgrad.core.validate import as_float_array


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """float16 is computed in float32; float32 and float64 in their own type."""
    return np.dtype(np.float32) if dtype == np.float16 else np.dtype(dtype)


def read_only(a: np.ndarray | None) -> np.ndarray | None:
    """``a`` (or a view of it) that cannot be written through; the caller's array keeps
    its own flags."""
    if a is None:
        return None
    view = a.view()
    view.flags.writeable = False
    return view


@dataclass(frozen=True, eq=False, kw_only=True)
class NormCache:
    """The part of a cache every backend shares.

    Arrays are in the layout's *view* of x (``layout.work_shape``); the per-group statistics
    are float64 of shape ``layout.stats_shape``; every array is read-only.

    Attributes:
        layout: which axes were reduced and how gamma/beta broadcast.
        backend: the backend object that made the cache and runs its backward.
        training: True if batch statistics were used (their gradient flows back to x);
            False for eval-mode batch norm, where mean and var are constants.
        bessel: True if the variance was divided by M - 1 instead of M.
        eps: added to the variance under the square root.
        mean: the mean used (batch or running), float64, keepdims; zeros for RMS norm.
        var: the variance used (biased or Bessel batch variance, or running; the mean
            square for RMS norm), float64.
        inv_std: ``1 / sqrt(var + eps)``, float64.
        gamma: gamma reshaped to ``layout.param_bcast`` in the compute dtype, or None.
        has_beta: whether a beta was given (else dbeta is None).
        x_dtype: dtype of x, and of dx.
        param_dtype: dtype of gamma (or beta), and of dgamma/dbeta.
        comm: the communicator the statistics were synchronized over, or None.
        global_count: M over all ranks when synchronized (see ``count``).
        source: the caller's x (a read-only view) when the backward must check that it
            was not written since the forward; None when the cache owns all it reads.
        source_fingerprint: :func:`fingerprint` of ``source`` at forward time.
    """

    layout: NormLayout
    backend: object
    training: bool
    bessel: bool
    eps: float
    mean: np.ndarray
    var: np.ndarray
    inv_std: np.ndarray
    gamma: np.ndarray | None
    has_beta: bool
    x_dtype: np.dtype
    param_dtype: np.dtype
    comm: object = None
    global_count: int | None = None
    source: np.ndarray | None = None
    source_fingerprint: int | bytes | None = None

    def __post_init__(self) -> None:
        for name in ("mean", "var", "inv_std", "gamma", "source"):
            object.__setattr__(self, name, read_only(getattr(self, name)))

    @property
    def count(self) -> int:
        """M: values per group, over every rank when the statistics were synchronized."""
        return self.layout.count if self.global_count is None else self.global_count

    @property
    def op(self) -> str:
        return self.layout.op

    @property
    def compute_dtype(self) -> np.dtype:
        return compute_dtype(self.x_dtype)

    @property
    def xhat(self) -> np.ndarray:
        """``(x - mean) * inv_std`` in the view's shape and the compute dtype (read-only)."""
        raise NotImplementedError

    def fingerprint_now(self) -> int | bytes:
        """The fingerprint of ``source`` as it is now, as the forward took it."""
        return fingerprint(self.source)

    def check_source(self, now: int | bytes | None = None) -> None:
        """Raise :class:`InputModifiedError` if the caller's x changed since the forward.

        ``now`` is x's fingerprint if the caller already took it (a fused kernel does, in
        the pass that reads x anyway); otherwise it is taken here.
        """
        if self.source is None:
            return
        if now is None:
            now = self.fingerprint_now()
        if now != self.source_fingerprint:
            raise InputModifiedError(
                f"x (shape {self.layout.x_shape}) was modified after {self.op}_forward and "
                f"before its backward: the cache refers to x, not to a copy, so the gradient "
                f"would be that of different values. Run the forward again on the new x, or "
                f"pass x.copy() to the forward if x must change in between."
            )


class InputModifiedError(ValueError):
    """x was written between a forward pass and the backward that uses its cache."""


_FINGERPRINT_BLOCK = 1 << 14
#: The constants of the fingerprint's mixing (those of SplitMix64).
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
MIX_MULTIPLIER = np.uint64(0xBF58476D1CE4E5B9)
MIX_SHIFT = np.uint64(31)
_POSITIONS = np.arange(_FINGERPRINT_BLOCK, dtype=np.uint64) * GOLDEN


#: Arrays up to this many bytes are "fingerprinted" by a copy of their bytes: comparing
#: them takes about a microsecond, where the mixing below costs several.
EXACT_BYTES = 1 << 16


def fingerprint(a: np.ndarray) -> int | bytes:
    """A fingerprint of ``a``'s values, in which every bit and its place count: its bytes
    in C order for arrays of up to :data:`EXACT_BYTES`, else a 64-bit integer.

    a's bytes in C order are read as 64-bit words ``w`` (the last padded with zeros), in
    blocks p of 2^14 words, j the place in the block::

        v = (w xor j * 0x9E3779B97F4A7C15) * 0xBF58476D1CE4E5B9     (mod 2^64)
        fingerprint = sum_p (2p + 1) * sum_j (v xor (v >> 31))        (mod 2^64)

    Each term is a bijection of its word, so any one changed word changes its block's sum
    (and an odd weight keeps it changed); the mixing makes changes of many words (``x *=
    2``, a permutation) cancel with probability about 2^-64. One read of ``a`` in blocks
    (about 4 ms per 16 MB on one core), no temporary larger than a block.
    """
    if a.nbytes <= EXACT_BYTES:
        return a.tobytes()
    raw = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    whole = raw.size // 8
    words = raw[: 8 * whole].view(np.uint64)
    if raw.size > 8 * whole:  # the last bytes, padded with zeros to one more word
        last = np.zeros(8, np.uint8)
        last[: raw.size - 8 * whole] = raw[8 * whole :]
        tail = last.view(np.uint64)
    else:
        tail = words[:0]
    total = 0
    t = np.empty(_FINGERPRINT_BLOCK, np.uint64)
    u = np.empty(_FINGERPRINT_BLOCK, np.uint64)
    blocks = [words[i : i + _FINGERPRINT_BLOCK] for i in range(0, whole, _FINGERPRINT_BLOCK)]
    if tail.size:
        if blocks and blocks[-1].size < _FINGERPRINT_BLOCK:
            blocks[-1] = np.concatenate([blocks[-1], tail])  # at most one block copied
        else:
            blocks.append(tail)
    for p, block in enumerate(blocks):
        n = block.size
        tt, uu = t[:n], u[:n]
        np.bitwise_xor(block, _POSITIONS[:n], out=tt)
        np.multiply(tt, MIX_MULTIPLIER, out=tt)
        np.right_shift(tt, MIX_SHIFT, out=uu)
        np.bitwise_xor(tt, uu, out=tt)
        total += (2 * p + 1) * int(np.add.reduce(tt))
    return total & 0xFFFFFFFFFFFFFFFF


def check_cache(cache: object, op: str | None) -> NormCache:
    """The cache must be ours, and from the op whose backward is being called."""
    if not isinstance(cache, NormCache):
        raise TypeError(
            f"cache must be the cache returned by a normgrad forward function; "
            f"got {type(cache).__name__}"
        )
    if op is not None and cache.op != op:
        raise ValueError(
            f"cache comes from {cache.op}_forward, not {op}_forward: "
            f"pass it to {cache.op}_backward instead"
        )
    return cache


def check_dy(dy: object, cache: NormCache) -> np.ndarray:
    """dy as an array of the forward output's shape, viewed in the layout's work shape."""
    dy = as_float_array("dy", dy)
    if dy.shape != cache.layout.x_shape:
        raise ValueError(
            f"dy must have the shape of the forward output, {cache.layout.x_shape}; "
            f"got shape {dy.shape}"
        )
    return dy.reshape(cache.layout.work_shape)


# --------------------------------------------------------------------------- shared reductions
# Used by every backend's backward and by the staged backward.

ACC = np.float64  # accumulator dtype for every reduction


class Moments(NamedTuple):
    """Per-group count, mean and sum of squared deviations (M2), plus the centred input.

    (count, mean, M2) is the triple Chan's parallel formula combines, which is how
    synchronized batch norm merges statistics across processes. ``xmu`` is None where a
    backend does not form it.
    """

    count: int
    mean: np.ndarray  # float64, keepdims
    m2: np.ndarray  # float64, keepdims
    xmu: np.ndarray | None  # x - mean, compute dtype, the view's shape


def sum_r(a: np.ndarray, cache: NormCache) -> np.ndarray:
    """Sum over the reduced axes, accumulated in float64, returned in the compute dtype."""
    s = np.sum(a, axis=cache.layout.reduce_axes, keepdims=True, dtype=ACC)
    return s.astype(cache.compute_dtype)


def param_grads(dyw: np.ndarray, cache: NormCache):
    """``dgamma = sum(dy * xhat)`` and ``dbeta = sum(dy)`` over every non-parameter axis."""
    layout = cache.layout

    def reduce(a):
        s = np.sum(a, axis=layout.param_sum_axes, keepdims=True, dtype=ACC)
        return s.reshape(layout.param_shape).astype(cache.param_dtype)

    dgamma = None if cache.gamma is None else reduce(dyw * cache.xhat)
    dbeta = reduce(dyw) if cache.has_beta else None
    return dgamma, dbeta
