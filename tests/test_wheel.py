"""The package as `pip install ssl_ae` delivers it: the wheel, in a fresh virtual environment without the dev extra, used
from outside the repository. Nothing may work only from a checkout."""
import ast
import importlib.metadata as md
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from test_readme import run_readme_examples

ROOT = Path(__file__).resolve().parents[1]
DEV_EXTRA = {"nbdev", "execnb", "ghapi", "nbclient", "ipykernel", "pytest", "pytest-xdist", "mlxtend"}  # settings.ini's dev_requirements
COLAB_ONLY = {"google"}  # google.colab: imported only inside Colab, which provides it
OPTIONAL = {"triton": "the fused augmentation on a CUDA GPU (chapter 03); it comes with torch on Linux, and without it the batched path serves",
            "lightly": "`ssl_ae bench lightly` only (chapter 16), which says how to install it"}  # imported inside try/except or a function


def canonical(name: str) -> str: return re.sub(r"[-_.]+", "-", name).lower()


def build_wheel(out: Path) -> Path:
    "Build the wheel as a release would, from a copy of the packaging files and the package (no build folders left in the checkout)."
    import setuptools
    src = out.parent / "src"
    shutil.copytree(ROOT / "ssl_ae", src / "ssl_ae", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "settings.ini", "pyproject.toml", "README.md"): shutil.copy(ROOT / name, src / name)
    own = tuple(map(int, setuptools.__version__.split(".")[:2])) >= (70, 1)  # this setuptools writes wheels itself: no isolated build needed
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", *(["--no-build-isolation"] if own else []),
                          "-w", str(out), str(src)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return next(out.glob("ssl_ae-*.whl"))


def imported_distributions(wheel: Path) -> set[str]:
    "Third-party distributions whose modules the package's sources import (at any depth of a module)."
    tops = set()
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if name.startswith("ssl_ae/") and name.endswith(".py"):
                for node in ast.walk(ast.parse(z.read(name))):
                    if isinstance(node, ast.Import): tops |= {a.name.split(".")[0] for a in node.names}
                    elif isinstance(node, ast.ImportFrom) and node.level == 0: tops.add(node.module.split(".")[0])
    tops -= set(sys.stdlib_module_names) | {"ssl_ae"} | COLAB_ONLY | set(OPTIONAL)
    owners = md.packages_distributions()
    missing = tops - set(owners)
    assert not missing, f"imports with no installed distribution: {missing}"
    return {canonical(owners[t][0]) for t in tops}


def expose_runtime_packages(venv_site: Path, shared: Path):
    "Make this environment's installed distributions, except ssl_ae itself and the dev extra, visible to the fresh one (links, no copies)."
    here = Path(sysconfig.get_paths()["purelib"])
    shared.mkdir()
    for dist in md.distributions():
        if canonical(dist.metadata["Name"]) in {canonical(n) for n in DEV_EXTRA | {"ssl_ae"}}: continue
        for top in {f.parts[0] for f in (dist.files or []) if f.parts and f.parts[0] != ".."}:
            src, dst = here / top, shared / top
            if src.exists() and not dst.exists() and not top.endswith(".pth") and not top.startswith("__editable__"): dst.symlink_to(src)
    (venv_site / "runtime_packages.pth").write_text(str(shared) + "\n")


def test_wheel_installs_without_the_dev_extra_and_runs_outside_the_repository(tmp_path):
    wheel = build_wheel(tmp_path / "dist")
    names = zipfile.ZipFile(wheel).namelist()
    assert "ssl_ae/cli.py" in names and not any(n.startswith(("nbs/", "tests/")) for n in names)
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    requires = {canonical(re.split(r"[ ;<>=!~\[(]", line.split(":", 1)[1].strip())[0])
                for line in meta.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line}
    undeclared = imported_distributions(wheel) - requires
    assert not undeclared, f"the package imports {undeclared} but does not list them in settings.ini's requirements"

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py, bin_dir = venv / "bin" / "python", venv / "bin"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True,
                               check=True).stdout.strip())
    subprocess.run([str(py), "-m", "pip", "uninstall", "--quiet", "--yes", "setuptools"], capture_output=True)  # venv's bundled copy is older than torch needs
    expose_runtime_packages(site, tmp_path / "shared")
    install = subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--no-index", str(wheel)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr  # every requirement is satisfiable without the dev extra and without an index

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    def run(*cmd, timeout=600):
        done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=elsewhere, timeout=timeout)
        assert done.returncode == 0, f"{cmd}: {done.stderr[-2000:]}"
        return done.stdout
    where = run(py, "-c", "import ssl_ae, importlib.util as u; print(ssl_ae.__file__, u.find_spec('nbdev'), u.find_spec('mlxtend'))")
    assert str(site) in where and str(ROOT) not in where and where.strip().endswith("None None"), where
    assert run(bin_dir / "ssl_ae", "--version").strip() == f"ssl_ae {md.version('ssl_ae')}"
    run_readme_examples(str(py), bin_dir, elsewhere)  # the README's own images, own loop and export, exactly as printed
