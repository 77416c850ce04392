"""The progress helper: a tqdm bar when someone watches, a no-op bar otherwise."""

import io
import sys

import pytest

from normgrad.errors import MissingDependencyError, NormgradUsageError
from normgrad.progress import NullBar, progress_bar


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_disabled_or_unwatched_gives_a_no_op_bar():
    assert isinstance(progress_bar(total=3, enabled=False), NullBar)
    assert isinstance(progress_bar(total=3, file=io.StringIO()), NullBar)  # not a terminal


def test_the_no_op_bar_takes_every_call_and_is_a_context_manager():
    with progress_bar(total=3, enabled=False, position=1, leave=True) as bar:
        bar.update(2)
        bar.update()
        bar.set_postfix(loss="0.1")
        bar.set_postfix({"acc": "0.9"})
    bar.close()  # closing twice is fine


def test_a_terminal_gets_a_tqdm_bar():
    pytest.importorskip("tqdm")
    term = Terminal()
    with progress_bar(total=4, desc="steps", file=term) as bar:
        bar.update(4)
        bar.set_postfix(loss="0.5")
    assert "steps" in term.getvalue() and "4/4" in term.getvalue()


def test_missing_tqdm_is_a_usage_error_only_when_a_bar_is_drawn(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # import fails
    assert isinstance(progress_bar(total=1, file=io.StringIO()), NullBar)
    with pytest.raises(MissingDependencyError, match=r"pip install 'normgrad\[train\]'") as info:
        progress_bar(total=1, file=Terminal())
    assert isinstance(info.value, NormgradUsageError) and isinstance(info.value, ImportError)


def test_an_imported_ipykernel_is_not_a_notebook(monkeypatch):
    """Finding a kernel spec imports ipykernel; only a running kernel's shell counts."""
    monkeypatch.setitem(sys.modules, "ipykernel", type(sys)("ipykernel"))
    assert isinstance(progress_bar(total=3, file=io.StringIO()), NullBar)


def test_a_running_jupyter_kernel_gets_a_bar(monkeypatch):
    pytest.importorskip("tqdm")

    class ZMQInteractiveShell:  # the class name IPython gives a kernel's shell
        pass

    fake_ipython = type(sys)("IPython")
    fake_ipython.get_ipython = ZMQInteractiveShell
    monkeypatch.setitem(sys.modules, "IPython", fake_ipython)
    bar = progress_bar(total=3, file=io.StringIO())
    assert not isinstance(bar, NullBar)
    bar.close()
