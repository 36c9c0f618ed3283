"""Run a tutorial's code cells in order as plain Python, for machines that have torch but no Jupyter kernel or IPython
(the lent GPU machines): the study writes its results file and figures (`results/NAME_SCALE.json` and PNGs) exactly
as an execution of the notebook does, and the notebook itself is left unchanged. Executed later with
`tests/execute_notebooks.py` at the same scale, the notebook loads those records instead of computing them. Cells the
nbdev test flags mark are skipped as `tests/execute_notebooks.py` skips them (`SSL_AE_TEST_FLAGS` switches them on);
where IPython is missing, `IPython.display` is a stand-in whose `display` prints Markdown as text. Usage, on a GPU:

    SSL_AE_SCALE=gpu python tests/run_plain.py nbs/tutorials/01_sidae.ipynb
    SSL_AE_SCALE=gpu python tests/run_plain.py nbs/tutorials/01_sidae.ipynb --budget 500

Prints each cell's time, and exits non-zero at the first cell that fails, naming it. With `--budget SECONDS` it computes
the study's records in slices: a new record (a run trained and probed, a supervised row, ...) starts only while the
longest record computed so far in this call still fits in what is left of the budget, and when none fits the run stops
cleanly (exit 0) with every record so far written to `results/NAME_SCALE.json`. The same command again continues where
it stopped, since a study computes only the records its file lacks; the last call runs the page to its end. The first
record of a call always starts (nothing has been timed yet), so give the machine's own time limit one record's time
above the budget.

Results are computed from committed code: commit first, and where the copy of the repository that runs this has no
`.git` (a lent GPU machine), name the commit it is a copy of, `SSL_AE_COMMIT=$(git rev-parse --short HEAD)`, so that
the results file records it (`tests/test_results.py` refuses a file without a clean commit)."""
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


class BudgetSpent(Exception):
    "No record that is not yet stored fits in what is left of the time budget."


def guard_records(budget: float) -> dict:
    """Make `Study.record` start a new record only while the longest one computed so far fits in the time left of
    `budget` seconds (counted from now, once ssl_ae is imported); returns the counts it keeps."""
    from ssl_ae.study import Study
    record, seen, start = Study.record, {"longest": 0.0, "computed": 0}, time.time()
    def guarded(self, key, compute):
        if key in self.records: return record(self, key, compute)
        left = budget - (time.time() - start)
        if left <= 0 or left < seen["longest"]:
            raise BudgetSpent(f"{key} would need about {seen['longest']:.0f} s; {max(left, 0):.0f} s of the budget are left")
        t = time.time()
        out = record(self, key, compute)
        seen["longest"], seen["computed"] = max(seen["longest"], time.time() - t), seen["computed"] + 1
        return out
    Study.record = guarded
    return seen


def run(notebook: Path, budget: float | None = None) -> int:
    "Execute the notebook's code cells in one namespace, in its folder; return the process's exit status."
    import os
    import matplotlib
    matplotlib.use("Agg")  # figures are saved by the study, never shown
    try: import IPython.display  # noqa: F401
    except ImportError: stub_ipython()
    cells = [c for c in nbformat.read(notebook, as_version=4).cells if c.cell_type == "code"]
    os.chdir(notebook.parent)
    ns = {"__name__": "__main__"}
    seen = guard_records(budget) if budget is not None else None
    for number, cell in enumerate(cells):
        reason = skip_reason(cell.source)
        if reason:
            print(f"== Cell {number}: skipped ({reason})", flush=True)
            continue
        start = time.time()
        try: exec(compile(cell.source, f"{notebook.name}, Cell {number}", "exec"), ns)
        except BudgetSpent as stop:
            study = ns.get("study")
            left = sorted(k for k in ns.get("PLAN", {}) if study is None or k not in study.records)
            print(f"== Budget spent in cell {number}: {stop}. This call computed {seen['computed']} records"
                  + (f"; {study.path} holds {len(study.records)}" if study is not None else "")
                  + f"; {len(left)} planned runs have no record yet. Run the same command again to continue.", flush=True)
            return 0
        except Exception:
            traceback.print_exc()
            print(f"== Cell {number} of {notebook} failed after {time.time() - start:.0f} s", flush=True)
            return 1
        import matplotlib.pyplot as plt
        plt.close("all")
        print(f"== Cell {number}: {time.time() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("notebook", type=Path, help="the tutorial to run, e.g. nbs/tutorials/01_sidae.ipynb")
    parser.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                        help="compute records only while they fit in this many seconds, then stop cleanly (exit 0)")
    args = parser.parse_args()
    if not args.notebook.exists(): parser.error(f"{args.notebook} does not exist: give the path of a tutorial's notebook.")
    raise SystemExit(run(args.notebook.resolve(), args.budget))
