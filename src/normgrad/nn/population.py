"""Inference statistics as the paper computes them: population mean and variance.

Ioffe & Szegedy (2015), Algorithm 2: once the network is trained, process several training
mini-batches ``B`` of size ``m`` with the *training* network (each batch norm layer
normalizing with its batch's own statistics) and, per layer and channel, average::

    E[x]   = E_B[mu_B]
    Var[x] = m / (m - 1) * E_B[sigma_B^2]          (sigma_B^2 the biased batch variance)

The inference network then normalizes with these constants. Running averages with a
momentum (PyTorch's default, and this library's) estimate the same quantities on the fly,
but they lag behind weights that are still moving; the population statistics are those of
the weights as they are now.

:func:`population_statistics` computes them for every :class:`~normgrad.nn.norms.BatchNorm`
of a model and leaves the model as it was; :func:`load_statistics` writes them into the
layers' running buffers (what eval mode normalizes with); :func:`recompute_population_statistics`
does both; :func:`using_statistics` applies them for the length of a ``with`` block and then
puts the running averages back. Batches of different sizes are allowed: each contributes its
own unbiased variance ``m_B / (m_B - 1) * sigma_B^2``, which is Algorithm 2 when every
batch has size ``m``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

import numpy as np

from normgrad.nn.module import Module
from normgrad.nn.norms import BatchNorm

#: Per batch norm layer (by its dotted name in the model): ``(mean, var)``, each ``(C,)``
#: float64.
Statistics = dict[str, tuple[np.ndarray, np.ndarray]]


def batch_norm_layers(model: Module) -> list[tuple[str, BatchNorm]]:
    """The model's batch norm layers that normalize with batch statistics in training
    (a frozen layer uses its running statistics, so it has no population of batches)."""
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, BatchNorm) and not m.running_stats_frozen
    ]


@contextmanager
def batch_statistics_mode(model: Module) -> Iterator[Module]:
    """Within the block the model is the *training* network (training mode: every batch
    norm layer normalizes with its batch's statistics) but no running statistics change;
    afterwards its mode and ``track_running_stats`` flags are as before. What the paper's
    Algorithm 2 runs, and how a network sees its inputs while it trains."""
    layers = batch_norm_layers(model)
    was_training = model.training
    tracking = [layer.track_running_stats for _, layer in layers]
    try:
        model.train()
        for _, layer in layers:
            layer.track_running_stats = False  # batch statistics, no running update
        yield model
    finally:
        model.train(was_training)
        for (_, layer), flag in zip(layers, tracking, strict=True):
            layer.track_running_stats = flag


def population_statistics(model: Module, batches: Iterable[np.ndarray]) -> Statistics:
    """Algorithm 2's ``E[x]`` and ``Var[x]`` of every batch norm layer of ``model``.

    ``batches`` are training mini-batches, each an input the model takes (``(m, features)``
    for a fully connected net), each with ``m >= 2``. The model runs forward on each in
    training mode without updating any running statistics; afterwards its mode, buffers and
    ``track_running_stats`` flags are as before. Returns ``{layer name: (mean, var)}``,
    float64 ``(C,)`` each; ValueError when no batch is given or the model has no batch norm
    layer that uses batch statistics.
    """
    layers = batch_norm_layers(model)
    if not layers:
        raise ValueError("the model has no batch norm layer that normalizes with batch statistics")
    sums = {
        name: [np.zeros(layer.num_features), np.zeros(layer.num_features)] for name, layer in layers
    }
    count = 0
    with batch_statistics_mode(model):
        for batch in batches:
            model.forward(batch)
            for name, layer in layers:
                # (a batch of one value per channel was refused by the forward above)
                mean, var, m = layer.last_batch_statistics()
                sums[name][0] += mean
                sums[name][1] += var * (m / (m - 1))
            count += 1
    if count == 0:
        raise ValueError("population_statistics needs at least one mini-batch; got none")
    return {name: (s_mean / count, s_var / count) for name, (s_mean, s_var) in sums.items()}


def load_statistics(model: Module, stats: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Write ``stats`` (``{layer name: (mean, var)}``) into those layers' ``running_mean``
    and ``running_var``, in place and in the buffers' dtype; ``num_batches_tracked`` is left
    as it is. KeyError naming a layer the model does not have as a batch norm layer."""
    layers = dict(batch_norm_layers(model))
    for name in stats:
        if name not in layers or not layers[name].buffers():
            raise KeyError(f"{name!r} is not a batch norm layer with running statistics")
    for name, (mean, var) in stats.items():
        buffers = layers[name]._buffers
        buffers["running_mean"][...] = mean
        buffers["running_var"][...] = var


def recompute_population_statistics(model: Module, batches: Iterable[np.ndarray]) -> Statistics:
    """:func:`population_statistics`, then :func:`load_statistics`: eval mode (and a saved
    model) then normalizes with the population statistics. Returns them."""
    stats = population_statistics(model, batches)
    load_statistics(model, stats)
    return stats


@contextmanager
def using_statistics(model: Module, stats: Mapping) -> Iterator[Module]:
    """Within the block the batch norm layers' running buffers hold ``stats``; afterwards
    they hold the running averages they had before, bit for bit."""
    layers = dict(batch_norm_layers(model))
    saved = {
        name: (
            layers[name]._buffers["running_mean"].copy(),
            layers[name]._buffers["running_var"].copy(),
        )
        for name in stats
        if name in layers and layers[name].buffers()
    }
    load_statistics(model, stats)
    try:
        yield model
    finally:
        load_statistics(model, saved)
