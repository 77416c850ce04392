"""What the experiments share: the dataset they default to, their output directory, and
writing their CSVs, plots and reports (every file atomically, :mod:`normgrad.io`)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from normgrad.data import fashion_mnist_available
from normgrad.errors import ConfigError, MissingDependencyError, NormgradUsageError
from normgrad.io import atomic_open, atomic_write
from normgrad.io import check_output_dir as io_check_output_dir
from normgrad.tools.table import Column, Table


def default_dataset(data_dir: str | None) -> str:
    """Fashion-MNIST when a ``data_dir`` is given (which must then hold it: an explicit
    directory never falls back to another dataset) or Debian's package is installed, else
    digits."""
    if data_dir:
        return "fashion-mnist"
    return "fashion-mnist" if fashion_mnist_available() else "digits"


def check_output_dir(out: str | Path) -> Path:
    """``out`` as a directory that can be created and written; its parent must exist (a
    typo should not build a tree). Creates nothing."""
    out = Path(out)
    if not out.parent.is_dir():
        raise NormgradUsageError(f"the parent directory of --out {out} does not exist")
    return io_check_output_dir(out, "--out")


def output_dir(out: str | Path) -> Path:
    """``out``, checked (:func:`check_output_dir`) and created if missing."""
    out = check_output_dir(out)
    out.mkdir(exist_ok=True)
    return out


def require_at_least_one(**counts: int) -> None:
    """ConfigError naming the first of ``counts`` (option name -> value) below 1."""
    for name, value in counts.items():
        if value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1; got {value}")


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend; MissingDependencyError without it.

    Experiments call this before training, so a missing matplotlib is reported at once and
    not after hours of training."""
    try:
        import matplotlib
    except ImportError:
        raise MissingDependencyError(
            "the experiments' plots need matplotlib: pip install 'normgrad[train]'"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, *, dpi: int = 120) -> None:
    """Write ``fig`` as PNG to ``path`` atomically and close it."""
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=dpi)
    pyplot().close(fig)


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write(path, text.getvalue())


def write_report(path: Path, lines: Iterable[str]) -> None:
    """A Markdown report, one string per line."""
    atomic_write(path, "\n".join(lines) + "\n")


def markdown_table(columns: Sequence[Column | str], rows: Iterable[Sequence[Any]]) -> str:
    return Table(columns).markdown(rows)
