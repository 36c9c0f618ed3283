"""The README's library example (run by tests/test_wheel.py with the installed wheel) and the docs' index show the same section."""
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_section() -> str:
    return re.search(r"## Your images, your loop, your encoder.*?(?=\n## )", (ROOT / "README.md").read_text(), flags=re.S).group(0)


def readme_blocks() -> list[tuple[str, str]]:
    "The section's code blocks in order: (language, code)."
    return re.findall(r"```(sh|python)\n(.*?)```", readme_section(), flags=re.S)


def write_photos(root: Path, seed: int = 0, per_class: int = 10):
    """A small folder of real image files as a user has them: train/ and test/ class folders, JPEG and PNG, colour, grey
    and RGBA, of mixed sizes and shapes (`per_class` training images of each of two classes, half as many to test)."""
    from PIL import Image
    import numpy as np
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("test", per_class // 2)):
        for c, name in enumerate(("cat", "dog")):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = rng.integers(40, 120, 2)
                base = np.array([200, 60, 60] if c == 0 else [60, 60, 200])
                rgb = np.clip(base + 40 * rng.standard_normal((h, w, 3)), 0, 255).astype(np.uint8)
                im = Image.fromarray(rgb)
                if i % 3 == 1: im = im.convert("L")
                if i % 3 == 2: im = im.convert("RGBA")
                im.save(root / split / name / (f"{i}.jpg" if i % 3 == 1 else f"{i}.png"))


def run_readme_examples(python: str, bin_dir: Path, cwd: Path):
    """Run the section's commands and examples as printed, in `cwd` beside a small `photos` folder: `ssl_ae pretrain` on
    it and `ssl_ae export` (each through the console script), then the own-loop example (three finite losses) and the
    five lines that load the export with torch and torchvision alone, each in a namespace of its own in one Python
    process (a second torch start-up would prove nothing more; the loop does not need the export, so running the
    commands first changes nothing). One flag is added: `--epochs 40` after `ssl_ae pretrain`. For 8 images the CPU
    rule keeps SidAE's 200 epochs (400 steps, a minute of the test suite's two cores), and the other 160 run no line
    the first 40 do not (40 epochs still thin the checkpoints, as 200 do)."""
    write_photos(cwd / "photos", per_class=4)  # 8 training images: batch 4, the CPU's small network, short epochs
    blocks = readme_blocks()
    assert [k for k, _ in blocks] == ["sh", "python", "sh", "python"], blocks
    for line in (l for kind, code in blocks if kind == "sh" for l in code.strip().splitlines()):
        if line.startswith("ssl_ae pretrain "): line += " --epochs 40"
        run = subprocess.run(line.replace("ssl_ae ", f"{bin_dir / 'ssl_ae'} ", 1), shell=True, capture_output=True,
                             text=True, cwd=cwd, timeout=600)
        assert run.returncode == 0, f"{line}: {run.stderr[-2000:]}"
    examples = [code for kind, code in blocks if kind == "python"]
    driver = ("import sys\nfor i, code in enumerate(sys.argv[1:]):\n"
              "    print(f'=== example {i}')\n    exec(code, {'__name__': '__main__'})\n")
    run = subprocess.run([python, "-c", driver, *examples], capture_output=True, text=True, cwd=cwd, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    loop = run.stdout.split("=== example 1")[0]
    losses = [float(m) for m in re.findall(r"loss ([0-9.]+)", loop)]
    assert "sidae_loss" in examples[0] and len(losses) == 3 and all(l == l for l in losses), run.stdout
    assert "=== example 1" in run.stdout and "load_state_dict" in examples[1]
    summary = json.loads((cwd / "runs" / "photos" / "summary.json").read_text())
    assert summary["probe_accuracy"] is not None and summary["config"]["batch_size"] == 4, summary  # 8 images: batch 4
    assert summary["config"]["epochs"] == 40 and summary["config"]["checkpoint_every"] == 2, summary  # thinned, as at 200
    assert (cwd / "encoder.pt").exists() and (cwd / "encoder.json").exists()
# tests/test_wheel.py runs them with the installed wheel, outside the repository (running them here as well would only repeat that)


def test_index_shows_the_readme_section():
    section = readme_section().strip()
    cells = json.loads((ROOT / "nbs" / "index.ipynb").read_text())["cells"]
    assert any("".join(c["source"]).strip() == section for c in cells), "nbs/index.ipynb must hold the README's section unchanged"
