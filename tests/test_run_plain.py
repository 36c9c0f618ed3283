"""tests/run_plain.py, the way a machine without Jupyter or IPython (a lent GPU machine) runs a tutorial."""
import subprocess
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="reads notebooks: needs nbformat (the dev extra)")

RUN_PLAIN = Path(__file__).parent / "run_plain.py"


def run_without_ipython(notebook: Path) -> subprocess.CompletedProcess:
    "run_plain.py on `notebook` in a process where `import IPython` fails, as on the GPU machines."
    code = ("import runpy, sys; sys.modules['IPython'] = None; "  # (None in sys.modules: importing it raises ImportError)
            f"sys.argv = ['run_plain.py', {str(notebook)!r}]; runpy.run_path({str(RUN_PLAIN)!r}, run_name='__main__')")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_a_notebook_runs_cell_by_cell_without_ipython(tmp_path):
    cell = nbformat.v4.new_code_cell
    nbformat.write(nbformat.v4.new_notebook(cells=[
        cell("from IPython.display import Markdown, display\nimport matplotlib.pyplot as plt\n"
             "fig, ax = plt.subplots(); ax.plot([0, 1]); fig.savefig('figure.png'); display(Markdown('**shown as text**'))"),
        cell("#| slow\nraise SystemExit('a slow cell ran')"),
        cell("open('written.txt', 'w').write(str(1 + 1))")]), tmp_path / "t.ipynb")
    done = run_without_ipython(tmp_path / "t.ipynb")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "**shown as text**" in done.stdout and "Cell 1: skipped (#| slow)" in done.stdout
    assert (tmp_path / "written.txt").read_text() == "2" and (tmp_path / "figure.png").stat().st_size > 0  # in the notebook's folder


def test_the_first_failing_cell_stops_the_run_and_is_named(tmp_path):
    cell = nbformat.v4.new_code_cell
    nbformat.write(nbformat.v4.new_notebook(cells=[cell("x = 1"), cell("1 / 0"), cell("open('never.txt', 'w')")]), tmp_path / "t.ipynb")
    done = run_without_ipython(tmp_path / "t.ipynb")
    assert done.returncode == 1 and "ZeroDivisionError" in done.stderr and "Cell 1 of" in done.stdout
    assert not (tmp_path / "never.txt").exists()
