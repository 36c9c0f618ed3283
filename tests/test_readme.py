"""The README's library example (run by tests/test_wheel.py with the installed wheel) and the docs' index show the same section."""
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def run_readme_examples(python: str, cwd: Path):
    "Run every python block of the README as printed, with `python`, in `cwd`; each must print three finite losses."
    blocks = readme_python_blocks()
    assert blocks, "the README has no python example"
    for code in blocks:
        run = subprocess.run([python, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=300)
        assert run.returncode == 0, run.stderr
        losses = [float(m) for m in re.findall(r"loss ([0-9.]+)", run.stdout)]
        assert len(losses) == 3 and all(l == l for l in losses), run.stdout
# tests/test_wheel.py runs them with the installed wheel, outside the repository (running them here as well would only repeat that)


def test_index_shows_the_readme_section():
    section = re.search(r"## Your images, your loop, your encoder.*?(?=\n## )", (ROOT / "README.md").read_text(), flags=re.S).group(0).strip()
    cells = json.loads((ROOT / "nbs" / "index.ipynb").read_text())["cells"]
    assert any("".join(c["source"]).strip() == section for c in cells), "nbs/index.ipynb must hold the README's section unchanged"
