"""The Colab tier: its configurations, its cost estimates, runs kept on Google Drive, and a tutorial rerun after a
disconnect that skips finished runs and resumes the unfinished one exactly where its last checkpoint left it."""
import sys
import types
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from testdevice import same  # noqa: E402

from ssl_ae.data import load_dataset
from ssl_ae.papers import PAPERS
from ssl_ae.study import Study
from ssl_ae.train import Trainer, train_or_resume
from ssl_ae.recipes import colab_config, estimate_cost, paper_config, quick_config, runs_folder


def test_every_paper_has_a_colab_plan_that_fits_a_free_t4():
    for key, paper in PAPERS.items():
        plan = paper.colab
        assert {"claim", "dataset", "epochs", "seeds", "runs"} <= set(plan), key
        assert len(plan["seeds"]) >= 3 and len(plan["runs"]) >= 2, key
        configs = [colab_config(method, paper=key, seed=s, **options) for _, method, options in plan["runs"] for s in plan["seeds"]]
        for c in configs:
            r = c.resolved()
            full = paper_config(r.method, r.dataset, paper=key, **{k: v for k, v in options_of(plan, r.method).items()}).resolved()
            assert (r.backbone, r.batch_size, r.optimizer, r.lr, r.augment) == (full.backbone, full.batch_size, full.optimizer, full.lr, full.augment)
            assert r.epochs == plan["epochs"] < full.epochs and r.checkpoint_minutes == 10
        t4 = estimate_cost(configs)["T4"]
        assert t4["hours"] <= 1.0 and t4["fits"], (key, t4)  # one free Colab session (about 90 minutes) with room to spare, by the derived T4 estimate


def options_of(plan, method):
    return next(o for _, m, o in plan["runs"] if m == method)


def test_estimates_scale_with_epochs_and_batch():
    one, two = estimate_cost([paper_config("sidae", epochs=10)])["H200"], estimate_cost([paper_config("sidae", epochs=20)])["H200"]
    assert two["hours"] == pytest.approx(2 * one["hours"], rel=0.05)
    small, big = estimate_cost([paper_config("sidae", batch_size=128)]), estimate_cost([paper_config("sidae", batch_size=512)])
    assert big["T4"]["memory_gib"] > small["T4"]["memory_gib"]
    # SidAE's step on an H200 is bound by kernel launches: four times the steps of a quarter of the size take longer (the
    # H200 measured 21 ms for a step of 512), while on the T4 the arithmetic term weighs more
    assert small["H200"]["hours"] > 2 * big["H200"]["hours"] and small["T4"]["hours"] / big["T4"]["hours"] < small["H200"]["hours"] / big["H200"]["hours"]


def test_runs_folder_is_on_drive_in_colab(monkeypatch, tmp_path):
    assert str(runs_folder("sidae", "smoke", drive=False)) == "runs/tutorial_sidae/smoke"
    mounted = []
    colab = types.ModuleType("google.colab")
    colab.drive = types.SimpleNamespace(mount=lambda where: mounted.append(where))
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    path = runs_folder("sidae", "colab")
    assert mounted == ["/content/drive"] and str(path) == "/content/drive/MyDrive/ssl_ae/tutorial_sidae/colab"


def test_a_rerun_after_a_disconnect_skips_finished_runs_and_resumes_the_unfinished_one(tmp_path, monkeypatch):
    xtr, ytr = load_dataset("toy", split="train"); xte, yte = load_dataset("toy", split="test")
    split = (xtr[:256], ytr[:256], xte[:256], yte[:256])
    def config(name):  # 2 epochs of 4 steps, a checkpoint after every step (as colab_config's 10 minutes would, on a slow GPU)
        return quick_config("sidae", limit=256, epochs=2, batch_size=64, out=str(tmp_path / "runs" / name), checkpoint_minutes=1e-9)
    def session():
        return Study("t", "colab", folder=tmp_path).setup(split, {"all": 1.0}, "package")
    first = session()
    first.pretrain("a_seed0", config("a_seed0"))
    step, calls = Trainer.step, []
    def disconnect(self, *args):
        calls.append(1)
        if len(calls) == 6: raise SystemExit("the Colab runtime disconnected")
        return step(self, *args)
    monkeypatch.setattr(Trainer, "step", disconnect)
    with pytest.raises(SystemExit):
        first.pretrain("b_seed0", config("b_seed0"))
    monkeypatch.setattr(Trainer, "step", step)

    built, fit = [], Trainer.fit
    def counting_fit(self, *args, **kwargs):
        built.append((self.epoch, (self.partial or {}).get("step", 0)))
        return fit(self, *args, **kwargs)
    monkeypatch.setattr(Trainer, "fit", counting_fit)
    second = session()  # a new session: the results file and the checkpoints survived on Drive
    assert set(second.records) == {"a_seed0"}
    second.pretrain("a_seed0", config("a_seed0"))
    assert built == []  # the finished run is loaded from the results file, not trained
    second.pretrain("b_seed0", config("b_seed0"))
    assert built == [(1, 1)]  # resumed in epoch 2 after its first step: the 5 steps done before the disconnect are kept
    straight = train_or_resume(config("c_seed0"))
    resumed = torch.load(tmp_path / "runs" / "b_seed0" / "last.pt", weights_only=False)["model"]
    assert all(same(resumed[k], v) for k, v in straight.method.state_dict().items())
