"""Run a tutorial's code cells in order as plain Python, for machines that have torch but no Jupyter kernel or IPython
(the lent GPU machines): the study writes its results file and figures (`results/NAME_SCALE.json` and PNGs) exactly
as an execution of the notebook does, and the notebook itself is left unchanged. Executed later with
`tests/execute_notebooks.py` at the same scale, the notebook loads those records instead of computing them. Cells the
nbdev test flags mark are skipped as `tests/execute_notebooks.py` skips them (`SSL_AE_TEST_FLAGS` switches them on);
where IPython is missing, `IPython.display` is a stand-in whose `display` prints Markdown as text. Usage, on a GPU:

    SSL_AE_SCALE=gpu python tests/run_plain.py nbs/tutorials/01_sidae.ipynb

Prints each cell's time, and exits non-zero at the first cell that fails, naming it."""
import sys
import time
import traceback
import types
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).parent))
from nbflags import skip_reason  # noqa: E402


def stub_ipython():
    "An `IPython.display` that prints what a notebook would display (Markdown as its text), for machines without IPython."
    ipython, display = types.ModuleType("IPython"), types.ModuleType("IPython.display")
    class Markdown(str):
        "Markdown kept as its text."
    display.Markdown, display.display = Markdown, lambda *objs, **kw: print(*objs)
    ipython.display, ipython.get_ipython, ipython.version_info = display, lambda: None, (9, 0)  # what matplotlib asks of it
    sys.modules["IPython"], sys.modules["IPython.display"] = ipython, display


def run(notebook: Path) -> int:
    "Execute the notebook's code cells in one namespace, in its folder; return the process's exit status."
    import os
    import matplotlib
    matplotlib.use("Agg")  # figures are saved by the study, never shown
    try: import IPython.display  # noqa: F401
    except ImportError: stub_ipython()
    cells = [c for c in nbformat.read(notebook, as_version=4).cells if c.cell_type == "code"]
    os.chdir(notebook.parent)
    ns = {"__name__": "__main__"}
    for number, cell in enumerate(cells):
        reason = skip_reason(cell.source)
        if reason:
            print(f"== Cell {number}: skipped ({reason})", flush=True)
            continue
        start = time.time()
        try: exec(compile(cell.source, f"{notebook.name}, Cell {number}", "exec"), ns)
        except Exception:
            traceback.print_exc()
            print(f"== Cell {number} of {notebook} failed after {time.time() - start:.0f} s", flush=True)
            return 1
        import matplotlib.pyplot as plt
        plt.close("all")
        print(f"== Cell {number}: {time.time() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2: raise SystemExit(__doc__)
    raise SystemExit(run(Path(sys.argv[1]).resolve()))
