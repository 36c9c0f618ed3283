"""tests/run_plain.py, the way a machine without Jupyter or IPython (a lent GPU machine) runs a tutorial."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="reads notebooks: needs nbformat (the dev extra)")

RUN_PLAIN = Path(__file__).parent / "run_plain.py"
sys.path.insert(0, str(RUN_PLAIN.parent))


def run_without_ipython(notebook: Path, *args: str) -> subprocess.CompletedProcess:
    "run_plain.py on `notebook` in a process where `import IPython` fails, as on the GPU machines."
    code = ("import runpy, sys; sys.modules['IPython'] = None; "  # (None in sys.modules: importing it raises ImportError)
            f"sys.argv = ['run_plain.py', {str(notebook)!r}, *{list(args)!r}]; runpy.run_path({str(RUN_PLAIN)!r}, run_name='__main__')")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def notebook(path: Path, *sources: str) -> Path:
    "Write a notebook of code cells with these sources."
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources]), path)
    return path


def test_a_notebook_runs_cell_by_cell_without_ipython(tmp_path):
    notebook(tmp_path / "t.ipynb",
             "from IPython.display import Markdown, display\nimport matplotlib.pyplot as plt\n"
             "fig, ax = plt.subplots(); ax.plot([0, 1]); fig.savefig('figure.png'); display(Markdown('**shown as text**'))",
             "#| slow\nraise SystemExit('a slow cell ran')",
             "open('written.txt', 'w').write(str(1 + 1))")
    done = run_without_ipython(tmp_path / "t.ipynb")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "**shown as text**" in done.stdout and "Cell 1: skipped (#| slow)" in done.stdout
    assert (tmp_path / "written.txt").read_text() == "2" and (tmp_path / "figure.png").stat().st_size > 0  # in the notebook's folder


def test_the_first_failing_cell_stops_the_run_and_is_named(tmp_path):
    notebook(tmp_path / "t.ipynb", "x = 1", "1 / 0", "open('never.txt', 'w')")
    done = run_without_ipython(tmp_path / "t.ipynb")
    assert done.returncode == 1 and "ZeroDivisionError" in done.stderr and "Cell 1 of" in done.stdout
    assert not (tmp_path / "never.txt").exists()


def test_a_budget_computes_the_records_in_slices_that_the_next_call_continues(tmp_path, monkeypatch, capsys):
    """With --budget, a study's records are computed in slices: each call stops cleanly once the next record no longer
    fits, keeps what it computed in the results file, and the next call continues until the page runs to its end.
    (In this process, each call as `run_plain.run` is called by its command line.)"""
    import run_plain
    from ssl_ae.study import Study
    notebook(tmp_path / "t.ipynb",
             "import time\nfrom ssl_ae.study import Study\nstudy = Study('demo', 'cpu', 'results')\n"
             "PLAN = {f'run_seed{s}': None for s in range(6)}",
             "for key in PLAN: study.record(key, lambda: time.sleep(0.3) or {'accuracy': {'all': 0.5}})",
             "open('done.txt', 'w').write(str(len(study.records)))")
    calls, first = [], None
    while not (tmp_path / "done.txt").exists():
        with monkeypatch.context() as m:  # each call patches Study.record afresh, as a new process would
            m.setattr(Study, "record", Study.record); m.chdir(tmp_path)
            assert run_plain.run(tmp_path / "t.ipynb", budget=0.7) == 0
        first = first or capsys.readouterr().out
        calls.append(len(json.loads((tmp_path / "results" / "demo_cpu.json").read_text())["records"]))
        assert len(calls) <= 6, calls
    assert "Budget spent in cell 1" in first and "6 planned runs have no record yet" not in first, first
    assert "Run the same command again to continue" in first, first
    assert len(calls) >= 2 and calls == sorted(set(calls)) and calls[-1] == 6, calls   # each call added records, none lost
    assert (tmp_path / "done.txt").read_text() == "6"


def test_the_runner_explains_itself():
    done = subprocess.run([sys.executable, str(RUN_PLAIN), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--budget SECONDS" in done.stdout and "continue" in done.stdout
    done = subprocess.run([sys.executable, str(RUN_PLAIN), "nothing.ipynb"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "nothing.ipynb does not exist" in done.stderr
