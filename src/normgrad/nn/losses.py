"""Losses: each returns ``(loss, dscores)``, the gradient the network's backward starts from."""

from __future__ import annotations

import numpy as np


def softmax_cross_entropy(scores: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of softmax(scores) against integer labels.

    Args:
        scores: ``(N, num_classes)`` class scores (logits).
        y: ``(N,)`` integer labels in ``[0, num_classes)``.

    Returns:
        ``(loss, dscores)``: the mean loss as a float, and its gradient ``(N, num_classes)``.
    """
    shifted = scores - scores.max(axis=1, keepdims=True)  # exp cannot overflow
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    n = scores.shape[0]
    loss = -log_probs[np.arange(n), y].mean()
    dscores = np.exp(log_probs)
    dscores[np.arange(n), y] -= 1.0
    return float(loss), dscores / n
