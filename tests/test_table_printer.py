"""The table printer: aligned columns whose headers never run together."""

import re

import pytest

from normgrad.tools.table import Column, Table, format_table

RATIOS = [
    Column("op"),
    *(Column(h, ".2f", align="right") for h in ("numpy/torch", "fused/torch", "fused/floor")),
]


def test_headers_never_run_together_even_over_narrow_values():
    text = format_table(RATIOS, [["batch_norm", 1.5, 0.25, None]])
    header, rule, row = text.splitlines()
    assert re.split(r" {2,}", header) == ["op", "numpy/torch", "fused/torch", "fused/floor"]
    assert set(rule) == {"-"} and len(rule) == len(header)
    assert row.split() == ["batch_norm", "1.50", "0.25", "-"]
    # right-aligned: each value ends where its header ends
    for head, value in (("numpy/torch", "1.50"), ("fused/torch", "0.25"), ("fused/floor", "-")):
        end = header.index(head) + len(head)
        assert row[:end].endswith(" " + value)


def test_wide_values_widen_their_column():
    text = format_table(["K", Column("name")], [[1, "a long name indeed"], [100000, "b"]])
    lines = text.splitlines()
    assert lines[0].split() == ["K", "name"]
    assert lines[2].index("a long") == lines[0].index("name") == lines[3].index("b")
    assert all(line == line.rstrip() for line in lines)  # no trailing spaces


def test_formats_and_missing_values():
    table = Table([Column("n", ",.0f", align="right"), Column("f", lambda v: f"<{v}>")])
    assert table.render([[1234567, "x"], [None, None]]).splitlines()[2:] == [
        "1,234,567  <x>",
        "        -  -",
    ]


def test_row_by_row_with_fixed_widths():
    table = Table([Column("status", width=6), Column("error", ".1e", align="right", width=9)])
    assert table.header() == "status      error"
    assert table.row(["ok", 1e-12]) == "ok        1.0e-12"
    assert len(table.rule()) == 6 + 2 + 9


def test_markdown():
    text = Table([Column("network"), Column("batch size", align="right")]).markdown(
        [["layer norm", 50], ["a|b", 5]]
    )
    assert text.splitlines() == [
        "| network    | batch size |",
        "| ---------- | ---------: |",
        "| layer norm |         50 |",
        "| a\\|b       |          5 |",
    ]


def test_misuse_is_an_error():
    with pytest.raises(ValueError, match="gap must be at least 1"):
        Table(["a"], gap=0)
    with pytest.raises(ValueError, match="a row of 1 values for 2 columns"):
        Table(["a", "b"]).row([1])
