"""The devices people run the package on, simulated on the CPU (`tests/simcuda.py`): a Colab T4 (CUDA, compute
capability 7.5: fp16 with a grad scaler), an A100, H100 or L4 (8.0 and above: bf16), a Mac's GPU (MPS: no float64) and
the CPU. Every method trains a step on each; a run saved on any of them resumes on any other, with what could not be
restored said in one warning. What the simulation cannot show (kernels, numerics, memory, speed) is
`tests/gpu_check.py`'s, on a real GPU."""
import gc
import math
import os
import sys
import warnings
import weakref

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from simcuda import simulated_cuda, simulated_mps  # noqa: E402

from ssl_ae.train import load_checkpoint  # noqa: E402
from ssl_ae.methods import METHODS  # noqa: E402
from ssl_ae.recipes import quick_config  # noqa: E402
from ssl_ae.train import Trainer  # noqa: E402

# name: (the simulation's context and the device it trains on, the dtype it autocasts to)
DEVICES = {"cpu": (None, "cpu", None), "t4": ((simulated_cuda, (7, 5)), "cuda", torch.float16),
           "a100": ((simulated_cuda, (8, 0)), "cuda", torch.bfloat16), "mps": ((simulated_mps,), "mps", None)}


class _nothing:
    def __enter__(self): return self
    def __exit__(self, *a): return False


def on(name: str):
    "The simulation of device `name` (nothing for the CPU)."
    sim = DEVICES[name][0]
    return _nothing() if sim is None else sim[0](*sim[1:])


def small(out, method="sidae", **kw):
    return quick_config(method, out=str(out), **{"limit": 64, "batch_size": 16, "epochs": 1, **kw})


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_a_step_on_a_mac(method, tmp_path):
    "MPS has no float64: a float64 tensor made on it, or cast to it, fails there (and in the simulation)."
    with simulated_mps():
        t = Trainer(small(tmp_path, method, device="mps"), progress=False)
        assert t.device.type == "mps" and t.amp_dtype is None
        xb, yb = next(iter(t.loader))
        loss = t.step(xb, yb if t.method.uses_labels else None).loss
        assert loss.device.type == "mps" and torch.isfinite(loss.detach().as_subclass(torch.Tensor)), method


def test_the_simulated_mac_refuses_float64():
    with simulated_mps():
        with pytest.raises(TypeError, match="MPS framework doesn't support float64"): torch.zeros(2, device="mps", dtype=torch.float64)
        with pytest.raises(TypeError, match="float64"): torch.ones(2, device="mps").double()
        assert torch.ones(2, dtype=torch.float64).sum().item() == 2  # on the CPU, float64 is fine


PAIRS = [(a, b) for a in DEVICES for b in DEVICES if a != b]


@pytest.mark.parametrize("saved, resumed", PAIRS, ids=[f"{a}-to-{b}" for a, b in PAIRS])
def test_a_run_saved_on_one_device_resumes_on_any_other(saved, resumed, tmp_path):
    """One epoch on `saved`, then a second on `resumed`: the optimiser's state and the schedule go on from the
    checkpoint; fp16's grad scale goes on where both have one, and starts afresh, with one warning, on a T4 resuming a
    run that had none (the CPU, a bf16 GPU, a Mac). Before issue 38 that direction crashed ('The source state dict is
    empty'), as on Colab when a reconnected session lands on a T4."""
    with on(saved):
        first = Trainer(small(tmp_path / "run", device=DEVICES[saved][1], optimizer="adam"), progress=False)
        first.fit()
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    steps, adam = ckpt["scheduler"]["last_epoch"], float(next(iter(ckpt["optimizer"]["state"].values()))["step"])
    with on(resumed), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = Trainer.resume(tmp_path / "run", progress=False, device=DEVICES[resumed][1], epochs=2)
        assert t.amp_dtype == DEVICES[resumed][2] and t.scheduler.last_epoch == steps
        state = next(iter(t.optimizer.state.values()))
        assert float(state["step"]) == adam > 0  # Adam's moments came along
        t.fit()
    assert [h["epoch"] for h in t.history] == [1, 2] and all(h["loss"] == h["loss"] for h in t.history)
    said = [str(w.message) for w in caught if "grad scale" in str(w.message)]
    fresh_scale = DEVICES[resumed][2] == torch.float16 and DEVICES[saved][2] != torch.float16
    assert len(said) == fresh_scale, said
    if fresh_scale: assert "starts afresh" in said[0]


def _live_on_the_gpu() -> int:
    "Tensors alive on the simulated GPU, counted without running the garbage collector."
    from simcuda import SimCudaTensor
    return sum(1 for o in gc.get_objects() if isinstance(o, SimCudaTensor))


def test_a_captured_trainer_is_freed_when_its_last_reference_goes(tmp_path):
    """Its step held the trainer strongly (the trainer holds its step): a cycle that only the garbage collector frees,
    so in a loop of runs each finished one stayed on the GPU until it happened to run. Now reference counting frees it
    at once, as it frees an eager trainer."""
    gc.disable()
    try:
        with simulated_cuda():
            t = Trainer(small(tmp_path, device="cuda"), progress=False)
            t.fit()
            assert t.mode == "graphs" and t._graph.replay is not None and _live_on_the_gpu() > 100
            alive = weakref.ref(t)
            del t
            assert alive() is None and _live_on_the_gpu() == 0
    finally: gc.enable()


def test_a_study_of_captured_runs_holds_constant_gpu_memory(tmp_path):
    "Runs one after another in one process (a tutorial's loop): what is alive on the GPU after each is what was before."
    from ssl_ae.study import Study
    gc.disable()
    try:
        with simulated_cuda():
            st = Study("loop", "smoke", tmp_path).setup(
                (torch.zeros(40, 3, 32, 32, dtype=torch.uint8), torch.arange(40) % 4, torch.zeros(8, 3, 32, 32, dtype=torch.uint8),
                 torch.arange(8) % 4), {"all": 1.0}, "package")
            after = []
            for seed in range(3):
                st.pretrain(f"run_seed{seed}", small(tmp_path / f"run{seed}", device="cuda", seed=seed))
                after.append(_live_on_the_gpu())
            assert after[0] == after[1] == after[2], after
    finally: gc.enable()


class _RefusingGraphs:
    "A CUDA-graph backend whose capture fails, as a real one does where a step cannot be recorded."
    def eager(self, fn, inputs): return fn(*inputs)
    def capture(self, fn, inputs, generators): raise RuntimeError("operation not permitted when stream is capturing")


def test_compile_auto_trains_eagerly_when_the_capture_fails(tmp_path):
    "'auto' promises the fastest step that works: a failed capture costs one warning, not the run; 'graphs' refuses."
    from unittest import mock
    from ssl_ae.graphs import CaptureError
    with simulated_cuda(), mock.patch("ssl_ae.graphs.BACKEND", _RefusingGraphs()):
        with pytest.warns(UserWarning, match="could not be captured as a CUDA graph .*training eagerly instead") as caught:
            t = Trainer(small(tmp_path / "auto", device="cuda", epochs=2), progress=False)
            t.fit()
        assert len([w for w in caught if "captured" in str(w.message)]) == 1
        assert [h["epoch"] for h in t.history] == [1, 2] and t._graph.failed
        with pytest.raises(CaptureError, match="compile='off'"):
            Trainer(small(tmp_path / "graphs", device="cuda", compile="graphs"), progress=False).fit()


def _poison(t: Trainer, from_step: int, steps: int | None = None):
    """Make the loss infinite from the run's step `from_step` (from 0) on, for `steps` steps (default: for good): a
    factor on the device that multiplies the loss, read by every step, a captured one too."""
    factor, calls, forward, step = torch.ones((), device=t.device), [0], t.method.forward, t.step
    def poisoned(*a, **k):
        out = forward(*a, **k); return out._replace(loss=out.loss * factor)
    def counted(*a, **k):
        bad = calls[0] >= from_step and (steps is None or calls[0] < from_step + steps)
        factor.fill_(float("inf") if bad else 1.0); calls[0] += 1
        return step(*a, **k)
    t.method.forward, t.step = poisoned, counted


@pytest.mark.parametrize("device", ["cpu", "t4"])
def test_a_diverged_run_is_reported_at_the_step_it_began(device, tmp_path):
    """From step 41 on (epoch 2, step 9 of 32) every loss is infinite. The CPU stops at its next check; fp16's scaler
    skips those steps, so a T4 stops once FP16_SKIPS of them came in a row — in epoch 3. Either way the error names
    epoch 2, step 9, and last.pt holds finite weights. Before issue 38 both named the step of the check, and fp16 saved
    epoch 2's mean of its good steps as if nothing had happened, its message saying 'in every step since the last check'."""
    from ssl_ae.train import NonFiniteLossError
    with on(device):
        t = Trainer(small(tmp_path, device=DEVICES[device][1], limit=512, epochs=3), progress=False)
        _poison(t, 40)
        with pytest.raises(NonFiniteLossError, match="epoch 2, step 9") as e:
            t.fit()
    ck = load_checkpoint(tmp_path / "last.pt")
    assert all(torch.isfinite(v.float()).all() for v in ck["model"].values() if v.is_floating_point())
    if device == "cpu": assert ck["epoch"] == 1 and "at epoch 2, step 9" in str(e.value)
    else:
        assert ck["epoch"] == 2 and "skipped them" in str(e.value) and "last 49 steps" in str(e.value)  # 24 + 25 steps in a row
        assert ck["history"][-1]["nonfinite_losses"] == 24 and ck["history"][-1]["skipped_steps"] >= 24


def test_fp16_counts_a_skipped_step_and_goes_on(tmp_path):
    "One infinite loss under fp16: the scaler skips that step, the epoch's row counts it, and training goes on."
    with on("t4"):
        t = Trainer(small(tmp_path, device="cuda", limit=512, epochs=2), progress=False)
        _poison(t, 40, steps=1)
        t.fit()
    assert [h["nonfinite_losses"] for h in t.history] == [0, 1] and t.history[1]["skipped_steps"] >= 1
    assert all(math.isfinite(h["loss"]) for h in t.history)


def test_a_kernel_that_cannot_run_falls_back_with_one_warning(tmp_path):
    """Triton installed but unable to run the kernel here (a P100's compute capability 6.0, no C compiler, an old
    Triton): the first view on the device tries it once, warns once saying why, and every view takes the batched path.
    Before issue 38 the first training step died with Triton's error. `fused_augment=False` does not even try."""
    from unittest import mock
    import ssl_ae.augment as A
    refuse = mock.Mock(side_effect=RuntimeError("triton: compute capability 6.0 is not supported"))
    with simulated_cuda(), mock.patch.object(A, "can_fuse", lambda x, size: True), \
            mock.patch.object(A, "fused_view", refuse), mock.patch.object(A, "_KERNEL", {}):
        with pytest.warns(UserWarning, match="kernel does not run on cuda:0 .*compute capability 6.0") as caught:
            t = Trainer(small(tmp_path / "a", device="cuda"), progress=False)
            t.fit()
            A.PRESETS["simclr"].view(torch.zeros(4, 3, 32, 32, dtype=torch.uint8, device="cuda"))  # no second try
        assert t.fused is False and refuse.call_count == 1 and len([w for w in caught if "kernel" in str(w.message)]) == 1
        A._KERNEL.clear()
        assert Trainer(small(tmp_path / "b", device="cuda", fused_augment=False), progress=False).fused is False
        assert refuse.call_count == 1 and not A._KERNEL  # not tried
    from ssl_ae.cli import config_from_args, parser
    assert config_from_args(parser().parse_args(["pretrain", "--no-fused-augment"])).fused_augment is False
    assert config_from_args(parser().parse_args(["pretrain"])).fused_augment is True


def test_an_older_torch_is_refused_in_one_line():
    "settings.ini's minimum, checked at import: an older torch gets one line with the command that fixes it."
    import configparser
    from pathlib import Path
    from ssl_ae import MIN_TORCH, check_torch
    need = ".".join(map(str, MIN_TORCH))
    ini = configparser.ConfigParser(); ini.read(Path(__file__).parents[1] / "settings.ini")
    assert f"torch>={need}" in ini["DEFAULT"]["requirements"].split()
    with pytest.raises(ImportError, match=rf"needs torch >= {need}, and this is torch 2.1.2\+cu121: pip install"):
        check_torch("2.1.2+cu121")
    for fine in (need + ".0", "2.14.1+cu130", "3.0.0", "2.12.0a0+git1234"): check_torch(fine)


def test_out_of_gpu_memory_ends_in_one_line_naming_a_batch_that_fits(tmp_path):
    """A step that runs out of GPU memory (here: step 2 of epoch 2, on a 16 GiB GPU the step filled to 15 GiB) ends the
    run with one line: where, how much, a batch size that fits, and the checkpoint kept. Before issue 38 nothing
    handled it: torch's own error, and in a capture advice to turn compile off."""
    from types import SimpleNamespace
    from unittest import mock
    from ssl_ae.train import GPUMemoryError
    with simulated_cuda(), mock.patch("torch.cuda.get_device_properties", lambda d=None: SimpleNamespace(total_memory=16 * 2**30)), \
            mock.patch("torch.cuda.max_memory_allocated", lambda d=None: 15 * 2**30):
        t = Trainer(small(tmp_path, device="cuda", epochs=2), progress=False)
        step, calls = t.step, [0]
        def fails(*a, **k):
            calls[0] += 1
            if calls[0] == 6: raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return step(*a, **k)
        t.step = fails
        with pytest.raises(GPUMemoryError) as e:
            t.fit()
    said = str(e.value)
    assert "\n" not in said and "at epoch 2, step 2 with batches of 16" in said and "15.0 GiB of the GPU's 16.0 GiB" in said
    assert "--batch-size 8" in said and "(epoch 1) is kept" in said, said
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
