"""``normgrad conformance``: hard cases through normgrad and PyTorch (and the other
frameworks where installed), against the float64 ground truth."""

import json

import numpy as np
import pytest

from normgrad import cli, conformance


def test_the_ground_truth_is_the_float64_two_pass_computation():
    case = conformance.Case("t", "group_norm", (3, 4, 5), options={"num_groups": 2})
    x, dy = conformance.make_input(case)
    truth = conformance.ground_truth(case, x, dy)
    xw = x.astype(np.float64).reshape(3, 2, 10)
    mu, var = xw.mean(axis=2, keepdims=True), xw.var(axis=2, keepdims=True)
    np.testing.assert_allclose(truth["y"], ((xw - mu) / np.sqrt(var + 1e-5)).reshape(3, 4, 5))
    np.testing.assert_allclose(truth["dbeta"], dy.sum(axis=(0, 2)))


def test_conformance_against_pytorch_in_the_test_suite(tmp_path, capsys):
    pytest.importorskip("torch")
    out = tmp_path / "c.json"
    argv = ["conformance", "--quick", "--no-progress", "--json", str(out),
            "--frameworks", "normgrad numpy,PyTorch CPU"]  # fmt: skip
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "normgrad numpy" in text and "PyTorch CPU" in text and "2.13" in text
    data = json.loads(out.read_text())
    assert set(data["versions"]) == {"normgrad numpy", "PyTorch CPU"}
    results = data["results"]
    assert len(results) == len(conformance.CASES)
    for label, row in results.items():
        ours = row["normgrad numpy"]
        if "mean 1e4" in label and "float16" not in label:
            assert ours["y"] <= 1e-6, (label, ours)  # in std units, float32
            assert ours["dx"] <= 1e-6, (label, ours)
        if label.startswith("BN") and "float16" not in label:
            assert ours["running_var"] <= 1e-6, (label, ours)
        torch_y = row["PyTorch CPU"]["y"]
        assert isinstance(torch_y, float)  # PyTorch runs every case (a number, not a reason)


def test_missing_frameworks_are_listed_as_not_installed(capsys):
    absent = conformance.Framework("Nowhere", ("no_such_module_here",), lambda: "0", None,
                                   extra="normgrad[frameworks]")  # fmt: skip
    present = conformance.FRAMEWORKS[0]
    case = conformance.quick_cases()[-1]
    report = conformance.run_conformance([case], [present, absent])
    assert report.missing == {"Nowhere": "normgrad[frameworks]"}
    text = conformance.format_report(report)
    assert "not installed: Nowhere (pip install 'normgrad[frameworks]')" in text
    assert list(report.results[case.label]) == ["normgrad numpy"]


def test_a_framework_that_raises_is_reported_not_fatal():
    def broken(case, x, dy):
        raise RuntimeError("expected scalar type Half")

    fw = conformance.Framework("Broken", ("numpy",), lambda: "1", broken)
    case = conformance.quick_cases()[0]
    report = conformance.run_conformance([case], [fw])
    assert report.results[case.label]["Broken"]["y"].startswith("RuntimeError: expected")
    assert "refused" in conformance.format_report(report)


def test_conformance_usage_errors(capsys):
    assert cli.main(["conformance", "--frameworks", "Caffe"]) == 2
    assert "--frameworks: unknown 'Caffe'" in capsys.readouterr().err
