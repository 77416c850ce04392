"""Optimizers: SGD with momentum, and Adam. They update a model's parameters in place.

Both keep their state per parameter name, so ``state_dict()`` is a flat dict of arrays
that a checkpoint can store and ``load_state_dict()`` can restore exactly.
"""

from __future__ import annotations

import numpy as np

from normgrad.nn.module import _converted


class Optimizer:
    """Updates the model's parameter arrays in place from its gradient arrays.

    The (name, parameter, gradient) triples are collected from the model once, at the
    first step, as PyTorch's optimizers take their parameters once: every layer keeps its
    arrays and writes them in place (``load_state_dict`` too), and walking the model at
    every step costs a tenth of a small network's step.
    """

    def __init__(self, model, lr: float):
        if not lr > 0:
            raise ValueError(f"learning rate must be positive; got {lr}")
        self.model, self.lr = model, lr
        self.state: dict[str, np.ndarray] = {}
        self._triples: list[tuple[str, np.ndarray, np.ndarray]] | None = None

    def step(self) -> None:
        if self._triples is None:  # checked once: layers keep their arrays and write in place
            self._triples = self._checked_pairs()
        for name, p, g in self._triples:
            self._update(name, p, g)

    def _checked_pairs(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """``(name, parameter, gradient)`` for every parameter, all checked before any is
        updated (a missing or misshapen gradient leaves every parameter as it was)."""
        params, grads = self.model.parameters(), self.model.gradients()
        pairs = []
        for name, p in params.items():
            g = grads.get(name)
            if g is None or np.shape(g) != p.shape:
                got = "none" if g is None else f"shape {np.shape(g)}"
                raise ValueError(
                    f"the gradient of {name} must have the parameter's shape {p.shape}; got {got}"
                )
            pairs.append((name, p, g))
        return pairs

    def _update(self, name, p, g) -> None:
        raise NotImplementedError

    def _state_templates(self) -> dict[str, np.ndarray]:
        """Every entry the optimizer's state can hold, as a zero array of its shape/dtype."""
        return {}

    def state_dict(self) -> dict[str, np.ndarray]:
        return {k: np.array(v, copy=True) for k, v in self.state.items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Replace the state with ``state``. Every entry is checked (a name this optimizer
        keeps, the parameter's shape, a value its dtype holds without loss) before any is
        taken, so on a ValueError the optimizer is unchanged."""
        templates = self._state_templates()
        unexpected = sorted(set(state) - set(templates))
        if unexpected:
            raise ValueError(
                f"optimizer state does not fit {type(self).__name__} on this model: unexpected "
                f"{unexpected}"
            )
        self.state = {k: _converted(k, v, templates[k]).copy() for k, v in state.items()}


class SGD(Optimizer):
    """``v = momentum * v - lr * g; p += v`` (plain SGD when momentum is 0)."""

    def __init__(self, model, lr: float = 1e-2, momentum: float = 0.0):
        super().__init__(model, lr)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1); got {momentum}")
        self.momentum = momentum

    def _state_templates(self):
        if self.momentum == 0.0:
            return {}
        return {f"{n}.velocity": np.zeros_like(p) for n, p in self.model.parameters().items()}

    def _update(self, name, p, g):
        if self.momentum == 0.0:
            p -= self.lr * g
            return
        v = self.state.setdefault(f"{name}.velocity", np.zeros_like(p))
        v *= self.momentum
        v -= self.lr * g
        p += v


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction."""

    def __init__(self, model, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
        super().__init__(model, lr)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps

    def _state_templates(self):
        templates = {"t": np.zeros((), dtype=np.int64)}
        for n, p in self.model.parameters().items():
            templates |= {f"{n}.m": np.zeros_like(p), f"{n}.v": np.zeros_like(p)}
        return templates

    def step(self) -> None:
        pairs = self._checked_pairs()  # before the step count moves
        t = self.state.setdefault("t", np.zeros((), dtype=np.int64))
        t += 1
        for name, p, g in pairs:
            self._update(name, p, g)

    def _update(self, name, p, g):
        m = self.state.setdefault(f"{name}.m", np.zeros_like(p))
        v = self.state.setdefault(f"{name}.v", np.zeros_like(p))
        t = int(self.state["t"])
        m *= self.beta1
        m += (1 - self.beta1) * g
        v *= self.beta2
        v += (1 - self.beta2) * g * g
        m_hat = m / (1 - self.beta1**t)
        v_hat = v / (1 - self.beta2**t)
        p -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)
