"""What only a CUDA GPU can check. Skipped without one; with one, run it alone:

    pytest tests/test_cuda.py -v -s

One epoch of SidAE (the paper's ResNet-18) on CIFAR-10-format files with mixed precision, with and without
torch.compile; no host synchronisation inside a training step, for SidAE's paper preset and for every method with every
augmentation and optimiser of its papers; resuming after an interruption; data, features and the kNN vote on the
device; the step captured as a CUDA graph (chapter 10) for every method, and learning as the eager one; and the bench
figures, printed for the notebooks. tests/gpu_check.py runs this file first."""
import dataclasses
import os
import signal
import sys

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

sys.path.insert(0, os.path.dirname(__file__))
from test_data import write_cifar  # noqa: E402
from test_devices import _presets  # noqa: E402

from ssl_ae.train import Config, Trainer, load_checkpoint  # noqa: E402
from ssl_ae.devices import amp_dtype
from ssl_ae.features import extract_features, knn_accuracy


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_cifar(root, "cifar10", n=256)  # 5 × 256 training images, 256 test images, in CIFAR-10's pickled format
    return root


def sidae(root, out, **kw):
    return Config(**{**dict(method="sidae", dataset="cifar10", data=str(root), epochs=1, batch_size=128, device="cuda",
                            knn_every=1, out=str(out)), **kw})  # otherwise the paper's settings (ResNet-18, SGD, cosine)


@pytest.mark.parametrize("compile", ["off", "default", "graphs"])
def test_one_epoch_of_sidae_with_amp(cifar, tmp_path, compile):
    t = Trainer(sidae(cifar, tmp_path, compile=compile), progress=False)
    major = torch.cuda.get_device_capability()[0]
    assert t.amp_dtype == (torch.bfloat16 if major >= 8 else torch.float16) == amp_dtype("cuda")
    assert t.loader.images.is_cuda and t.loader.images.dtype == torch.uint8  # the data set lives on the GPU as uint8
    before = {k: v.clone() for k, v in t.method.state_dict().items()}
    t.fit()
    row = t.history[-1]
    assert torch.isfinite(torch.tensor(row["loss"])) and row["knn"] is not None
    assert any(not torch.equal(before[k], v) for k, v in t.method.state_dict().items())
    print(f"\n{torch.cuda.get_device_name()}, compile={compile}: {row['images_per_s']:.0f} images/s, {row['seconds']:.1f} s per epoch")


@pytest.mark.parametrize("compile", ["off", "graphs"])
def test_a_training_step_never_waits_for_the_gpu(cifar, tmp_path, compile):
    """SidAE's paper preset (ResNet-18, SGD, bf16/fp16 autocast), eager and captured: three steps in torch's sync-debug
    'error' mode after the warm-up (one step eagerly; with graphs, three eager steps and the recording, which
    synchronises once by design)."""
    t = Trainer(sidae(cifar, tmp_path, compile=compile), progress=False)
    batches = iter(t.loader)
    for _ in range(1 if compile == "off" else 4): t.step(next(batches)[0])
    assert (t._graph is not None and t._graph.replay is not None) == (compile == "graphs")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3): t.step(next(batches)[0])
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("method,augment,optimizer", _presets())
def test_no_family_waits_for_the_gpu(method, augment, optimizer, tmp_path):
    "Every method with every augmentation and optimiser its papers use (the set tests/test_devices.py checks on a simulated GPU), captured, on the real GPU: two replays in sync-debug 'error' mode."
    options = {"dim": 32, **({"hidden": 32, "projector_layers": 2} if method in ("sidae", "simsiam", "dae", "simsiam_gs") else {})}
    t = Trainer(Config(method=method, augment=augment, optimizer=optimizer, backbone="small", limit=384, batch_size=64, epochs=1,
                       options={} if method == "supervised" else options, device="cuda", out=str(tmp_path)), progress=False)
    assert t.mode == "graphs"
    batches = iter(t.loader)
    for _ in range(4):  # three eager steps, then the recording
        xb, yb = next(batches)
        t.step(xb, yb if t.method.uses_labels else None)
    assert t._graph.replay is not None
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2):
            xb, yb = next(batches)
            out = t.step(xb, yb if t.method.uses_labels else None)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(out.loss).item()


def test_a_captured_run_learns_as_the_eager_one(cifar, tmp_path):
    "The same seed, eager and captured: one epoch of SidAE's preset ends at nearly the same loss (cuDNN is not bit-reproducible)."
    rows = {}
    for compile in ("off", "graphs"):
        t = Trainer(sidae(cifar, tmp_path / compile, compile=compile, knn_every=0), progress=False)
        rows[compile] = t.fit()[-1]["loss"]
    assert abs(rows["off"] - rows["graphs"]) < 0.05 * abs(rows["off"]) + 1e-3, rows


def test_features_and_knn_stay_on_the_gpu(cifar, tmp_path):
    t = Trainer(sidae(cifar, tmp_path), progress=False)
    f = extract_features(t.method, t.images[:512])
    assert f.is_cuda and f.dtype == torch.float32
    acc = knn_accuracy(f, t.labels[:512], f[:256], t.labels[:256], k=20)
    assert 0 <= acc <= 1


def test_interrupted_on_the_gpu_resumes_where_it_stopped(cifar, tmp_path):
    "Ctrl-C mid-epoch saves the position; resuming finishes the epoch. (cuDNN's backward kernels are not bit-reproducible, so this checks the bookkeeping and closeness, not equality.)"
    straight = Trainer(sidae(cifar, tmp_path / "a", knn_every=0), progress=False)
    straight.fit()
    t = Trainer(sidae(cifar, tmp_path / "b", knn_every=0), progress=False)
    step, calls = t.step, []
    def interrupt(*a):
        calls.append(1)
        if len(calls) == 4: os.kill(os.getpid(), signal.SIGINT)
        return step(*a)
    t.step = interrupt
    with pytest.raises(KeyboardInterrupt):
        t.fit()
    assert load_checkpoint(tmp_path / "b" / "last.pt")["partial"]["step"] == 4
    resumed = Trainer.resume(tmp_path / "b" / "last.pt", progress=False)
    resumed.fit()
    assert resumed.epoch == 1 and len(resumed.history) == 1
    a, b = straight.method.state_dict(), resumed.method.state_dict()
    worst = max(((a[k].float() - b[k].float()).abs().max() / (a[k].float().abs().max() + 1e-8)).item() for k in a if a[k].is_floating_point())
    assert worst < 0.05, worst


def test_bench_figures():
    from ssl_ae.bench import bench_augment, bench_step
    step = bench_step(backbone="resnet18_cifar", batch_size=256, steps=10, device="cuda")
    aug = bench_augment(images=16_384, batch_size=512, device="cuda")
    print(f"\n{torch.cuda.get_device_name()}: Trainer.step {step['trainer_s_per_step'] * 1e3:.1f} ms "
          f"(ratio to a minimal step {step['ratio']:.3f}); augmentation {aug['gpu_views_per_s']:,.0f} views/s, "
          f"{aug['gpu_captured_views_per_s']:,.0f} as a CUDA graph")
    assert aug["fused"] and aug["gpu_captured_views_per_s"] > aug["gpu_batched_views_per_s"]
    assert step["ratio"] < 1.25 and aug["gpu_views_per_s"] > aug["ours_views_per_s"]
