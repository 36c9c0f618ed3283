"""What users made before a change keeps working: checkpoints written by the release before issues 23 and 20
(`tests/fixtures/before_issue23_*.pt`, written by commit bfde537 on the CPU) load, resume and evaluate, and names that
moved keep working for one release with a deprecation warning."""
import dataclasses
import warnings
from pathlib import Path

import pytest
import torch

from ssl_ae.evaluate import load_method
from ssl_ae.train import Trainer, load_checkpoint
from ssl_ae.recipes import quick_config

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("method", ["sidae", "supervised"])
def test_an_old_checkpoint_resumes_and_evaluates(method, tmp_path):
    path = FIXTURES / f"before_issue23_{method}.pt"
    ckpt = load_checkpoint(path)
    assert ckpt["config"]["compile"] is False and ckpt["epoch"] == 1
    t = Trainer.resume(path, progress=False, epochs=2, out=str(tmp_path))
    assert t.mode == "eager" and t.epoch == 1
    t.fit()
    assert [r["epoch"] for r in t.history] == [1, 2] and all(r["loss"] == r["loss"] for r in t.history)
    m = load_method(path)
    assert not m.training and m.features(torch.zeros(2, 3, 32, 32)).shape[0] == 2


def test_the_quick_start_recipe_moved_and_the_old_name_warns():
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        from ssl_ae.cli import QUICKSTART
    assert any(issubclass(x.category, DeprecationWarning) and "recipes.QUICK_RECIPE" in str(x.message) for x in w)
    old = dict(backbone="small", epochs=8, batch_size=64, optimizer="adam", lr=1e-3, schedule="constant", weight_decay=0.0,
               augment="toy", options={"w": 0.5, "dim": 256, "hidden": 256, "projector_layers": 2})  # the dict as it was
    assert QUICKSTART == old
    from ssl_ae.train import Config
    made = dataclasses.asdict(Config(**old, out="x").resolved())
    assert made == dataclasses.asdict(quick_config("sidae", limit=None, out="x").resolved())


def test_probe_method_is_deprecated_and_still_works():
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        from ssl_ae.evaluate import probe_method
    assert any(issubclass(x.category, DeprecationWarning) and "probe_images" in str(x.message) for x in w)
    from ssl_ae.evaluate import probe_images, random_init
    from ssl_ae.data import load_dataset
    from ssl_ae.train import Config
    x, y = load_dataset("toy"); xt, yt = load_dataset("toy", split="test")
    m = random_init(Config(method="sidae", backbone="small", options={"dim": 16, "hidden": 16, "projector_layers": 2}), x, y)
    assert probe_method(m, limit=500)[1.0][0] == probe_images(m, x[:500], y[:500], xt, yt)[1.0][0]  # (the s.e. of one seed is nan)


@pytest.mark.parametrize("module, name, home", [
    ("train", "quick_config", "recipes"), ("train", "cpu_config", "recipes"), ("train", "tutorial_scale", "recipes"),
    ("train", "estimate_cost", "recipes"), ("train", "QUICK_RECIPE", "recipes"), ("train", "GlobalBatchNorm", "devices"),
    ("data", "check_range", "checks"), ("data", "default_device", "devices")])
def test_names_that_moved_in_issue_20_still_import_with_a_warning(module, name, home):
    import importlib
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        old = getattr(importlib.import_module(f"ssl_ae.{module}"), name)
    assert old is getattr(importlib.import_module(f"ssl_ae.{home}"), name)
    assert any(issubclass(x.category, DeprecationWarning) and f"ssl_ae.{home}.{name}" in str(x.message) for x in w), [str(x.message) for x in w]


def test_names_the_trainer_still_uses_import_from_it_as_before():
    "The device helpers the trainer imports for itself stay reachable from `ssl_ae.train` (no warning needed)."
    import ssl_ae.devices, ssl_ae.train
    for name in ("resolve_device", "distributed_context", "amp_dtype", "sync_batchnorm"):
        assert getattr(ssl_ae.train, name) is getattr(ssl_ae.devices, name)
