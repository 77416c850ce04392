"""Progress bars (tqdm, from the ``train`` extra), imported only when one is wanted."""

from __future__ import annotations

from collections.abc import Callable


def progress_factory(enabled: bool = True, **defaults) -> Callable | None:
    """A ``tqdm``-like factory with ``defaults`` applied, or None when not ``enabled``.

    Raises ImportError naming the extra when tqdm is missing.
    """
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        raise ImportError("progress bars need tqdm: pip install 'normgrad[train]'") from None

    def make(**kw):
        return tqdm(**(defaults | kw))

    return make
