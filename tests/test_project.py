"""The project's promises about itself: dependencies, the README's commands, an import without side effects."""
import configparser
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="reads notebooks: needs nbformat (the dev extra)")

ROOT = Path(__file__).parents[1]
TEST_COMMAND = 'pip install -e ".[dev]" && pytest'


def settings():
    cfg = configparser.ConfigParser(delimiters=["="])
    cfg.read(ROOT / "settings.ini")
    return cfg["DEFAULT"]


def test_runtime_dependencies_are_the_agreed_few():
    names = {re.split(r"[<>=!~ ]", r)[0] for r in settings()["requirements"].split()}
    assert names == {"torch", "torchvision", "numpy", "scipy", "pillow", "matplotlib", "ipywidgets", "ipython", "tqdm", "fastcore"}


def test_dev_extra_pins_nbdev_2():
    dev = settings()["dev_requirements"].split()
    for pin in ("nbdev==2.4.14", "execnb<0.2", "fastcore<2", "ghapi<2", "nbclient", "ipykernel", "pytest", "mlxtend"): assert pin in dev
    assert "jupyterlab" not in dev  # an editor is the developer's choice; JupyterLab alone took 26 s of CI's 12 minutes


def _shell_commands(markdown: str) -> list:
    blocks = re.findall(r"```(?:sh|bash)\n(.*?)```", markdown, flags=re.S)
    return [line.strip() for b in blocks for line in b.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_readme_and_index_agree_on_the_quick_start():
    readme = _shell_commands((ROOT / "README.md").read_text())
    index = nbformat.read(ROOT / "nbs" / "index.ipynb", as_version=4)
    index_cmds = _shell_commands("\n".join(c.source for c in index.cells if c.cell_type == "markdown"))
    assert TEST_COMMAND in readme and TEST_COMMAND in index_cmds
    quick = [c for c in readme if c.startswith("ssl_ae ")]
    assert quick and quick == [c for c in index_cmds if c.startswith("ssl_ae ")]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert TEST_COMMAND in ci


def test_import_has_no_side_effects():
    "Importing every module touches no GPU and starts no download."
    modules = sorted(f"ssl_ae.{m.stem}" for m in (ROOT / "ssl_ae").glob("*.py") if not m.name.startswith("_"))
    code = ("import importlib, torch, socket\n"
            "def refuse(*a, **k): raise AssertionError('network used at import')\n"
            "socket.socket.connect = refuse\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "assert not torch.cuda.is_initialized()\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr


def test_every_module_has_its_notebook():
    modidx = (ROOT / "ssl_ae" / "_modidx.py").read_text()
    for module in (ROOT / "ssl_ae").glob("*.py"):
        if module.name.startswith("_"): continue
        assert f"'ssl_ae.{module.stem}'" in modidx, f"{module.name} is not exported from a notebook"


def imports_of_the_package() -> tuple[dict, dict, list]:
    "(chapter of each module, the package modules each module imports anywhere in it, private names imported across modules)."
    import ast
    chapter = {re.sub(r"^\d+_", "", p.stem): int(p.stem[:2]) for p in (ROOT / "nbs").glob("[0-9][0-9]_*.ipynb")}
    edges, private = {}, []
    for path in (ROOT / "ssl_ae").glob("*.py"):
        if path.stem.startswith("_"): continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and (node.level == 1 or (node.module or "").startswith("ssl_ae"))): continue
            mod = (node.module or "").replace("ssl_ae.", "").replace("ssl_ae", "")
            for target in ([a.name for a in node.names] if mod == "" else [mod]):
                if target in chapter: edges.setdefault(path.stem, set()).add(target)
            private += [(path.stem, mod, a.name) for a in node.names if a.name.startswith("_") and a.name != "__version__"]
    return chapter, edges, private


def test_one_module_per_chapter_each_importing_only_earlier_chapters_and_no_private_names():
    chapter, edges, private = imports_of_the_package()
    modules = {p.stem for p in (ROOT / "ssl_ae").glob("*.py") if not p.stem.startswith("_")}
    assert set(chapter) == modules, (set(chapter) ^ modules)
    assert len(set(chapter.values())) == len(chapter), "two chapters share a number"
    later = [(m, t) for m, ts in edges.items() for t in ts if chapter[t] >= chapter[m]]
    assert not later, f"modules import from their own or a later chapter: {later}"
    assert not private, f"private names imported from another module: {private}"


def test_the_index_and_readme_list_every_chapter_in_order():
    chapters = sorted(p.name for p in (ROOT / "nbs").glob("[0-9][0-9]_*.ipynb"))
    index = "\n".join(c.source for c in nbformat.read(ROOT / "nbs" / "index.ipynb", as_version=4).cells)
    assert re.findall(r"^\| \[\w+\]\((\d\d_\w+\.ipynb)\)", index, re.M) == chapters
    assert re.findall(r"^\| `nbs/(\d\d_\w+\.ipynb)`", (ROOT / "README.md").read_text(), re.M) == chapters


def test_the_index_draws_the_import_graph_as_it_is():
    chapter, edges, _ = imports_of_the_package()
    def reach(a, seen):
        for b in edges.get(a, ()):
            if b not in seen: seen.add(b); reach(b, seen)
        return seen
    reduced = {f"{t} --> {m}" for m, ts in edges.items() for t in ts if not any(t in reach(u, set()) for u in ts if u != t)}
    index = "\n".join(c.source for c in nbformat.read(ROOT / "nbs" / "index.ipynb", as_version=4).cells)
    drawn = set(re.findall(r"^  (\w+ --> \w+)$", index.split("```mermaid")[-1].split("```")[0], re.M))
    assert drawn == reduced, f"the index's import graph is out of date: missing {reduced - drawn}, extra {drawn - reduced}"


TUTORIALS = sorted((ROOT / "nbs" / "tutorials").glob("[0-9]*.ipynb"))


def test_four_tutorials_each_with_badge_colab_install_modes_and_cost():
    "Each paper tutorial opens in Colab, installs itself only there, picks its scale with tutorial_scale(), states its cost and prints its paper's deviations."
    assert [t.stem for t in TUTORIALS] == ["01_sidae", "02_aasae", "03_dae_embedding", "04_graded_similarity", "05_one_bench"]
    for path in TUTORIALS[:4]:
        nb = nbformat.read(path, as_version=4)
        text = "\n".join(c.source for c in nb.cells)
        assert f"colab.research.google.com/github/ssl-ae/ssl_ae/blob/main/nbs/tutorials/{path.name}" in text, path.name
        install = [c.source for c in nb.cells if c.cell_type == "code" and "pip" in c.source]
        assert len(install) == 1 and 'if "google.colab" in sys.modules' in install[0], path.name
        assert "SCALE = tutorial_scale()" in text and "PAPER_PROBE = False" in text, path.name
        assert "minute" in text and "**Cost.**" in text and "print(cost_line(list(PLAN.values()), SCALE))" in text, path.name
        assert "SSL_AE_SCALE=cpu python tests/execute_notebooks.py" in text and "scale_config(SCALE" in text and "runs_folder(" in text, path.name
        assert "What we run differently, and why" in text and "deviations_markdown(" in text, path.name
        assert not any("#| export" in c.source for c in nb.cells), f"{path.name}: tutorials are not exported"


def test_index_and_readme_link_every_tutorial():
    index = "\n".join(c.source for c in nbformat.read(ROOT / "nbs" / "index.ipynb", as_version=4).cells)
    readme = (ROOT / "README.md").read_text()
    for path in TUTORIALS:
        assert f"tutorials/{path.name}" in index and f"tutorials/{path.stem}" in readme, path.name
