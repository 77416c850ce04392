"""Pictures of the computational graph, as the autodiff engine builds it (``normgrad graph``).

One node per primitive, labelled with its operation, its shape, and a summary of its
forward value and of its gradient after a backward pass. The nodes of the staged graph
(Kratzert's computational-graph walk, docs/design.md §3) are labelled from the table of
ops (:mod:`normgrad.core.table`): the node's name, its step number and its formula, e.g.
``xmu   (step 2)`` over ``xmu = x - mu``. Edges point forward. Nodes that feed more than
one node are the places where gradients meet and are summed; they are filled orange and
say so.

Needs the ``graphviz`` Python package (``pip install 'normgrad[graph]'``) to build the DOT
text, and Graphviz's ``dot`` program (Debian: ``apt-get install graphviz``) to render SVG
or PNG. Without ``dot`` the DOT file is written and the message says how to render it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from normgrad.autodiff import Tensor
from normgrad.core.table import Node

FORMATS = ("svg", "png", "dot")


class RenderError(RuntimeError):
    """The picture could not be rendered; ``dot_path`` is where the DOT text was written."""

    def __init__(self, message: str, dot_path: Path | None = None):
        super().__init__(message)
        self.dot_path = dot_path


def _graphviz():
    try:
        import graphviz
    except ImportError as exc:
        raise ImportError(
            "drawing graphs needs the graphviz package: pip install 'normgrad[graph]'"
        ) from exc
    return graphviz


def summarize(a: np.ndarray | None) -> str:
    """A short description of an array: its values if few, else mean and range."""
    if a is None:
        return "-"
    a = np.asarray(a, dtype=np.float64)
    if a.size <= 3:
        return "[" + ", ".join(f"{v:.3g}" for v in a.ravel()) + "]"
    return f"mean {a.mean():.3g}, range [{a.min():.3g}, {a.max():.3g}]"


def fan_out(out: Tensor) -> Counter:
    """How many nodes use each node (by id): more than one means gradients are summed."""
    uses: Counter = Counter()
    for node in out.topological_order():
        for p in node.parents:
            uses[id(p)] += 1
    return uses


def build_graph(out: Tensor, title: str = "", nodes: Iterable[Node] = ()):
    """A ``graphviz.Digraph`` of everything ``out`` depends on (call ``out.backward`` first
    to show gradients).

    ``nodes`` are the op's staged-graph nodes (``spec.nodes(bessel)``): an autodiff node
    tagged with one's name and step is labelled with that node's formula. Tagged helpers
    that are not table nodes (``var + eps``, Bessel's ``sum_sq``) keep their tag alone.
    """
    graphviz = _graphviz()
    staged = {(n.name, n.step): n for n in nodes}
    dot = graphviz.Digraph("normgrad", graph_attr={"rankdir": "LR", "fontname": "monospace"})
    dot.attr("node", fontname="monospace", fontsize="10")
    if title:
        dot.attr(label=title, labelloc="t", fontsize="14")
    uses = fan_out(out)
    order = out.topological_order()
    ids = {id(n): f"n{i}" for i, n in enumerate(order)}
    for node in order:
        nid = ids[id(node)]
        if node.is_const:
            dot.node(nid, summarize(node.data).strip("[]"), shape="plaintext")
            continue
        head = node.name or node.op
        if node.step is not None:
            head += f"   (step {node.step})"
        lines = [head]
        if (node.name, node.step) in staged:
            lines.append(staged[node.name, node.step].expr)
        lines.append(f"{node.op or 'input'}   shape {node.shape}")
        lines.append(f"value {summarize(node.data)}")
        lines.append(f"grad  {summarize(node.grad)}")
        attrs = {"shape": "box", "style": "rounded"}
        if not node.parents:
            attrs = {"shape": "box", "style": "rounded,filled", "fillcolor": "lightblue"}
        if uses[id(node)] > 1:
            lines.append(f"{uses[id(node)]} gradients meet here and are summed")
            attrs = {"shape": "box", "style": "rounded,filled", "fillcolor": "orange"}
        dot.node(nid, "\\l".join(lines) + "\\l", **attrs)
    for node in order:
        for p in node.parents:
            dot.edge(ids[id(p)], ids[id(node)])
    return dot


def infer_format(path: str | Path, fmt: str | None) -> str:
    """``fmt`` if given, else the output file's extension."""
    if fmt:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
        return fmt
    suffix = Path(path).suffix.lstrip(".").lower()
    if suffix not in FORMATS:
        raise ValueError(
            f"cannot tell the format from {str(path)!r}: use an .svg, .png or .dot name, "
            "or --format"
        )
    return suffix


def write(dot, path: str | Path, fmt: str) -> Path:
    """Write ``dot`` to ``path`` as ``fmt``. Raises :class:`RenderError` if ``dot`` (the
    program) is missing, after writing the DOT text beside ``path``."""
    graphviz = _graphviz()
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"the output directory {str(path.parent)!r} does not exist")
    if fmt == "dot":
        path.write_text(dot.source)
        return path
    try:
        data = dot.pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        dot_path = path.with_suffix(".dot")
        dot_path.write_text(dot.source)
        raise RenderError(
            f"Graphviz's dot program was not found, so {path.name} was not rendered; wrote "
            f"{dot_path} instead. Install Graphviz (Debian: apt-get install graphviz) and run: "
            f"dot -T{fmt} {dot_path} -o {path}",
            dot_path,
        ) from None
    path.write_bytes(data)
    return path


def example_graph(example):
    """``example``'s graph built from primitives, its backward run with the example's dout,
    as a ``graphviz.Digraph`` titled with the op's title and x's shape."""
    spec = example.spec
    out, *_ = example.autodiff()
    variance = ", Bessel-corrected variance" if example.bessel else ""
    title = f"{spec.title}, x of shape {example.x.shape}{variance}: values and gradients"
    return build_graph(out, title, spec.nodes(example.bessel))


def draw_example(example, path: str | Path, fmt: str | None = None) -> Path:
    """Build ``example``'s graph from primitives, run its backward, and write the picture."""
    fmt = infer_format(path, fmt)
    return write(example_graph(example), path, fmt)
