"""In a notebook, where students work: grade functions defined in it, and see graphs.

``check`` grades the course-API functions of a notebook, a module, a file or one
function, and returns a :class:`~normgrad.learn.report.Report` that a notebook shows as
an HTML table (``_repr_html_``) and a terminal as text::

    from normgrad.learn import check
    check(batchnorm_backward)      # one function (its forward is looked up beside it)
    check(globals())               # every gradable function defined in the notebook
    check()                        # the same: the caller's globals

``picture`` is the computational graph of an op's example as a picture a notebook shows
inline (``_repr_svg_``), drawn top to bottom so that the nine-step batch-norm graph fits
a notebook's width.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Mapping
from pathlib import Path

from normgrad.learn import grader
from normgrad.learn.report import Report

#: The widest picture, in inches (graphviz scales a larger drawing down to fit).
NOTEBOOK_WIDTH_IN = 9.0


def check(target=None, *, timeout: float = grader.DEFAULT_TIMEOUT) -> Report:
    """Grade ``target``: a function of the course's API (by its name), a module, a
    namespace (``globals()``), a file's path, or None for the caller's globals.

    Raises:
        normgrad.learn.grader.UsageError: nothing gradable in ``target``, a function whose
            name the grader does not know, a backward without its forward.
    """
    if target is None:
        frame = inspect.currentframe()
        target = frame.f_back.f_globals if frame and frame.f_back else {}
    if isinstance(target, str | Path):
        return grader.grade(Path(target), timeout=timeout)
    if isinstance(target, types.ModuleType):
        functions = grader.gradable_functions(vars(target))
        files = frozenset(filter(None, [getattr(target, "__file__", None)]))
        return grader.grade_functions(
            functions, source=target.__name__, files=files, timeout=timeout
        )
    if isinstance(target, Mapping):
        functions = grader.gradable_functions(target)
        return grader.grade_functions(functions, source="", timeout=timeout)
    if callable(target):
        name = getattr(target, "__name__", "")
        if name not in grader.GRADABLE:
            raise grader.UsageError(
                f"{name or target!r} is not a function the grader knows; one of: "
                f"{', '.join(grader.GRADABLE)} (a function is graded by its name)"
            )
        functions = grader.gradable_functions(getattr(target, "__globals__", {}))
        functions[name] = target
        return grader.grade_functions(functions, only=name, source="", timeout=timeout)
    raise grader.UsageError(
        f"check() grades a function, a module, globals() or a file's path; got "
        f"{type(target).__name__}"
    )


class GraphPicture:
    """A graph picture for a notebook: ``_repr_svg_`` renders it with Graphviz's ``dot``;
    ``dot`` is the ``graphviz.Digraph``, ``source`` its DOT text."""

    def __init__(self, dot):
        self.dot = dot

    @property
    def source(self) -> str:
        return self.dot.source

    def _repr_svg_(self) -> str | None:
        try:
            return self.dot.pipe(format="svg").decode("utf-8")
        except Exception:  # no dot program: the notebook falls back to the text
            return None

    def __repr__(self) -> str:
        return f"<graph picture: {len(self.source)} characters of DOT; display it in a notebook>"


def picture(
    op: str = "batch_norm", shape: tuple[int, ...] | None = None, **options
) -> GraphPicture:
    """The computational graph of ``op``'s example (:func:`normgrad.learn.examples.make_example`
    takes the same arguments), values and gradients, drawn to fit a notebook."""
    import normgrad.learn.graph as graphs
    from normgrad.learn.examples import make_example

    dot = graphs.example_graph(make_example(op, shape, **options))
    dot.graph_attr.update(rankdir="TB", size=f"{NOTEBOOK_WIDTH_IN:g},1000", ratio="compress")
    return GraphPicture(dot)
