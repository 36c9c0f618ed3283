"""Execute notebooks top to bottom in place, so their saved outputs are real, skipping the cells that
nbdev's test flags mark (`#| slow`, `#| cuda`, `#| notest`, `#| eval: false`) unless switched on with
SSL_AE_TEST_FLAGS; a skipped cell keeps the outputs of its last real run (e.g. a slow cell run once with
SSL_AE_TEST_FLAGS=slow). A cell may run for 30 minutes (a hang fails rather than blocks), except at the training
scales a tutorial regenerates its results with (SSL_AE_SCALE=cpu, gpu, colab or paper), where one cell trains a whole table
of runs by design and has no limit. Usage: python tests/execute_notebooks.py nbs/02_data.ipynb [more.ipynb ...]"""
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).parent))
from nbflags import skip_reason  # noqa: E402


class FlaggedClient(NotebookClient):
    "Runs every cell but those skipped by the nbdev test flags, which keep the outputs of their last real run."
    async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
        if cell.cell_type == "code" and skip_reason(cell.source):
            return cell
        return await super().async_execute_cell(cell, cell_index, execution_count, store_history)


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def without_widget_state(nb):
    "Drop saved widget state and widget views: the static site cannot run them, and they weigh hundreds of KB."
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.get("outputs", []) if WIDGET_VIEW not in o.get("data", {})]
    return nb


TRAINING_SCALES = ("cpu", "gpu", "colab", "paper")  # a tutorial's table of runs trains in one cell: an hour or more


def execute(path: Path, timeout: int | None = None):
    "Execute `path` in place; `timeout` seconds a cell (default: 1800, none at the training scales)."
    if timeout is None and os.environ.get("SSL_AE_SCALE") not in TRAINING_SCALES: timeout = 1800
    nb = nbformat.read(path, as_version=4)
    FlaggedClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    nbformat.write(without_widget_state(nb), path)


if __name__ == "__main__":
    for name in sys.argv[1:]:
        start = time.time()
        execute(Path(name))
        print(f"{name}: {time.time() - start:.0f} s")
