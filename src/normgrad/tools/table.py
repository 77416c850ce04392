"""One table printer for every report: aligned text columns, or a Markdown table.

Each column is at least as wide as its header and its columns are separated by ``gap``
spaces, so headers never run into each other, whatever the values::

    table = Table([
        Column("K", align="right"),
        Column("ms/step", ".3f", align="right"),
        Column("bytes sent/step/rank", ",.0f", align="right"),
    ])
    print(table.render(rows))          # header, a rule, the rows; widths fit every cell
    print(table.markdown(rows))        # the same as a Markdown table, for report.md

To print rows as they are computed (widths cannot depend on rows not seen yet), give the
columns a ``width`` and print ``table.header()``, ``table.rule()`` and then
``table.row(values)`` for each row; a value wider than its column widens that line only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

__all__ = ["Column", "Table", "format_table"]


@dataclass(frozen=True)
class Column:
    """One column: its header, how a value becomes text, and its alignment.

    ``format`` is a format spec (``".2f"``, ``",.0f"``, ``".1e"``) applied with
    :func:`format`, or a function from value to text. ``None`` values print as
    ``missing``. ``width`` is a minimum, for tables printed row by row.
    """

    header: str
    format: str | Callable[[Any], str] = ""
    align: Literal["left", "right"] = "left"
    width: int = 0
    missing: str = "-"

    def text(self, value: Any) -> str:
        if value is None:
            return self.missing
        if callable(self.format):
            return self.format(value)
        return format(value, self.format)

    def pad(self, text: str, width: int) -> str:
        return text.rjust(width) if self.align == "right" else text.ljust(width)


class Table:
    """Columns of text; see the module docstring."""

    def __init__(self, columns: Sequence[Column | str], *, gap: int = 2):
        if gap < 1:
            raise ValueError(f"gap must be at least 1 (columns would touch); got {gap}")
        self.columns = tuple(c if isinstance(c, Column) else Column(c) for c in columns)
        self.gap = gap

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(max(len(c.header), c.width) for c in self.columns)

    def cells(self, values: Sequence[Any]) -> list[str]:
        """The text of each value in a row."""
        if len(values) != len(self.columns):
            raise ValueError(f"a row of {len(values)} values for {len(self.columns)} columns")
        return [c.text(v) for c, v in zip(self.columns, values, strict=True)]

    def fit(self, rows: Iterable[Sequence[Any]]) -> Table:
        """This table with each column widened to its widest cell in ``rows``."""
        widths = list(self.widths)
        for values in rows:
            widths = [max(w, len(t)) for w, t in zip(widths, self.cells(values), strict=True)]
        columns = [replace(c, width=w) for c, w in zip(self.columns, widths, strict=True)]
        return Table(columns, gap=self.gap)

    def _line(self, texts: Sequence[str]) -> str:
        padded = (c.pad(t, w) for c, t, w in zip(self.columns, texts, self.widths, strict=True))
        return (" " * self.gap).join(padded).rstrip()

    def header(self) -> str:
        return self._line([c.header for c in self.columns])

    def rule(self, char: str = "-") -> str:
        return char * (sum(self.widths) + self.gap * (len(self.columns) - 1))

    def row(self, values: Sequence[Any]) -> str:
        return self._line(self.cells(values))

    def render(self, rows: Iterable[Sequence[Any]], *, rule: bool = True) -> str:
        """Header, a rule (unless ``rule`` is false) and the rows, widths fitted to all."""
        rows = [list(r) for r in rows]
        table = self.fit(rows)
        lines = [table.header(), *([table.rule()] if rule else [])]
        lines += [table.row(r) for r in rows]
        return "\n".join(lines)

    def markdown(self, rows: Iterable[Sequence[Any]]) -> str:
        """A Markdown (GitHub) table: right-aligned columns are marked ``---:``."""
        rows = [list(r) for r in rows]
        # A delimiter cell needs three characters (``---`` or ``--:``).
        wide = [replace(c, width=max(c.width, 3)) for c in self.columns]
        table = Table(wide, gap=self.gap).fit(rows)

        def line(texts):
            padded = (
                c.pad(t.replace("|", "\\|"), w)
                for c, t, w in zip(table.columns, texts, table.widths, strict=True)
            )
            return "| " + " | ".join(padded) + " |"

        marks = [
            "-" * (w - 1) + ":" if c.align == "right" else "-" * w
            for c, w in zip(table.columns, table.widths, strict=True)
        ]
        lines = [line([c.header for c in table.columns]), "| " + " | ".join(marks) + " |"]
        lines += [line(table.cells(r)) for r in rows]
        return "\n".join(lines)


def format_table(
    columns: Sequence[Column | str], rows: Iterable[Sequence[Any]], *, gap: int = 2
) -> str:
    """``Table(columns, gap=gap).render(rows)``: the one-call form."""
    return Table(columns, gap=gap).render(rows)
