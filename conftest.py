"""Collect every notebook in nbs/ as a pytest test, so that `pytest` runs the tests in tests/ and executes every
chapter: code, documentation and tests cannot drift apart.

- A notebook runs as nbdev_test runs it: its code cells in order, in an IPython shell (execnb's `CaptureShell`) inside
  the test process, in the notebook's folder; each code cell is one test item, failing with the cell's traceback.
  (Until issue 20's CI-time work they ran through nbval, each in a new Jupyter kernel that started and imported torch
  again: about 6 s a notebook on 2 cores.) The shell is new for each notebook; modules stay imported, as in nbdev_test.
- Outputs are not compared: a notebook passes when every cell runs without error, and its cells assert what they claim
  (fastcore's test_eq, test_close, test_fail). Saved outputs come from `tests/execute_notebooks.py`, in a real kernel.
- Cells marked with nbdev's test flags (`#| slow`, `#| cuda`, `#| notest`) or `#| eval: false` are skipped, as
  `nbdev_test` skips them; SSL_AE_TEST_FLAGS="slow cuda" switches flags on.
- Notebooks whose name starts with `_` are scratch (nbdev ignores them too); nbs/_proc is nbdev's build output.
- Without execnb and nbformat (a GPU machine without the dev extra), the notebooks are not collected and tests/ runs.
- Under pytest-xdist (`-n auto --dist loadfile`, the project's addopts) a notebook's cells run in one process, in order.
  `auto` here means one worker more than the machine has cores (`pytest_xdist_auto_num_workers`): each worker runs one
  thread, and a worker often waits (a subprocess, a DataLoader's workers), so two workers on
  two cores left a third of the CPU idle; three kept it busy and cut the suite from ~640 s to ~535 s. (Four were not
  clearly faster: 474 s against 504 in one hour here, but slower in a clean CI run.) The longest files start first
  (`pytest_collection_modifyitems`).
- `device="auto"` in a test means SSL_AE_TEST_DEVICE (default: the CPU), so that one variable moves the suite to a GPU.
"""
import os
import sys
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER"):  # `pytest -n 2`: one thread per worker (and per notebook kernel), not 2 x 2 on 2 cores
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
# Notebooks run in this process (below), so what a chapter sets before importing Triton must hold for the whole run:
# without a GPU, Triton interprets its kernels on the CPU (chapter 03).
import torch  # noqa: E402
if not torch.cuda.is_available(): os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest

try:
    import nbformat
    from execnb.shell import CaptureShell
except ImportError:  # a machine without the dev extra (the GPU check's): tests/ runs, the notebooks are not collected
    nbformat = None

sys.path.insert(0, str(Path(__file__).parent / "tests"))
from nbflags import skip_reason  # noqa: E402
from testdevice import DEVICE  # noqa: E402


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: PYTEST_XDIST_AUTO_NUM_WORKERS when set (as pytest-xdist's own default honours it); else on up to 4
    cores a worker per core and one more (see the module's docstring), and one per core on more."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"): return int(os.environ["PYTEST_XDIST_AUTO_NUM_WORKERS"])
    cores = os.cpu_count() or 1
    return cores + 1 if cores <= 4 else cores


DURATIONS = Path(__file__).parent / "tests" / "durations.json"


def pytest_collection_modifyitems(session, config, items):
    """The longest files first (seconds from tests/durations.json; tests/durations.py says how to refresh them): under
    `--dist loadfile` a long file that starts last keeps one worker busy after the others have finished. The sort is
    stable, so each file's tests (a notebook's cells) keep their order; a file not in the table goes last. (xdist would
    otherwise reorder files by their number of tests, which put the one long wheel test last: `--no-loadscope-reorder`
    in the addopts keeps this order.)"""
    if not DURATIONS.exists(): return
    import json
    seconds = json.loads(DURATIONS.read_text())
    items.sort(key=lambda item: -seconds.get(item.nodeid.split("::")[0], 0.0))


@pytest.fixture(autouse=True)
def _test_device(monkeypatch):
    "`device='auto'` in a test means SSL_AE_TEST_DEVICE (default: the CPU), not whatever this machine has (tests/testdevice.py)."
    import torch
    import ssl_ae.devices
    monkeypatch.setattr(ssl_ae.devices, "default_device", lambda: torch.device(DEVICE))

NBS = Path(__file__).parent / "nbs"


CELL_TIMEOUT = 900  # seconds a notebook cell may run under test


class NotebookFile(pytest.File):
    "A notebook run as a test, one item per code cell, in this process's IPython shell (execnb's, as nbdev_test runs them)."

    def collect(self):
        nb = nbformat.read(str(self.path), as_version=4)
        for number, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
            item = NotebookCell.from_parent(self, name=f"Cell {number}", source=cell.source)
            reason = skip_reason(cell.source)
            if reason: item.add_marker(pytest.mark.skip(reason=f"{reason} cell (nbdev test flag)"))
            yield item

    def setup(self):
        self.shell = CaptureShell(mpl_format="png", timeout=CELL_TIMEOUT)
        self.shell.set_path(self.path.parent)

    def teardown(self):
        self.shell = None
        import matplotlib.pyplot as plt
        plt.close("all")


class NotebookCellError(Exception):
    "A notebook cell raised."


class NotebookCell(pytest.Item):
    def __init__(self, *, source, **kwargs):
        super().__init__(**kwargs)
        self.source = source

    def runtest(self):
        shell, here = self.parent.shell, os.getcwd()
        os.chdir(self.path.parent)  # a notebook runs in its own folder, as in Jupyter
        try: shell.run(self.source)
        finally: os.chdir(here)
        if shell.exc is not None:
            import traceback
            raise NotebookCellError("".join(traceback.format_exception(shell.exc)))

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, NotebookCellError): return f"{excinfo.value}\n--- cell ---\n{self.source}"
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, 0, f"{self.path.name}::{self.name}"


def pytest_collect_file(file_path, parent):
    if file_path.suffix != ".ipynb" or not file_path.is_relative_to(NBS) or nbformat is None: return None
    rel = file_path.relative_to(NBS)
    if any(part.startswith(("_", ".")) for part in rel.parts): return None
    return NotebookFile.from_parent(parent, path=file_path)
