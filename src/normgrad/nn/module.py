"""The base of every layer and network, and the one container, :class:`Sequential`.

The model contract the trainer relies on (every :class:`Module` keeps it):

- ``forward(x) -> out`` (also ``module(x)``) saves what ``backward`` needs;
  ``backward(dout) -> dx`` fills ``grads`` and returns the gradient for the layer below.
  Calling ``backward`` before any ``forward`` raises a RuntimeError naming the layer.
- ``parameters()`` and ``gradients()`` are dicts with the same keys (dotted names such as
  ``"fc1.weight"``); optimizers update the parameter arrays *in place*.
- ``buffers()`` holds state that is not trained (running statistics).
- ``train()`` / ``eval()`` switch the mode of the module and everything inside it.
- ``state_dict()`` copies parameters and buffers; ``load_state_dict()`` checks every entry
  (names, shapes, dtypes) before it copies any, so a refused state leaves the model as it
  was.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

_NOT_SAVED = object()


class Module:
    """Base class: a layer or a container of layers.

    Subclasses implement ``forward`` and ``backward``; ``module(x)`` calls the subclass's
    ``forward``, as in PyTorch. ``extra_repr()`` gives the arguments shown by ``repr``.
    """

    def __init__(self) -> None:
        self.training = True
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self._buffers: dict[str, np.ndarray] = {}
        self._children: dict[str, Module] = {}

    # -- structure ---------------------------------------------------------
    def add(self, name: str, module: Module) -> Module:
        """Register ``module`` as a child called ``name`` (its entries become ``name.*``)."""
        self._children[name] = module
        return module

    def children(self) -> Iterator[Module]:
        """The direct children, in the order they were added."""
        return iter(self._children.values())

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """This module (named ``prefix``, ``""`` at the top) and every descendant, by dotted
        name, parents before children."""
        yield prefix, self
        for name, child in self._children.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator[Module]:
        """This module and every descendant (e.g. to freeze every batch norm of a net)."""
        for _, module in self.named_modules():
            yield module

    def _named(self, attr: str) -> dict[str, np.ndarray]:
        out = dict(getattr(self, attr))
        for cname, child in self._children.items():
            out |= {f"{cname}.{k}": v for k, v in child._named(attr).items()}
        return out

    def parameters(self) -> dict[str, np.ndarray]:
        return self._named("params")

    def gradients(self) -> dict[str, np.ndarray]:
        return self._named("grads")

    def buffers(self) -> dict[str, np.ndarray]:
        return self._named("_buffers")

    # -- mode --------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        self.training = mode
        for child in self._children.values():
            child.train(mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    # -- passes ------------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def backward(self, dout: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not define backward()")

    def __call__(self, *args, **kwargs):
        # Looked up on the instance, so a subclass's forward runs (``Module.__call__ =
        # forward`` would bind the base method, which only raises).
        return self.forward(*args, **kwargs)

    def _saved(self, name: str):
        """What ``forward`` saved as attribute ``name`` for ``backward``; a RuntimeError
        naming the layer when forward has not run yet."""
        value = self.__dict__.get(name, _NOT_SAVED)
        if value is _NOT_SAVED:
            raise RuntimeError(
                f"{type(self).__name__}.backward() was called before forward(): there is "
                "no saved input to differentiate"
            )
        return value

    # -- printing ----------------------------------------------------------
    def extra_repr(self) -> str:
        """The layer's own arguments, shown between the parentheses of its repr."""
        return ""

    def __repr__(self) -> str:
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not self._children:
            return head + ")"
        lines = [head]
        for name, child in self._children.items():
            child_lines = repr(child).split("\n")
            lines.append(f"  ({name}): " + "\n  ".join(child_lines))
        return "\n".join(lines) + "\n)"

    # -- state -------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter and buffer, by dotted name."""
        return {k: v.copy() for k, v in (self.parameters() | self.buffers()).items()}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Copy ``state`` into the parameters and buffers, in place.

        Every entry is checked before any is copied, so on a ValueError the model is
        unchanged: the names must be exactly the model's, each shape the model's, and each
        value must fit the array's dtype without loss (a floating value for an integer
        buffer such as ``num_batches_tracked`` must be integral and in range; a value for a
        floating array must be real and not overflow it).
        """
        own = self.parameters() | self.buffers()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(
                f"state does not fit this model: missing {missing or 'nothing'}, "
                f"unexpected {unexpected or 'nothing'}"
            )
        converted = {k: _converted(k, state[k], target) for k, target in own.items()}
        for k, target in own.items():
            target[...] = converted[k]


def _converted(name: str, value: object, target: np.ndarray) -> np.ndarray:
    """``value`` as an array of ``target``'s shape and dtype; ValueError if it does not fit."""
    value = np.asarray(value)
    where = f"state[{name!r}]"
    if value.shape != target.shape:
        raise ValueError(f"{where} has shape {value.shape}; the model's is {target.shape}")
    kind = value.dtype.kind
    if np.issubdtype(target.dtype, np.integer):
        info = np.iinfo(target.dtype)
        if kind in "iu":
            fits = value.size == 0 or (
                info.min <= int(value.min()) and int(value.max()) <= info.max
            )
        elif kind == "f":
            # float(info.max) rounds up to 2**63 for int64, so the top bound is exclusive
            fits = bool(
                np.all(np.isfinite(value))
                and np.all(value == np.trunc(value))
                and np.all(value >= float(info.min))
                and np.all(value < float(info.max) + 1)
            )
        else:
            fits = False
        if not fits:
            raise ValueError(
                f"{where} (dtype {value.dtype}) does not fit the model's {target.dtype} "
                "buffer without loss: it needs integral values in range"
            )
        return value.astype(target.dtype)
    if kind not in "iuf":
        raise ValueError(
            f"{where} has dtype {value.dtype}; the model's array is {target.dtype} and takes "
            "real numbers only"
        )
    with np.errstate(over="ignore"):
        cast = value.astype(target.dtype)
    if np.any(np.isfinite(value) & ~np.isfinite(cast)):
        raise ValueError(f"{where} has values that overflow the model's {target.dtype}")
    return cast


class Sequential(Module):
    """Layers applied in order; names are given (``("fc1", Linear(...))``) or numbered."""

    def __init__(self, *layers):
        super().__init__()
        for i, item in enumerate(layers):
            name, layer = item if isinstance(item, tuple) else (str(i), item)
            self.add(name, layer)

    def forward(self, x):
        for layer in self._children.values():
            x = layer(x)
        return x

    def backward(self, dout):
        for layer in reversed(self._children.values()):
            dout = layer.backward(dout)
        return dout

    def __getitem__(self, name: str) -> Module:
        return self._children[name]

    def __iter__(self):
        return iter(self._children.items())

    def __len__(self) -> int:
        return len(self._children)
