"""A small reverse-mode automatic differentiation over NumPy arrays.

In the spirit of micrograd, but on arrays: a :class:`Tensor` holds ``data`` and, after
``backward()``, ``grad``. Each operation creates a new Tensor that remembers its parents
(in order, so pictures of the graph are deterministic) and a closure that applies *its own*
local derivative, and nothing more. ``backward`` visits the graph in reverse topological
order and lets each node push its gradient to its parents, summing wherever a value is
used twice.

Broadcasting follows NumPy; the gradient of a broadcast is a sum over the broadcast axes
(:func:`unbroadcast`).

``backward(dy, create_graph=True)`` makes the backward itself differentiable, as PyTorch's
option of that name: every local derivative is then applied with Tensor operations, so the
gradients are Tensors in a graph of their own, and a second ``backward`` through them gives
second derivatives (Hessian-vector products). Pass dy as a Tensor to differentiate with
respect to it too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np


def unbroadcast(grad, shape: tuple[int, ...]):
    """Sum ``grad`` down to ``shape``: the adjoint of broadcasting ``shape`` up to grad's.

    ``grad`` is an ndarray, or a Tensor under create_graph (only ``sum`` and ``reshape``
    are used, so the summing is itself differentiable; a grad already of ``shape`` is
    returned as it is, which adds no node to that graph)."""
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(a for a, n in enumerate(shape) if n == 1 and grad.shape[a] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad if grad.shape == tuple(shape) else grad.reshape(shape)


def _normalize_axes(axis, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    return tuple(a % ndim for a in axes)


class Tensor:
    """An array in a computation graph.

    Attributes:
        data: the value, a float64 NumPy array.
        grad: d(output)/d(this), filled by :meth:`backward` (None before).
        parents: the tensors this one was computed from, in argument order.
        op: the operation that produced it (``""`` for an input, ``"const"`` for a constant).
        name: an optional label (``"xmu"``, ``"ivar"``...), used by pictures and walks.
        step: an optional step number (the staged graph's numbering, docs/design.md §3).
    """

    def __init__(self, data, parents: Iterable[Tensor] = (), op: str = "", name: str = ""):
        self.data = np.asarray(data, dtype=np.float64)
        self.grad: np.ndarray | None = None
        self.parents: tuple[Tensor, ...] = tuple(parents)
        self.op = op
        self.name = name
        self.step: int | None = None
        self._backward: Callable[[], None] = lambda: None

    # ----------------------------------------------------------------- plumbing
    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def is_const(self) -> bool:
        return self.op == "const"

    def __repr__(self) -> str:
        label = f" {self.name!r}" if self.name else ""
        return f"Tensor{label}(shape={self.shape}, op={self.op!r})"

    def tag(self, name: str, step: int | None = None) -> Tensor:
        """Name this node (and give its step number); returns self for chaining."""
        self.name, self.step = name, step
        return self

    @staticmethod
    def _lift(other) -> Tensor:
        return other if isinstance(other, Tensor) else Tensor(other, op="const")

    def _child(self, data, parents, op, backward) -> Tensor:
        out = Tensor(data, parents, op)

        def _backward():
            backward(out.grad)

        out._backward = _backward
        return out

    def _accumulate(self, grad) -> None:
        if self.is_const:
            return
        if not isinstance(grad, Tensor):  # a Tensor under create_graph: itself in a graph
            grad = np.asarray(grad, dtype=np.float64)
        grad = unbroadcast(grad, self.shape)
        self.grad = grad if self.grad is None else self.grad + grad

    def _v(self, g):
        """This tensor's value as a backward rule needs it: the Tensor itself when the
        gradient ``g`` is a Tensor (create_graph), else its data."""
        return self if isinstance(g, Tensor) else self.data

    # ----------------------------------------------------------------- arithmetic
    def __add__(self, other) -> Tensor:
        other = self._lift(other)

        def backward(g):  # d(a+b)/da = 1, d(a+b)/db = 1
            self._accumulate(g)
            other._accumulate(g)

        return self._child(self.data + other.data, (self, other), "+", backward)

    def __radd__(self, other) -> Tensor:
        return self._lift(other) + self

    def __neg__(self) -> Tensor:
        def backward(g):
            self._accumulate(-g)

        return self._child(-self.data, (self,), "neg", backward)

    def __sub__(self, other) -> Tensor:
        other = self._lift(other)

        def backward(g):  # d(a-b)/da = 1, d(a-b)/db = -1
            self._accumulate(g)
            other._accumulate(-g)

        return self._child(self.data - other.data, (self, other), "-", backward)

    def __rsub__(self, other) -> Tensor:
        return self._lift(other) - self

    def __mul__(self, other) -> Tensor:
        other = self._lift(other)

        def backward(g):  # d(ab)/da = b, d(ab)/db = a
            self._accumulate(g * other._v(g))
            other._accumulate(g * self._v(g))

        return self._child(self.data * other.data, (self, other), "*", backward)

    def __rmul__(self, other) -> Tensor:
        return self._lift(other) * self

    def __truediv__(self, other) -> Tensor:
        other = self._lift(other)

        def backward(g):  # d(a/b)/da = 1/b, d(a/b)/db = -a/b^2
            self._accumulate(g / other._v(g))
            other._accumulate(-g * self._v(g) / other._v(g) ** 2)

        return self._child(self.data / other.data, (self, other), "/", backward)

    def __rtruediv__(self, other) -> Tensor:
        return self._lift(other) / self

    def __pow__(self, exponent: float) -> Tensor:
        if isinstance(exponent, Tensor):
            raise TypeError("only a constant exponent is supported: x ** 2, x ** 0.5")
        p = float(exponent)

        def backward(g):  # d(a^p)/da = p a^(p-1)
            self._accumulate(g * p * self._v(g) ** (p - 1))

        return self._child(self.data**p, (self,), f"**{p:g}", backward)

    def __matmul__(self, other) -> Tensor:
        other = self._lift(other)
        if self.ndim != 2 or other.ndim != 2:
            raise ValueError(f"@ takes 2-D tensors; got shapes {self.shape} and {other.shape}")

        def backward(g):  # d(AB)/dA = g B^T, d(AB)/dB = A^T g
            self._accumulate(g @ other._v(g).T)
            other._accumulate(self._v(g).T @ g)

        return self._child(self.data @ other.data, (self, other), "@", backward)

    # ----------------------------------------------------------------- reductions
    def sum(self, axis=None, keepdims: bool = False) -> Tensor:
        axes = _normalize_axes(axis, self.ndim)

        def backward(g):  # a sum spreads its gradient unchanged over what it summed
            self._accumulate(_spread(g, axes, keepdims, self.shape))

        data = self.data.sum(axis=axes, keepdims=keepdims)
        return self._child(data, (self,), f"sum{_axes_label(axes)}", backward)

    def mean(self, axis=None, keepdims: bool = False) -> Tensor:
        axes = _normalize_axes(axis, self.ndim)
        count = int(np.prod([self.shape[a] for a in axes]))

        def backward(g):  # 1/M to each of the M values averaged
            self._accumulate(_spread(g / count, axes, keepdims, self.shape))

        data = self.data.mean(axis=axes, keepdims=keepdims)
        return self._child(data, (self,), f"mean{_axes_label(axes)}", backward)

    # ----------------------------------------------------------------- elementwise
    def _unary(self, data, op: str, local_grad) -> Tensor:
        """``local_grad(out, x)`` is the derivative in terms of the output and the input
        (arrays, or with create_graph the Tensors themselves)."""

        def backward(g):
            self._accumulate(g * local_grad(out._v(g), self._v(g)))

        out = self._child(data, (self,), op, backward)
        return out

    def sqrt(self) -> Tensor:
        return self._unary(np.sqrt(self.data), "sqrt", lambda out, x: 0.5 / out)

    def exp(self) -> Tensor:
        return self._unary(np.exp(self.data), "exp", lambda out, x: out)

    def log(self) -> Tensor:
        return self._unary(np.log(self.data), "log", lambda out, x: 1.0 / x)

    def relu(self) -> Tensor:
        mask = (self.data > 0) * 1.0  # piecewise linear: its derivative is a constant
        return self._unary(np.maximum(self.data, 0.0), "relu", lambda out, x: mask)

    def sigmoid(self) -> Tensor:
        data = 0.5 * (1.0 + np.tanh(0.5 * self.data))  # stable for large |x|
        return self._unary(data, "sigmoid", lambda out, x: out * (1.0 - out))

    def tanh(self) -> Tensor:
        return self._unary(np.tanh(self.data), "tanh", lambda out, x: 1.0 - out**2)

    # ----------------------------------------------------------------- shape
    def reshape(self, *shape) -> Tensor:
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], tuple | list) else shape
        old = self.shape

        def backward(g):
            self._accumulate(g.reshape(old))

        return self._child(self.data.reshape(shape), (self,), "reshape", backward)

    def transpose(self, *axes) -> Tensor:
        axes = axes[0] if len(axes) == 1 and isinstance(axes[0], tuple | list) else axes
        axes = tuple(axes) if axes else tuple(reversed(range(self.ndim)))
        inverse = tuple(int(a) for a in np.argsort(axes))

        def backward(g):
            self._accumulate(g.transpose(inverse))

        return self._child(self.data.transpose(axes), (self,), "transpose", backward)

    @property
    def T(self) -> Tensor:
        return self.transpose()

    # ----------------------------------------------------------------- backward
    def topological_order(self) -> list[Tensor]:
        """Every node this tensor depends on, parents before children (iterative DFS)."""
        order: list[Tensor] = []
        seen: set[int] = set()
        stack: list[tuple[Tensor, bool]] = [(self, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.append((node, True))
            for p in reversed(node.parents):
                if id(p) not in seen:
                    stack.append((p, False))
        return order

    def backward(self, grad=None, *, create_graph: bool = False) -> None:
        """Fill ``.grad`` of every node in the graph with d(self)/d(node), weighted by ``grad``.

        ``grad`` is the upstream gradient (dy), with this tensor's shape; it may be omitted
        only for a tensor with one element. Every node's ``grad`` is reset first, so calling
        ``backward`` twice gives the same result, not twice the result.

        ``create_graph=True``: the gradients are Tensors built from Tensor operations (a
        Tensor ``grad`` is used as it is, so they depend on it), ready to be differentiated
        again by a ``backward`` of any scalar made from them.
        """
        if grad is None:
            if self.data.size != 1:
                raise ValueError(
                    f"backward() needs grad for a tensor of shape {self.shape}; "
                    "pass dy of the same shape"
                )
            grad = np.ones(self.shape)
        seed = grad if isinstance(grad, Tensor) else None
        grad = np.asarray(grad.data if seed is not None else grad, dtype=np.float64)
        if grad.shape != self.shape:
            raise ValueError(f"grad must have shape {self.shape}; got {grad.shape}")
        order = self.topological_order()
        for node in order:
            node.grad = None
        if create_graph:
            self.grad = seed if seed is not None else Tensor(grad, op="const")
        else:
            self.grad = grad.copy()
        for node in reversed(order):
            if node.grad is not None:
                node._backward()


def _spread(g, axes: tuple[int, ...], keepdims: bool, shape: tuple[int, ...]):
    """A reduction's gradient ``g`` spread back over the ``shape`` it reduced."""
    if isinstance(g, Tensor):
        if not keepdims:
            g = g.reshape(tuple(1 if a in axes else n for a, n in enumerate(shape)))
        return g * np.ones(shape)  # broadcasting; its adjoint is the sum _accumulate takes
    g = g if keepdims else np.expand_dims(g, axes)
    return np.broadcast_to(g, shape)


def _axes_label(axes: tuple[int, ...]) -> str:
    return "(" + ",".join(str(a) for a in axes) + ")"
