"""The example notebook (examples/learning_path.ipynb) runs top to bottom, and the
notebook API of the grader (``from normgrad.learn import check``) shows its report."""

import importlib.util
import os
from pathlib import Path

import pytest

from normgrad.learn import check, notebook

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "examples" / "learning_path.ipynb"


def test_the_example_notebook_runs(monkeypatch, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    if importlib.util.find_spec("ipykernel") is None:
        pytest.skip("ipykernel is not installed")
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        pytest.skip("no python3 Jupyter kernel here")
    # the kernel imports this checkout's normgrad, wherever it runs
    path = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT / "src"), path]).rstrip(os.pathsep))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    html = [o.data["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert len(html) == 2  # the two reports, as tables
    assert "looks like missing gradient through the variance" in html[0]
    assert "2 functions: 2 pass" in html[1]


def test_check_grades_a_function_a_module_and_a_namespace():
    from normgrad import cs231n

    one = check(cs231n.batchnorm_backward_alt)
    assert [f.name for f in one.functions] == ["batchnorm_backward_alt"] and one.passed
    assert "<table>" in one._repr_html_() and "batchnorm_backward_alt" in one._repr_html_()
    assert repr(one) == one.text() and "1 function: 1 pass" in repr(one)
    assert len(check(cs231n).functions) == 9
    assert check(vars(cs231n)).passed


def test_check_with_no_argument_grades_the_callers_globals():
    from normgrad.cs231n import layernorm_backward, layernorm_forward

    namespace = {"layernorm_forward": layernorm_forward, "layernorm_backward": layernorm_backward}
    assert [f.name for f in check(namespace).functions] == list(namespace)
    report = eval("check()", {"check": check, **namespace})
    assert [f.name for f in report.functions] == list(namespace) and report.passed


def test_check_refuses_what_it_cannot_grade():
    def my_layer(x):
        return x

    with pytest.raises(ValueError, match="'my_layer' is not a function the grader knows"):
        check(my_layer)
    with pytest.raises(ValueError, match="defines none of the functions"):
        check({})
    with pytest.raises(ValueError, match="got int"):
        check(3)


def test_graph_pictures_fit_a_notebook():
    pytest.importorskip("graphviz")
    pic = notebook.picture("batch_norm", (4, 3))
    assert pic.dot.graph_attr["rankdir"] == "TB"
    assert f'size="{notebook.NOTEBOOK_WIDTH_IN:g},1000"' in pic.source
    svg = pic._repr_svg_()
    if svg is None:
        pytest.skip("no Graphviz dot program here")
    width_pt = float(svg.split('width="')[1].split("pt")[0])
    assert width_pt <= notebook.NOTEBOOK_WIDTH_IN * 72
