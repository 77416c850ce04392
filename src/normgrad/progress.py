"""Progress bars: ``tqdm.auto`` when someone is watching, a no-op bar otherwise.

Callers never check whether a bar is shown::

    with progress_bar(total=len(jobs), desc="runs", enabled=show) as bar:
        for job in jobs:
            ...
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")

tqdm comes from the ``train`` extra and is imported only when a bar is actually drawn.
"""

from __future__ import annotations

import sys
from typing import IO, Any, Protocol

from normgrad.errors import MissingDependencyError

__all__ = ["NullBar", "ProgressBar", "progress_bar"]


class ProgressBar(Protocol):
    """What :func:`progress_bar` returns: the part of tqdm's interface normgrad uses."""

    def update(self, n: float = 1) -> Any: ...
    def set_postfix(self, *args: Any, **kwargs: Any) -> Any: ...
    def close(self) -> Any: ...
    def __enter__(self) -> ProgressBar: ...
    def __exit__(self, *exc_info: object) -> Any: ...


class NullBar:
    """The bar when none is shown: every method does nothing."""

    def update(self, n: float = 1) -> None:
        pass

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> NullBar:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def progress_bar(
    total: float | None = None,
    *,
    desc: str | None = None,
    initial: float = 0,
    enabled: bool = True,
    file: IO[str] | None = None,
    **tqdm_options: Any,
) -> ProgressBar:
    """A tqdm bar counting to ``total``, or a :class:`NullBar` when ``enabled`` is false or
    ``file`` (default stderr) is neither a terminal nor a Jupyter kernel's output.

    ``tqdm_options`` go to tqdm as they are (``position``, ``leave``, ``dynamic_ncols``...).
    Raises :class:`~normgrad.errors.MissingDependencyError` when a bar would be drawn but
    tqdm is not installed.
    """
    stream = sys.stderr if file is None else file
    if not enabled or not _watched(stream):
        return NullBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        raise MissingDependencyError(
            "progress bars need tqdm: pip install 'normgrad[train]', or turn them off "
            "(--no-progress)"
        ) from None
    if file is not None:
        tqdm_options["file"] = file
    return tqdm(total=total, desc=desc, initial=initial, **tqdm_options)


def _watched(stream: IO[str]) -> bool:
    """Whether a bar on ``stream`` would be seen: a terminal, or a Jupyter kernel (where
    tqdm.auto draws a widget and the stream is not a tty)."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) or _in_jupyter_kernel()


def _in_jupyter_kernel() -> bool:
    """True inside a running Jupyter kernel. Having imported ipykernel is not enough (finding
    a kernel spec imports it); the running shell is what tells."""
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    shell = get_ipython() if get_ipython is not None else None
    return type(shell).__name__ == "ZMQInteractiveShell"
