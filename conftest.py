"""Collect every notebook in nbs/ as a pytest test through nbval, so that `pytest` runs the tests in tests/ and
executes every chapter: code, documentation and tests cannot drift apart.

- Notebooks are executed from output-stripped copies held in memory: `nbdev_clean` keeps outputs but drops
  execution counts, which nbval would otherwise reject ("Unrun reference cell has outputs").
- Outputs are not compared (nbval's lax mode): a notebook passes when every cell runs without error, and its
  cells assert what they claim (fastcore's test_eq, test_close, test_fail).
- Cells marked with nbdev's test flags (`#| slow`, `#| cuda`, `#| notest`) or `#| eval: false` are skipped, as
  `nbdev_test` skips them; SSL_AE_TEST_FLAGS="slow cuda" switches flags on.
- Notebooks whose name starts with `_` are scratch (nbdev ignores them too); nbs/_proc is nbdev's build output.
- Without nbval and nbformat (a GPU machine without the dev extra), the notebooks are not collected and tests/ runs.
- Under pytest-xdist (`-n auto --dist loadfile`, the project's addopts) a notebook's cells run in one process, in order.
  `auto` here means one worker more than the machine has cores (`pytest_xdist_auto_num_workers`): each worker runs one
  thread, and a worker often waits (a notebook kernel starting, a subprocess, a DataLoader's workers), so two workers on
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

import pytest

try:
    import nbformat
    from nbval.plugin import CURRENT_ENV_KERNEL_NAME, IPyNbCell, IPyNbFile, RunningKernel
except ImportError:  # a machine without the dev extra (the GPU check's): tests/ runs, the notebooks are not collected
    IPyNbFile = None

sys.path.insert(0, str(Path(__file__).parent / "tests"))
from nbflags import skip_reason  # noqa: E402
from testdevice import DEVICE  # noqa: E402


def pytest_xdist_auto_num_workers(config):
    "`-n auto`: on up to 4 cores a worker per core and one more (see the module's docstring); else one per core."
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


class NotebookFile(IPyNbFile or object):
    "A notebook run as a test: stripped of outputs, flagged cells skipped, outputs not compared."

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.compare_outputs = False

    def setup(self):  # always the kernel of the environment running pytest
        self.kernel = RunningKernel(CURRENT_ENV_KERNEL_NAME, cwd=str(self.path.parent),
                                    startup_timeout=self.config.option.nbval_kernel_startup_timeout)
        self.setup_sanitize_files()

    def collect(self):
        nb = nbformat.read(str(self.path), as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code": cell.outputs, cell.execution_count = [], None
        self.nb = nb
        for number, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
            item = IPyNbCell.from_parent(self, name=f"Cell {number}", cell_num=number, cell=cell,
                                         options={"check": False, "skip": False, "check_exception": False})
            reason = skip_reason(cell.source)
            if reason: item.add_marker(pytest.mark.skip(reason=f"{reason} cell (nbdev test flag)"))
            yield item


def pytest_collect_file(file_path, parent):
    if file_path.suffix != ".ipynb" or not file_path.is_relative_to(NBS) or IPyNbFile is None: return None
    rel = file_path.relative_to(NBS)
    if any(part.startswith(("_", ".")) for part in rel.parts): return None
    return NotebookFile.from_parent(parent, path=file_path)
