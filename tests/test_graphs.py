"""The captured training step (chapter 10), as far as a CPU can check it: when a step is captured and when it is not
(with a message), that a captured run trains, checkpoints with plain numbers and resumes on either device, and that
the CPU path is the eager path it always was. The recording itself and its speed need a GPU: `tests/gpu_check.py`.

On the simulated GPU (`tests/simcuda.py`) a capture runs the step once with every host synchronisation an error and a
replay runs it again, so these tests see the trainer's side of the graph (static inputs, learning rates written in
place, the graph's output overwritten), not CUDA's."""
import dataclasses
import os
import sys
import warnings

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from simcuda import simulated_cuda  # noqa: E402

from ssl_ae.cli import config_from_args, parser  # noqa: E402
from ssl_ae.train import Config, Trainer, load_checkpoint  # noqa: E402


def small(tmp_path, **kw):
    return Config(**{**dict(method="sidae", backbone="small", limit=96, batch_size=16, epochs=2, optimizer="adam", lr=1e-3,
                            schedule="cosine", options={"dim": 32, "hidden": 32, "projector_layers": 2}, out=str(tmp_path)), **kw})


def test_the_setting_is_validated_and_explained(tmp_path):
    with pytest.raises(ValueError, match="compile must be one of auto, graphs, default, off"): small(tmp_path, compile="fast").resolved()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        t = Trainer(small(tmp_path, compile="graphs", device="cpu"), progress=False)
    assert t.mode == "eager" and t._graph is None
    assert any("compile='graphs' needs a CUDA GPU (this run is on cpu): training eagerly" in str(x.message) for x in w)
    assert Trainer(small(tmp_path, device="cpu"), progress=False).mode == "eager"  # auto on a CPU: the eager path, untouched


def test_the_cli_flag():
    p = parser()
    args = lambda *a: config_from_args(p.parse_args(["pretrain", *a])).compile
    assert (args(), args("--compile"), args("--compile", "graphs"), args("--compile", "off")) == ("auto", "default", "graphs", "off")


def test_a_captured_run_trains_checkpoints_plain_numbers_and_resumes_anywhere(tmp_path):
    with simulated_cuda():
        t = Trainer(small(tmp_path / "gpu", device="cuda"), progress=False)
        assert t.mode == "graphs" and isinstance(t.optimizer.param_groups[0]["lr"], torch.Tensor)
        lr = t.optimizer.param_groups[0]["lr"]
        history = t.fit(stop_after=1)
        assert t._graph.replay is not None, "six steps: three eager, then the graph"
        assert t.optimizer.param_groups[0]["lr"] is lr  # the schedule wrote the rate in place, which the graph reads
        assert isinstance(history[0]["lr"], float) and history[0]["loss"] == history[0]["loss"]
    ckpt = load_checkpoint(tmp_path / "gpu" / "last.pt")
    groups = ckpt["optimizer"]["param_groups"]
    assert all(type(g["lr"]) is float and type(g["initial_lr"]) is float for g in groups)
    assert all(type(v) is float for v in ckpt["scheduler"]["_last_lr"])
    # on the CPU: eager, float rates, Adam's own flags; the schedule goes on from where it was
    cpu = Trainer.resume(tmp_path / "gpu" / "last.pt", progress=False, device="cpu")
    assert cpu.mode == "eager" and type(cpu.optimizer.param_groups[0]["lr"]) is float
    assert not cpu.optimizer.param_groups[0]["fused"] and not cpu.optimizer.param_groups[0]["capturable"]
    assert cpu.scheduler.last_epoch == ckpt["scheduler"]["last_epoch"]
    cpu.fit()
    assert [r["epoch"] for r in cpu.history] == [1, 2]
    # and back on the (simulated) GPU, from the CPU's checkpoint: captured again, rates as tensors again
    with simulated_cuda():
        back = Trainer.resume(tmp_path / "gpu" / "last.pt", progress=False, device="cuda", epochs=3)
        assert back.mode == "graphs" and isinstance(back.optimizer.param_groups[0]["lr"], torch.Tensor)
        assert back.optimizer.param_groups[0]["capturable"] and back.optimizer.param_groups[0]["fused"]
        back.fit()
        assert [r["epoch"] for r in back.history] == [1, 2, 3]


def test_the_graph_output_is_overwritten_and_other_shapes_run_eagerly(tmp_path):
    with simulated_cuda():
        t = Trainer(small(tmp_path, device="cuda"), progress=False)
        batches = iter(t.loader)
        outs = [t.step(next(batches)[0]) for _ in range(5)]
        assert outs[3] is outs[4] and outs[2] is not outs[3]  # steps 4 and 5: the graph's output, overwritten
        odd = t.step(t.loader.images[:7])  # a batch of another shape: eagerly, a fresh output
        assert odd is not outs[4] and odd.loss.shape == ()


def test_the_cpu_step_is_the_eager_step_it_was(tmp_path):
    "compile='auto' and compile='off' give the same weights on a CPU, bit for bit (nothing captured, nothing changed)."
    runs = []
    for mode in ("auto", "off"):
        t = Trainer(small(tmp_path / mode, compile=mode, epochs=1, device="cpu"), progress=False)  # a CPU test wherever it runs
        t.fit()
        runs.append(torch.cat([p.detach().flatten() for p in t.method.parameters()]))
    assert torch.equal(*runs)


def test_a_checkpoint_from_another_kind_of_device_resumes_with_a_warning(tmp_path):
    """A CUDA generator's state (16 bytes of Philox) cannot be loaded into a CPU generator (5,056 bytes of Mersenne
    Twister) nor the other way round: on an H200, resuming a CPU run on the GPU failed with 'RNG state is wrong size'.
    The simulated GPU has a CPU generator, so here the saved state is made a CUDA-sized one by hand."""
    t = Trainer(small(tmp_path / "run", device="cpu", epochs=1), progress=False)
    t.fit()
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    ckpt["rng"]["augment"] = torch.arange(16, dtype=torch.uint8)  # as `torch.Generator("cuda").get_state()` is
    torch.save(ckpt, tmp_path / "from_gpu.pt")
    weights = []
    for _ in range(2):
        with pytest.warns(UserWarning, match="saved on another kind of device than cpu: it goes on from a seed"):
            r = Trainer.resume(tmp_path / "from_gpu.pt", progress=False, epochs=2, out=str(tmp_path / "resumed"))
        r.fit()
        assert [h["epoch"] for h in r.history] == [1, 2]
        weights.append(torch.cat([p.detach().flatten() for p in r.method.parameters()]))
    assert torch.equal(*weights)  # the same checkpoint resumes the same way every time
