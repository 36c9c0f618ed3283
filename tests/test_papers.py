"""Each paper's table (ssl_ae.papers) against the values quoted from the papers in issue 9, so a typo in a preset,
a protocol or a published number fails here rather than in a 10-hour run."""
import pytest

from ssl_ae.augment import PRESETS
from ssl_ae.papers import PAPERS, PROTOCOLS, paper_preset
from ssl_ae.train import Config


def test_sidae():
    s = paper_preset("sidae")
    assert (s["optimizer"], s["lr"], s["weight_decay"], s["batch_size"], s["schedule"], s["epochs"]) == ("sgd", 0.03, 5e-4, 512, "cosine", 200)
    assert (s["backbone"], s["dim"], s["hidden"], s["projector_layers"], s["w"], s["knn_k"]) == ("resnet18_imagenet", 2048, 512, 3, 0.5, 200)
    assert paper_preset("sidae", "stl10")["w"] == 0.25 and paper_preset("simsiam", "fashion_mnist")["augment"] == "simsiam_mnist"
    p = PROTOCOLS["sidae"]
    assert (p.optimizer, p.lr, p.momentum, p.batch_size, p.epochs, p.standardize, p.recalibrate) == ("sgd", 0.05, 0.9, 256, 50, False, False)
    t = PAPERS["sidae"]
    expected = {("CIFAR-10", "CIFAR-10", "100 %"): (64.75, 57.08, 57.44), ("CIFAR-10", "CIFAR-10", "1 %"): (51.67, 44.06, 40.67),
                ("Fashion-MNIST", "Fashion-MNIST", "100 %"): (88.78, 85.10, 87.67), ("Fashion-MNIST", "Fashion-MNIST", "1 %"): (81.62, 77.84, 80.20),
                ("MNIST", "MNIST", "100 %"): (97.80, 96.59, 97.23), ("MNIST", "MNIST", "1 %"): (94.65, 79.42, 88.41),
                ("STL-10", "STL-10", "100 %"): (61.18, 56.74, 48.39), ("STL-10", "CIFAR-10", "100 %"): (66.20, 56.64, 57.08)}
    for (pre, probe, labels), values in expected.items():
        got = tuple(t.number("table1", pretrain=pre, probe=probe, labels=labels, method=m)[0] for m in ("sidae", "simsiam", "dae"))
        assert got == values, (pre, probe, labels)
    assert t.number("w_sweep", pretrain="CIFAR-10", labels="100 %", w=0.125)[0] == 66.20
    assert t.number("w_sweep", pretrain="CIFAR-10", labels="1 %", w=0.125)[0] == 55.61
    assert [t.number("w_sweep", pretrain="STL-10", probe=p, w=0.5)[0] for p in ("STL-10", "CIFAR-10")] == [60.44, 65.18]
    assert any("w = 0.75" in n for n in t.notes) and any("uniformly at random" in n for n in t.notes)


def test_aasae():
    s = paper_preset("aasae")
    assert (s["optimizer"], s["lr"], s["weight_decay"], s["batch_size"], s["schedule"], s["warmup_epochs"]) == ("adam", 2.5e-4, 0.0, 256, "warmup_constant", 10)
    assert (s["augment"], s["logscale"], s["dim"]) == ("aasae_cifar", 0.0, 128)
    a = PRESETS["aasae_cifar"]
    assert (a.jitter, a.jitter_p, a.gray_p, a.flip_p, a.crop_scale, a.blur_p) == ((0.4, 0.4, 0.4, 0.1), 0.8, 0.2, 0.5, (0.08, 1.0), 0.0)
    b = PRESETS["aasae_stl10"]
    assert (b.jitter, b.blur_p) == ((0.8, 0.8, 0.8, 0.2), 0.5)
    assert paper_preset("aasae", "stl10")["augment"] == "aasae_stl10" and paper_preset("aasae", "stl10")["lr"] == 5e-4
    assert paper_preset("vae")["augment"] == paper_preset("ae")["augment"] == "none"
    p = PROTOCOLS["aasae"]
    assert (p.optimizer, p.nesterov, p.epochs, p.lr, p.batch_size) == ("sgd", True, 90, 0.1, 256)
    t = PAPERS["aasae"]
    assert [t.number("table1", dataset="CIFAR-10", method=m) for m in ("ae", "aaae", "vae", "aasae")] == [56.34, 50.62, 57.16, 87.14]
    assert [t.number("table1", dataset="STL-10", method=m) for m in ("vae", "aasae")] == [44.15, 84.72]


def test_white():
    s = paper_preset("dae_embed")
    assert (s["optimizer"], s["lr"], s["batch_size"], s["schedule"], s["epochs"], s["backbone"], s["dim"]) == ("adam", 1e-4, 512, "cosine", 300, "white", 64)
    assert s["normalize_input"] is False and paper_preset("simclr", paper="white")["projector_layers"] == 1
    p = PROTOCOLS["white"]
    assert (p.optimizer, p.lr, p.batch_size, p.epochs) == ("adam", 1e-3, 512, 200)
    t = PAPERS["white"]
    table = {(r["denoising"], r["embedding"]): (r["alpha"], r["accuracy"]) for r in t.rows("table2", method="dae_embed")}
    assert table == {(True, "l1"): (0.1, 67.1), (True, "l2"): (1.0, 67.1), (True, "ncs"): (10.0, 67.3), (True, None): (0.0, 65.9),
                     (False, "l1"): (0.01, 62.0), (False, "l2"): (1e-4, 62.1), (False, "ncs"): (1e-3, 62.6), (False, None): (0.0, 61.2)}
    assert t.number("table2", method="simclr") == 69.7


def test_graded_similarity():
    for m in ("simsiam", "simsiam_gs"):
        s = paper_preset(m, paper="gs")
        assert (s["projector_layers"], s["hidden"], s["dim"], s["lr"], s["weight_decay"], s["batch_size"], s["epochs"], s["knn_k"]) == (2, 2048, 2048, 0.03, 5e-4, 256, 800, 201)
    for m in ("simclr", "simclr_gs"):
        s = paper_preset(m)
        assert (s["batch_size"], s["epochs"], s["hidden"], s["dim"], s["tau"], s["backbone"]) == (1024, 800, 512, 128, 0.5, "resnet18_cifar")
    assert paper_preset("simclr_gs")["lam"] == paper_preset("simsiam_gs")["lam"] == 0.5
    for name, lr in (("gs_simclr", 0.1), ("gs_simsiam", 30.0)):
        p = PROTOCOLS[name]
        assert (p.epochs, p.nesterov, p.batch_size, p.lr, p.augment) == (90, True, 256, lr, "crop_flip")
    t = PAPERS["gs"]
    for m, values in {"simclr": (86.28, 87.98), "simclr_gs": (87.19, 88.19), "simsiam": (88.71, 88.57), "simsiam_gs": (89.36, 88.86)}.items():
        assert tuple(t.number("table1", method=m, dataset=d) for d in ("CIFAR-10", "STL-10")) == values


@pytest.mark.parametrize("method", ["simsiam", "dae", "sidae", "ae", "aaae", "vae", "aasae", "dae_embed", "simclr", "simclr_gs", "simsiam_gs", "supervised"])
def test_every_preset_resolves_and_builds(method):
    "Every method's home-paper preset is a valid Config whose options the method accepts."
    from ssl_ae.methods import build_method
    c = Config(method=method, dataset="cifar10").resolved()
    assert c.augment in PRESETS
    extra = {"n_classes": 10} if method == "supervised" else {}
    build_method(method, backbone="small", **c.options, **extra)


def test_every_paper_names_its_deviations():
    for p in PAPERS.values():
        assert p.deviations and all(len(d) == 4 and all(d) for d in p.deviations), p.key
        assert all(r in PRESETS for r in (v for _, _, s in p.rules for k, v in s.items() if k == "augment")), p.key


def test_the_digits_step_counts_in_the_deviations_are_the_presets():
    "Each paper's 'steps and labels on the digits' row states the step counts its presets give (gpu: 4,000 digits; paper: its data)."
    from ssl_ae.recipes import scale_config
    cases = {"sidae": (("sidae", "mnist", 60_000),), "aasae": (("aasae", "cifar10", 50_000),),
             "white": (("dae_embed", "cifar100", 50_000),), "gs": (("simsiam_gs", "cifar10", 50_000), ("simclr_gs", "cifar10", 50_000))}
    for paper, runs in cases.items():
        row = " ".join(next(d for d in PAPERS[paper].deviations if d[0].startswith("steps and labels on the digits")))
        for method, dataset, n in runs:
            g, p = (scale_config(s, method, ds, paper=paper).resolved() for s, ds in (("gpu", None), ("paper", dataset)))
            gpu_steps, paper_steps = g.epochs * (4000 // g.batch_size), p.epochs * (n // p.batch_size)
            assert f"{gpu_steps:,}" in row and f"{paper_steps:,}" in row.replace("about ", ""), (paper, method, gpu_steps, paper_steps)
