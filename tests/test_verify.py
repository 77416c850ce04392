"""``normgrad verify``'s content: every op of the table has rows, RMS norm's pass, and the
report names the sources by what they are."""

import re

import numpy as np
import pytest

from normgrad import verify
from normgrad.core.table import OPS
from normgrad.reference.pytorch import torch_available


def test_every_op_of_the_table_is_verified():
    assert {case.op for case in verify.cases()} == set(OPS)


@pytest.mark.parametrize("use_torch", [False, pytest.param(True, id="torch")])
def test_rms_norm_rows_compare_every_derivation_and_pass(use_torch):
    if use_torch and not torch_available():
        pytest.skip("torch is not installed")
    cases = [case for case in verify.cases() if case.op == "rms_norm"]
    assert len({case.layout for case in cases}) >= 3  # several layouts, one without gamma
    assert any(not case.affine for case in cases)
    rng = np.random.default_rng(0)
    expected = {"staged", "numeric"} | ({"torch y", "torch grad"} if use_torch else set())
    for case in cases:
        row = verify.run_case(case, rng, use_torch)
        assert set(row.errors) == expected
        assert row.passed, verify.format_row(row)
        # RMS norm has no variance convention and no eval mode: both columns say "-".
        words = row.label.split()
        assert words[0] == "rms_norm" and words[-2:] == ["-", "-"]


def test_ops_header_titles_stay_apart():
    titles = verify.section_header("ops").splitlines()[1].strip()
    assert re.split(r"\s{2,}", titles) == ["op", "layout", "var", "mode", *verify.OPS_COLUMNS]


def test_write_up_rows_name_the_derivations_and_pass():
    rows = verify.writeup_rows(np.random.default_rng(0))
    text = "\n".join(verify.format_row(row) for row in rows)
    assert all(row.passed for row in rows), text
    assert "seed" not in text.lower()
    for label in (
        "staged backward (Kratzert)",
        "closed form (Thorey)",
        "Bessel-corrected formula with the Bessel-corrected variance",
        "Bessel-corrected formula with the biased variance",
    ):
        assert label in text
    # The formula on the biased forward is a negative control: it must differ.
    assert [row.expect_mismatch for row in rows] == [False, False, False, True]
