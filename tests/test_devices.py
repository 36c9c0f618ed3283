"""GPU bugs a CPU can catch, with CUDA simulated on the CPU (`tests/simcuda.py`).

1. Every public entry point of evaluation and study that takes tensors from two sources (features and labels, a model
   and images, a bank and queries) is fed them on a mix of devices and must give the all-CPU answer, computed where the
   features or the model are. Before issue 19, `linear_probe` crashed here as it did on the H200.
2. The whole jobs — the quick start, `ssl_ae evaluate`, folder data, `Study`, the supervised baseline — run with
   `device="cuda"`.
3. A training step never makes the host wait, for every method with every augmentation and optimiser its papers use,
   under bf16 and under fp16 with the grad scaler (a T4), eagerly and captured as a CUDA graph (the simulated capture
   of `simcuda`, chapter 10). Before issue 19 the colour jitter, the hue rotation, White's crops, NT-Xent's partner
   indices and the graded-similarity checks all did.

What this cannot show (kernels, numerics, speed, cuDNN, torch.compile on a GPU) is left to `tests/test_cuda.py`
and `tests/gpu_check.py` on a real GPU."""
import copy
import json
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from simcuda import simulated_cuda, synchronizations  # noqa: E402

from ssl_ae import evaluate as E  # noqa: E402
from ssl_ae.data import load_dataset  # noqa: E402
from ssl_ae.methods import METHODS, build_method, channel_stats  # noqa: E402
from ssl_ae.papers import PAPERS  # noqa: E402
from ssl_ae.train import Config, Trainer  # noqa: E402
from ssl_ae.recipes import quick_config
from ssl_ae.features import extract_features, knn_accuracy

PLACES = [("cuda", "cpu"), ("cpu", "cuda"), ("cuda", "cuda")]  # (features or model, labels or images)


@pytest.fixture(scope="module")
def toy():
    x, y = load_dataset("toy", split="train")
    xt, yt = load_dataset("toy", split="test")
    y = y[:192].clone(); y[::7] = -1  # some unlabelled rows, which every probe must skip
    return x[:192], y, xt[:96], yt[:96]


@pytest.fixture(scope="module")
def model(toy):
    torch.manual_seed(0)
    return build_method("sidae", backbone="small", dim=32, hidden=32, projector_layers=2, mean=channel_stats(toy[0])[0]).eval()


def on(device, *tensors):
    return [t.to(device) for t in tensors]


# --- the simulation itself: it must refuse what CUDA refuses, or the tests below prove nothing ---

def test_the_simulation_refuses_what_cuda_refuses():
    with simulated_cuda():
        a, b = torch.ones(4, device="cuda"), torch.ones(4)
        assert a.device.type == "cuda" and (a + 1).device.type == "cuda" and (a + torch.tensor(1.0)).device.type == "cuda"
        with pytest.raises(RuntimeError, match="Expected all tensors to be on the same device"): a + b
        with pytest.raises(RuntimeError, match="indices should be either on cpu or on the same device"): b[a > 0]
        assert a[b > 0].device.type == "cuda"  # CPU indices into a CUDA tensor are fine
        with pytest.raises(RuntimeError, match="generator"): torch.rand(3, generator=torch.Generator(), device="cuda")
        with pytest.raises(TypeError, match="numpy"): a.numpy()
        with pytest.raises(RuntimeError, match="Expected all tensors"): torch.nn.Linear(4, 2).cuda()(b)
        n = len(synchronizations())
        a.sum().item(); a.cpu(); torch.tensor([1.0, 2.0], device="cuda"); a[a > 0]
        assert len(synchronizations()) == n + 4
        a * 2 + torch.full((4,), 3.0, device="cuda"); torch.arange(3, device="cuda")
        assert len(synchronizations()) == n + 4  # arithmetic and fills on the device make the host wait for nothing


# --- 1. evaluation entry points on every mix of devices give the all-CPU answer ---

@pytest.mark.parametrize("where", PLACES)
def test_probes_knn_retrieval_and_kmeans_on_mixed_devices(toy, model, where):
    x, y, xt, yt = toy
    f, ft = E.encoder_features(model, x, xt)
    expected = {"linear": E.linear_probe(f, y, ft, yt), "table": E.probe_table(f, y, ft, yt, (1.0, 0.25), (0,)),
                "knn": knn_accuracy(f, y, ft, yt, k=10), "retrieval": E.retrieval(ft, yt, f[y >= 0], y[y >= 0]),
                "kmeans": E.kmeans_inertia(f, k=4, iters=5)}
    with simulated_cuda():
        a, b = where
        (fa, fta), (yb, ytb) = on(a, f, ft), on(b, y, yt)
        got = {"linear": E.linear_probe(fa, yb, fta, ytb), "table": E.probe_table(fa, yb, fta, ytb, (1.0, 0.25), (0,)),
               "knn": knn_accuracy(fa, yb, fta, ytb, k=10), "retrieval": E.retrieval(fta, ytb, fa[y >= 0], yb[y >= 0]),
               "kmeans": E.kmeans_inertia(fa, k=4, iters=5)}
    means = lambda table: {k: v[0] for k, v in table.items()}  # (one seed: the standard error is nan, which equals nothing)
    assert got["linear"] == expected["linear"] and means(got["table"]) == means(expected["table"]) and got["knn"] == expected["knn"]
    assert got["retrieval"] == pytest.approx(expected["retrieval"]) and got["kmeans"] == pytest.approx(expected["kmeans"])


@pytest.mark.parametrize("where", PLACES)
def test_model_entry_points_on_mixed_devices(toy, model, where):
    x, y, xt, yt = toy
    fast = dict(epochs=1, batch_size=64)
    import dataclasses
    from ssl_ae.papers import as_protocol
    aug = dataclasses.replace(as_protocol("gs_simclr"), **fast)
    expected = {"features": extract_features(model, x), "probe": E.probe_images(model, x, y, xt, yt, (1.0, 0.25)),
                "augmented": E.augmented_probe(model, x, y, xt, yt, aug), "fine_tune": E.fine_tune(model, x, y, xt, yt, dataclasses.replace(as_protocol("sidae"), **fast)),
                "views": E.view_similarity(model, x[:6], n_views=2), "recon": E.reconstruct_views(model, x[:4])["mse1"]}
    with simulated_cuda():
        m = copy.deepcopy(model).to(where[0])  # (Module.to moves in place: keep the fixture on the CPU)
        xa, ya, xta, yta = on(where[1], x, y, xt, yt)
        got = {"features": extract_features(m, xa), "probe": E.probe_images(m, xa, ya, xta, yta, (1.0, 0.25)),
               "augmented": E.augmented_probe(m, xa, ya, xta, yta, aug), "fine_tune": E.fine_tune(m, xa, ya, xta, yta, dataclasses.replace(as_protocol("sidae"), **fast)),
               "views": E.view_similarity(m, xa[:6], n_views=2), "recon": E.reconstruct_views(m, xa[:4])["mse1"]}
        fig = E.plot_reconstructions(m, xa, n=3)
        assert got["features"].device.type == where[0] and got["views"].device.type == "cpu"
        got["features"] = got["features"].cpu()
    assert fig is not None
    assert torch.allclose(got["features"], expected["features"], atol=1e-5) and got["probe"][1.0][0] == expected["probe"][1.0][0]
    assert torch.allclose(got["views"], expected["views"], atol=1e-5) and torch.allclose(got["recon"], expected["recon"], atol=1e-6)
    assert abs(got["augmented"] - expected["augmented"]) <= 2 / len(yt) and abs(got["fine_tune"] - expected["fine_tune"]) <= 2 / len(yt)


# --- 2. whole jobs with device="cuda" (on a small labelled folder: the simulation is slow, and folder data is one of the jobs) ---

@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    "A labelled image folder with train and test splits, two classes told apart by brightness."
    from PIL import Image
    root, g = tmp_path_factory.mktemp("photos"), torch.Generator().manual_seed(0)
    for split, n in (("train", 48), ("test", 16)):
        for c in ("dark", "light"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                px = (torch.rand(3, 20, 24, generator=g) * 160 + (90 if c == "light" else 0)).byte()
                Image.fromarray(px.permute(1, 2, 0).numpy()).save(root / split / c / f"{i}.png")
    return root


def tiny(out, photos, **kw):
    return quick_config("sidae", **{**dict(dataset="folder", data=str(photos), epochs=1, batch_size=32, knn_every=1, out=str(out)), **kw})


def test_the_quick_start_on_a_folder_evaluate_and_the_baselines_run_on_cuda(tmp_path, photos):
    from ssl_ae.cli import main
    with simulated_cuda():
        s = E.pretrain_and_evaluate(tiny(tmp_path / "run", photos, device="cuda"), progress=False)
        assert s["device"] == "cuda:0" and s["probe_accuracy"] is not None and s["random_init_probe_accuracy"] is not None
        assert s["knn_accuracy"] is not None
        assert main(["evaluate", str(tmp_path / "run" / "last.pt"), "--device", "cuda", "--seeds", "1", "--json"]) == 0
        assert E.accuracy_curve([tmp_path / "run" / "last.pt"], "folder", str(photos), device="cuda")[0][0] == 1
        assert E.load_method(tmp_path / "run" / "last.pt", device="cuda").normalize.mean.device.type == "cuda"
        assert 0 <= E.supervised_baseline("folder", str(photos), epochs=1, batch_size=32, device="cuda", out=str(tmp_path / "sup")) <= 1
    assert json.loads((tmp_path / "run" / "evaluation.json").read_text())["linear_probe"]


def test_a_study_trains_and_probes_on_cuda(tmp_path, toy):
    from ssl_ae.study import Study
    x, y, xt, yt = toy
    with simulated_cuda():
        from ssl_ae.papers import as_protocol
        import dataclasses
        st = Study("devices", "smoke", tmp_path).setup((x, y, xt, yt), {"all": 1.0, "few": 0.25}, dataclasses.replace(as_protocol("package"), epochs=5))
        cfg = quick_config("sidae", limit=64, epochs=1, batch_size=32, device="cuda", out=str(tmp_path / "run"))
        r = st.pretrain("sidae_seed0", cfg)
        assert set(r["accuracy"]) == {"all", "few"}
        assert set(st.random("random_seed0", cfg)["accuracy"]) == {"all", "few"}
        assert set(st.supervised("supervised_seed0", cfg)["accuracy"]) == {"all", "few"}


# --- 3. no host synchronisation inside a training step, for every method, augmentation and optimiser ---

def _presets():
    "(method, augmentation, optimiser) of the papers' presets: every method and every augmentation at least once (the rest differ only in numbers)."
    triples = set()
    for method in METHODS:
        for paper in [p for p in PAPERS if method in PAPERS[p].methods]:
            for dataset in ("cifar10", "cifar100", "stl10", "mnist", "fashion_mnist"):
                s = PAPERS[paper].settings(method, dataset)
                triples.add((method, s["augment"], s["optimizer"]))
    chosen, methods, augments = [], set(), set()
    for t in sorted(triples):
        if t[0] not in methods or t[1] not in augments: chosen.append(t); methods.add(t[0]); augments.add(t[1])
    return chosen


@pytest.mark.parametrize("capability", [(8, 0), (7, 5)], ids=["bf16", "fp16-scaler"])
def test_a_training_step_never_waits_for_the_host(capability, tmp_path):
    "Four steps after a first one, in torch's sync-debug 'error' mode: two eager warm-up steps, the step recorded as a CUDA graph and a replay; bf16 for every method and augmentation, fp16 with the grad scaler for each optimiser."
    presets = _presets()
    assert {m for m, _, _ in presets} == set(METHODS) and any(a == "white" for _, a, _ in presets)
    if capability[0] < 8: presets = [next(p for p in presets if p[2] == opt) for opt in ("sgd", "adam")]  # the scaler is the trainer's, not the method's
    for method, augment, optimizer in presets:
        options = {"dim": 32, **({"hidden": 32, "projector_layers": 2} if method in ("sidae", "simsiam", "dae", "simsiam_gs") else {})}
        cfg = Config(method=method, augment=augment, optimizer=optimizer, backbone="small", limit=48, batch_size=8, epochs=1,
                     options={} if method == "supervised" else options, device="cuda", out=str(tmp_path / method))
        with simulated_cuda(capability):
            t = Trainer(cfg, progress=False)
            assert t.amp_dtype == (torch.bfloat16 if capability[0] >= 8 else torch.float16) and t.scaler.is_enabled() == (capability[0] < 8)
            batches = iter(t.loader)
            xb, yb = next(batches)
            t.step(xb, yb)
            torch.cuda.set_sync_debug_mode("error")
            try:  # steps 2 and 3 warm up eagerly, step 4 is recorded as a CUDA graph and replayed, step 5 replays (chapter 10)
                for _ in range(4):
                    xb, yb = next(batches)
                    out = t.step(xb, yb if t.method.uses_labels else None)
            except RuntimeError as e: pytest.fail(f"{method} with {augment} and {optimizer} ({t.amp_dtype}): {e}")
            finally: torch.cuda.set_sync_debug_mode("default")
            assert t.mode == "graphs" and t._graph.replay is not None and t._graph.out is out, f"{method}: the step was not captured"
