"""The GPU's code paths, run on the CPU where torch allows: autocast in bfloat16 and in float16 with the grad scaler,
channels-last and torch.compile each give the eager float32 loss and gradients of one `Trainer.step`, for every method
on the small network (on a CPU, one method per family unless SSL_AE_TEST_FLAGS=slow); a non-finite float16 step is skipped by the scaler, not reported as a failure.

Tolerances (stated once, here): |Δloss| ≤ tol · (1 + |loss|), and the whole gradient vector (all parameters flattened)
has cosine similarity ≥ cos with the float32 one and a norm within `norm` of it.
- channels-last, float32: tol 1e-4, cos 0.9999, norm 1e-3 (a different convolution algorithm, the same arithmetic);
- torch.compile (inductor), float32: the same (fused kernels reorder sums);
- float16 with the grad scaler: tol 1e-2, cos 0.99, norm 0.05 (10 mantissa bits);
- bfloat16: tol 3e-2, cos 0.97, norm 0.10 (7 mantissa bits).
On a GPU, cuDNN runs float32 convolutions in TF32 (10 mantissa bits) unless told not to, and the two layouts pick
different algorithms: channels-last then differed from the reference by a gradient cosine of 0.9998 and a norm of 0.2 %
on an H200. The layout and precision test compares arithmetic, so it turns TF32 off (`float32_convolutions`); the
compile test compares two runs under the same setting; training keeps torch's default.
"""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from nbflags import enabled_flags  # noqa: E402
from testdevice import DEVICE  # noqa: E402

from ssl_ae.methods import METHODS  # noqa: E402
from ssl_ae.train import Config, NonFiniteLossError, Trainer  # noqa: E402

TOLERANCE = {"channels_last": (1e-4, 0.9999, 1e-3), "compile": (1e-4, 0.9999, 1e-3),
             "fp16": (1e-2, 0.99, 0.05), "bf16": (3e-2, 0.97, 0.10)}
SMALL = {"dim": 32, "hidden": 32, "projector_layers": 2}
OPTIONS = {"simsiam": SMALL, "dae": SMALL, "sidae": SMALL, "simsiam_gs": SMALL}


def config(method, tmp_path, **kw):
    base = dict(method=method, dataset="toy", backbone="small", limit=256, epochs=1, batch_size=16, optimizer="sgd", lr=0.01,
                weight_decay=0.0, schedule="constant", warmup_epochs=0, augment="toy", channels_last=False, amp=False,
                options=OPTIONS.get(method, {} if method == "supervised" else {"dim": 32}), out=str(tmp_path / "run"), device=DEVICE,
                compile="off")  # the eager step's arithmetic: on a GPU "auto" would record the fourth try as a graph
    return Config(**{**base, **kw})


def one_step(cfg):
    """Loss and (unscaled) gradients of the first `Trainer.step` on a fixed batch, captured where the optimiser reads them.
    With float16 the scaler starts at 2^16 and skips steps that overflow (the weights stay as they are) until its
    scale fits: the same batch and views are tried again, as the next steps of a real run would be."""
    trainer = Trainer(cfg, progress=False)
    if trainer.scaler.is_enabled(): trainer.scaler = torch.amp.GradScaler(trainer.device.type, init_scale=2.0 ** 10)  # fewer skipped first steps than 2^16: the same code, a faster test
    params = [p for p in trainer.method.parameters() if p.requires_grad]
    seen, views = {}, trainer.generator.get_state()
    def capture(*args, **kwargs):
        # A fused optimiser (on CUDA) is handed the scale and unscales inside its kernel, and skips a step with
        # infinities itself: the scaler sets `grad_scale` and `found_inf` on it instead of unscaling first.
        scale, found_inf = getattr(trainer.optimizer, "grad_scale", None), getattr(trainer.optimizer, "found_inf", None)
        if found_inf is not None and found_inf.item() > 0: return  # a skipped step, as the scaler's own check skips it
        grads = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).detach().float().flatten() for p in params])
        seen["grads"] = grads if scale is None else grads / scale.float()
    trainer.optimizer.step = capture
    for attempt in range(24):
        trainer.generator.set_state(views); torch.manual_seed(0)  # the same views; the VAE family samples with the global generator
        out = trainer.step(trainer.images[:16], trainer.labels[:16] if trainer.method.uses_labels else None)
        if "grads" in seen: break
    trainer.attempts = attempt + 1
    return out.loss.detach().float().item(), seen.get("grads"), trainer


def assert_close(ref, got, kind, method):
    tol, cos_min, norm_tol = TOLERANCE[kind]
    (l0, g0), (l1, g1) = ref, got
    assert abs(l1 - l0) <= tol * (1 + abs(l0)), f"{method}, {kind}: loss {l1:.6f} vs float32 {l0:.6f}"
    assert g1 is not None and torch.isfinite(g1).all(), f"{method}, {kind}: no finite gradients reached the optimiser"
    cos = torch.nn.functional.cosine_similarity(g0, g1, dim=0).item()
    ratio = (g1.norm() / g0.norm()).item()
    assert cos >= cos_min and abs(ratio - 1) <= norm_tol, f"{method}, {kind}: gradient cosine {cos:.5f}, norm ratio {ratio:.4f}"


@pytest.fixture
def float32_convolutions():
    "Float32 convolutions in float32 on a GPU (cuDNN's TF32 off), so that float32 is a reference; nothing on a CPU."
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = before


pytestmark = [pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden"),
              pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")]  # a skipped fp16 step, as on a GPU


# On a CPU these paths are torch's emulation, and a float16 step there is ~25x slower than float32: CI runs one method of
# each family (the siamese SidAE, the stochastic AASAE, White's DAE, the two graded ones, the supervised baseline);
# SSL_AE_TEST_FLAGS=slow, and the GPU check, run all twelve.
SLOW = pytest.mark.skipif("slow" not in enabled_flags(), reason="slow: SSL_AE_TEST_FLAGS=slow")
FAMILY = ("sidae", "aasae", "dae_embed", "simclr_gs", "simsiam_gs", "supervised")


@pytest.mark.parametrize("method", [m if m in FAMILY else pytest.param(m, marks=SLOW) for m in METHODS])
def test_channels_last_and_mixed_precision_match_float32(tmp_path, method, float32_convolutions):
    ref = one_step(config(method, tmp_path))[:2]
    assert_close(ref, one_step(config(method, tmp_path, channels_last=True))[:2], "channels_last", method)
    loss, grads, trainer = one_step(config(method, tmp_path, amp="fp16"))
    assert trainer.amp_dtype == torch.float16 and trainer.scaler.is_enabled()
    assert_close(ref, (loss, grads), "fp16", method)
    loss, grads, trainer = one_step(config(method, tmp_path, amp="bf16", channels_last=True))
    assert trainer.amp_dtype == torch.bfloat16 and not trainer.scaler.is_enabled()
    assert_close(ref, (loss, grads), "bf16", method)


# Inductor's code generation is most of a compile: from a cold cache, SidAE's step took 64 s on a 2-core CPU with
# inductor and 6 s with dynamo and AOTAutograd alone (backend "aot_eager"), which capture the same forward and backward
# graphs from the trainer's compile path. CI runs that capture for SidAE; inductor, for one method per family, runs with
# SSL_AE_TEST_FLAGS=slow and in the GPU check.
def test_the_compiled_step_captures_the_eager_one(tmp_path, monkeypatch):
    "The trainer's `compile=True` path, traced by dynamo and differentiated by AOTAutograd, gives the eager step."
    import functools
    ref = one_step(config("sidae", tmp_path, channels_last=True))[:2]
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    loss, grads, trainer = one_step(config("sidae", tmp_path, channels_last=True, compile=True))
    assert trainer.mode == "compile"
    assert_close(ref, (loss, grads), "compile", "sidae")


@pytest.mark.parametrize("method", [pytest.param(m, marks=SLOW) for m in FAMILY])
def test_compile_matches_eager(tmp_path, method):
    "Inductor draws random numbers with its own generator; `fallback_random` makes the VAE family's sample the eager one, so the two can be compared."
    import torch._inductor.config as inductor
    with inductor.patch(fallback_random=True):
        ref = one_step(config(method, tmp_path, channels_last=True))[:2]
        assert_close(ref, one_step(config(method, tmp_path, channels_last=True, compile=True))[:2], "compile", method)


def test_a_non_finite_fp16_step_is_skipped_not_fatal(tmp_path):
    "An overflowing float16 step leaves the weights alone and halves the scale; the run goes on and counts it."
    # batches of 4 (three steps an epoch): float16 convolutions on a CPU are ~25x slower than float32
    trainer = Trainer(config("sidae", tmp_path, amp="fp16", epochs=2, limit=12, batch_size=4, log_every=1), progress=False)
    forward, calls = trainer.model.forward, []
    def overflow_once(*args, **kwargs):
        out = forward(*args, **kwargs)
        calls.append(1)
        return out._replace(loss=out.loss * float("inf")) if len(calls) == 3 else out
    trainer.model.forward = overflow_once
    scale = trainer.scaler.get_scale()
    trainer.fit()
    assert trainer.history[0]["nonfinite_losses"] == 1 and trainer.history[1]["nonfinite_losses"] == 0
    assert trainer.history[0]["skipped_steps"] >= 1
    assert trainer.scaler.get_scale() < scale * 2 ** 20  # halved once on the way (it grows only after 2,000 good steps)
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in trainer.history)


def test_fp16_that_never_recovers_stops_with_a_message(tmp_path):
    trainer = Trainer(config("sidae", tmp_path, amp="fp16", batch_size=4, log_every=2), progress=False)
    forward = trainer.model.forward
    trainer.model.forward = lambda *a, **k: (lambda o: o._replace(loss=o.loss * float("nan")))(forward(*a, **k))
    with pytest.raises(NonFiniteLossError, match="non-finite in each of the last 26 steps, since epoch 1, step 1: fp16's grad scaler skipped them"):
        trainer.fit()


def test_an_fp16_epoch_with_no_finite_step_stops(tmp_path):
    "Fewer steps than FP16_SKIPS, every one non-finite: the epoch trained nothing, and the run says so."
    trainer = Trainer(config("sidae", tmp_path, amp="fp16", batch_size=4, limit=24), progress=False)
    forward = trainer.model.forward
    trainer.model.forward = lambda *a, **k: (lambda o: o._replace(loss=o.loss * float("nan")))(forward(*a, **k))
    with pytest.raises(NonFiniteLossError, match="non-finite in every step of epoch 1 .since epoch 1, step 1.: fp16's grad scaler skipped them all"):
        trainer.fit()


def test_unknown_device_is_one_clear_line(tmp_path):
    with pytest.raises(ValueError, match="unknown device 'toaster'; use auto, cpu, cuda, cuda:N or mps"):
        Trainer(config("sidae", tmp_path, device="toaster"), progress=False)
    with pytest.raises(ValueError, match="amp must be True, False, 'bf16' or 'fp16'"):
        config("sidae", tmp_path, amp="fp8").resolved()


def test_a_step_the_fp16_scaler_skips_advances_the_schedule_without_torch_s_warning(tmp_path):
    "fp16 with a scale so large that the first steps overflow: each is skipped, the schedule still moves one step per step, and torch's 'lr_scheduler.step() before optimizer.step()' warning is not printed."
    import warnings
    t = Trainer(config("sidae", tmp_path, amp="fp16", schedule="cosine", epochs=2, batch_size=4), progress=False)
    t.scaler = torch.amp.GradScaler(t.device.type, init_scale=2.0 ** 40)
    xb, _ = next(iter(t.loader))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3): t.step(xb)
    assert t.scaler.get_scale() < 2.0 ** 40  # at least one step overflowed and was skipped
    assert t.scheduler.last_epoch == 3 and not [w for w in caught if "lr_scheduler.step()" in str(w.message)]
