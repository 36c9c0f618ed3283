"""What only a CUDA GPU can check. Skipped without one; with one, run it alone:

    pytest tests/test_cuda.py -v -s

One epoch of SidAE (the paper's ResNet-18) on CIFAR-10-format files with mixed precision, with and without
torch.compile; no host synchronisation inside a training step, for SidAE's paper preset and for every method with every
augmentation and optimiser of its papers; resuming after an interruption; data, features and the kNN vote on the
device; the step captured as a CUDA graph (chapter 10) for every method, learning as the eager one and moving the
weights at every replay; fp16's grad scale settling; the Triton kernel against the batched path for every preset; and
the bench figures, printed for the notebooks. Each test can fail: none compares a number with a range it always lies
in. tests/gpu_check.py runs this file first."""
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

from ssl_ae.augment import PRESETS  # noqa: E402
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


def _weights(t: Trainer) -> torch.Tensor:
    return torch.cat([p.detach().float().flatten() for p in t.method.parameters()])


def test_a_captured_run_learns_as_the_eager_one(cifar, tmp_path):
    """The same seed, eager and captured: after one epoch of SidAE's preset the two sets of weights lie within a tenth
    of the distance the eager ones moved from the start (cuDNN is not bit-reproducible). A captured run that froze after
    its warm-up, or updated twice a step, is as far from the eager one as the eager one moved, and fails."""
    start, end, losses = None, {}, {}
    for compile in ("off", "graphs"):
        t = Trainer(sidae(cifar, tmp_path / compile, compile=compile, knn_every=0), progress=False)
        start = _weights(t) if start is None else start
        losses[compile] = t.fit()[-1]["loss"]; end[compile] = _weights(t)
    moved = (end["off"] - start).norm().item()
    assert moved > 0 and (end["graphs"] - end["off"]).norm().item() < 0.1 * moved, (moved, losses)


def test_the_weights_move_between_replays(tmp_path):
    "Replays 3 and 50 of the recorded step leave different weights: each replay updates them, not the warm-up alone."
    t = Trainer(Config(method="sidae", backbone="small", limit=64 * 56, batch_size=64, epochs=1, device="cuda",
                       options={"dim": 32, "hidden": 32, "projector_layers": 2}, out=str(tmp_path)), progress=False)
    assert t.mode == "graphs"
    batches, kept = iter(t.loader), {}
    for call in range(1, 54):  # calls 1-3 eager, call 4 records and replays (replay 1), call 3 + k is replay k
        t.step(next(batches)[0])
        if call in (6, 53): kept[call - 3] = _weights(t)
    assert t._graph.replay is not None and not torch.equal(kept[3], kept[50])


def test_the_fp16_grad_scale_settles(tmp_path):
    "Under fp16 (a T4, or forced) the grad scale starts at 2^16, halves on overflowing steps, and is steady after a few dozen."
    t = Trainer(Config(method="sidae", backbone="small", limit=64 * 60, batch_size=64, epochs=1, device="cuda", amp="fp16",
                       options={"dim": 32, "hidden": 32, "projector_layers": 2}, out=str(tmp_path)), progress=False)
    assert t.scaler.is_enabled()
    scales = []
    for xb, _ in t.loader:
        t.step(xb); scales.append(t.scaler.get_scale())
    assert all(s > 0 and s == s for s in scales) and scales[-1] == scales[-10], scales[-12:]


def test_features_and_knn_stay_on_the_gpu(cifar, tmp_path):
    t = Trainer(sidae(cifar, tmp_path), progress=False)
    f = extract_features(t.method, t.images[:512])
    assert f.is_cuda and f.dtype == torch.float32
    acc = knn_accuracy(f, t.labels[:512], f[:256], t.labels[:256], k=20)
    on_cpu = knn_accuracy(f.cpu(), t.labels[:512].cpu(), f[:256].cpu(), t.labels[:256].cpu(), k=20)
    assert abs(acc - on_cpu) <= 2 / 256, (acc, on_cpu)  # the GPU's vote is the CPU's (a tie or two may round apart)


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
    """The trainer's eager step costs at most a quarter more than a minimal hand-written one (the same model, batch and
    augmentation); captured, it is faster than its eager self; the kernel's views outrun the batched path's."""
    from ssl_ae.bench import bench_augment, bench_step
    eager = bench_step(backbone="resnet18_cifar", batch_size=256, steps=10, device="cuda", compile="off")
    captured = bench_step(backbone="small", batch_size=256, steps=10, device="cuda")
    small_eager = bench_step(backbone="small", batch_size=256, steps=10, device="cuda", compile="off")
    aug = bench_augment(images=16_384, batch_size=512, device="cuda")
    print(f"\n{torch.cuda.get_device_name()}: Trainer.step {eager['trainer_s_per_step'] * 1e3:.1f} ms eager "
          f"(ratio to a minimal step {eager['ratio']:.3f}); small network {small_eager['trainer_s_per_step'] * 1e3:.2f} ms "
          f"eager, {captured['trainer_s_per_step'] * 1e3:.2f} ms captured; augmentation {aug['gpu_views_per_s']:,.0f} "
          f"views/s, {aug['gpu_captured_views_per_s']:,.0f} as a CUDA graph")
    assert eager["mode"] == small_eager["mode"] == "eager" and captured["mode"] == "graphs"
    assert eager["ratio"] < 1.25 and captured["trainer_s_per_step"] < small_eager["trainer_s_per_step"]
    assert aug["fused"] and aug["gpu_captured_views_per_s"] > aug["gpu_batched_views_per_s"] > 0
    assert aug["gpu_views_per_s"] > aug["ours_views_per_s"]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_the_kernel_makes_the_batched_paths_views_on_the_gpu(preset):
    """Every preset at batch 512, channels-last, as training asks for them: the Triton kernel's views are the batched
    path's (the same boxes, pixels within 1e-3)."""
    aug = PRESETS[preset].at(32)
    x = torch.randint(0, 256, (512, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)).cuda()
    ref, box = aug.view(x, torch.Generator("cuda").manual_seed(5), fused=False, memory_format=torch.channels_last)
    out, box2 = aug.view(x, torch.Generator("cuda").manual_seed(5), fused=True, memory_format=torch.channels_last)
    assert torch.equal(box, box2) and out.is_contiguous(memory_format=torch.channels_last)
    assert (out.float() - ref.float()).abs().max().item() < 1e-3, preset
