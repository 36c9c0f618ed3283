"""Execute notebooks top to bottom in place, so their saved outputs are real, skipping the cells that
nbdev's test flags mark (`#| slow`, `#| cuda`, `#| notest`, `#| eval: false`) unless switched on with
SSL_AE_TEST_FLAGS; a skipped cell keeps the outputs of its last real run (e.g. a slow cell run once with
SSL_AE_TEST_FLAGS=slow). A cell may run for 30 minutes (a hang fails rather than blocks), except at the training
scales a tutorial regenerates its results with (SSL_AE_SCALE=cpu, gpu, colab or paper), where one cell trains a whole table
of runs by design and has no limit. Usage: python tests/execute_notebooks.py nbs/02_data.ipynb [more.ipynb ...]

A chapter is executed in place: its saved outputs are its real run. A tutorial's page shows its committed `cpu`
results, so one executed at another scale (a smoke check, or SSL_AE_SCALE unset) is written to `executed/` instead,
and the page is left as it is, unless `--update` asks for the page itself; `--help` says the rest."""
import argparse
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


def destination(path: Path, update: bool = False, out: Path = Path("executed")) -> Path:
    """Where the executed `path` is written: in place for a chapter, for a tutorial at the cpu scale (its committed
    results) or with `update`; else `out`/NAME, so that a smoke check does not replace the page's cpu outputs."""
    tutorial = path.resolve().parent.name == "tutorials"
    if not tutorial or update or os.environ.get("SSL_AE_SCALE") == "cpu": return path
    return out / path.name


def execute(path: Path, timeout: int | None = None, to: Path | None = None):
    "Execute `path` and write it to `to` (default: in place); `timeout` seconds a cell (default: 1800, none at the training scales)."
    if timeout is None and os.environ.get("SSL_AE_SCALE") not in TRAINING_SCALES: timeout = 1800
    nb = nbformat.read(path, as_version=4)
    FlaggedClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    to = to or path
    to.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(without_widget_state(nb), to)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "),
                                epilog="SSL_AE_SCALE picks a tutorial's scale (default: smoke outside Colab); "
                                       "SSL_AE_TEST_FLAGS='slow cuda' runs the cells those flags mark.")
    p.add_argument("notebooks", nargs="+", type=Path, help="the .ipynb files to execute, in order")
    p.add_argument("--update", action="store_true",
                   help="write a tutorial executed at a scale other than cpu over its page (default: into --out)")
    p.add_argument("--out", type=Path, default=Path("executed"),
                   help="where such copies go (default: executed/); chapters and cpu-scale tutorials are executed in place")
    return p


if __name__ == "__main__":
    args = parser().parse_args()
    missing = [str(n) for n in args.notebooks if not n.is_file()]
    if missing: parser().error(f"no such notebook: {', '.join(missing)}")
    for name in args.notebooks:
        start, to = time.time(), destination(name, args.update, args.out)
        execute(name, to=to)
        print(f"{name}: {time.time() - start:.0f} s" + (f" (written to {to}: the page keeps its cpu outputs; --update "
                                                          "writes over it)" if to != name else ""))
