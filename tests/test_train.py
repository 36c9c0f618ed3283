"""The trainer's promises: exact resume, a clear stop on a non-finite loss with the last good checkpoint kept,
checkpoints that are never half-written, and clear errors for bad checkpoints."""
import dataclasses
import sys
import os

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from testdevice import same  # noqa: E402

from ssl_ae.train import CheckpointError, Config, NonFiniteLossError, Trainer, load_checkpoint, save_atomic


def small_config(out, **kw):
    base = dict(method="sidae", backbone="small", limit=96, epochs=4, batch_size=32, optimizer="adam", lr=1e-3,
                options={"w": 0.5, "dim": 64, "projector_layers": 2}, augment="toy", out=str(out))
    return Config(**{**base, **kw})


def weights(trainer):
    return {k: v.clone() for k, v in trainer.method.state_dict().items()}


@pytest.mark.parametrize("method,options", [("sidae", {"w": 0.5, "dim": 64, "projector_layers": 2}),
                                            ("aasae", {"dim": 32}), ("simclr_gs", {"dim": 32})])
def test_resume_is_exact(tmp_path, method, options):
    "2 epochs, interrupted, then resumed to 4 gives bit-identical weights, optimiser state and history to 4 straight."
    straight = Trainer(small_config(tmp_path / "a", method=method, options=options), progress=False)
    straight.fit()
    first = Trainer(small_config(tmp_path / "b", method=method, options=options), progress=False)
    first.fit(stop_after=2)
    assert load_checkpoint(tmp_path / "b" / "last.pt")["epoch"] == 2
    resumed = Trainer.resume(tmp_path / "b" / "last.pt", progress=False)
    resumed.fit()
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    sa, sb = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(same(sa[i][k], sb[i][k]) for i in sa for k in sa[i] if torch.is_tensor(sa[i][k]))
    drop = lambda h: [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in h]
    assert drop(straight.history) == drop(resumed.history)


def test_training_changes_weights_and_writes_history(tmp_path):
    t = Trainer(small_config(tmp_path, epochs=2), progress=False)
    before = weights(t)
    t.fit()
    after = weights(t)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    lines = (tmp_path / "history.csv").read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("epoch,loss")


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    t = Trainer(small_config(tmp_path, epochs=4), progress=False)
    t.fit(stop_after=1)
    good = load_checkpoint(tmp_path / "last.pt")
    t.scheduler.base_lrs = [1e30]  # sabotage: the next steps blow the weights up
    with pytest.raises(NonFiniteLossError, match=r"last good checkpoint is .*last.pt \(epoch 1\)"):
        t.fit()
    kept = load_checkpoint(tmp_path / "last.pt")
    assert kept["epoch"] == 1 and all(torch.equal(good["model"][k], kept["model"][k]) for k in good["model"])


def test_atomic_write_leaves_the_old_checkpoint_when_saving_fails(tmp_path):
    path = tmp_path / "last.pt"
    save_atomic({"model": {}, "config": {"method": "sidae"}, "epoch": 1}, path)
    class Unpicklable:
        def __reduce__(self): raise RuntimeError("disk full (simulated)")
    with pytest.raises(RuntimeError, match="disk full"):
        save_atomic({"model": Unpicklable(), "config": {}, "epoch": 2}, path)
    assert load_checkpoint(path)["epoch"] == 1 and os.listdir(tmp_path) == ["last.pt"]


def test_bad_checkpoints_are_refused_clearly(tmp_path):
    Trainer(small_config(tmp_path, epochs=1), progress=False).fit()
    path = tmp_path / "last.pt"
    with pytest.raises(CheckpointError, match="holds a 'sidae' model, not 'simclr'"):
        load_checkpoint(path, method="simclr")
    ckpt = load_checkpoint(path)
    ckpt["model"] = {k: v for k, v in list(ckpt["model"].items())[:-3]}  # weights of another shape of model
    torch.save(ckpt, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="do not fit"):
        Trainer.resume(tmp_path / "partial.pt", progress=False)
    (tmp_path / "torn.pt").write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        Trainer.resume(tmp_path / "torn.pt", progress=False)


def test_config_errors_name_the_setting():
    with pytest.raises(ValueError, match="w must be in \\[0, 1\\]; got 1.5"):
        Trainer(Config(backbone="small", limit=128, batch_size=128, options={"w": 1.5}), progress=False)
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        Config(batch_size=0).resolved()


def _interrupt_at(trainer, call):
    "Send this process a SIGINT (Ctrl-C, a notebook's stop button) during the `call`-th training step."
    import signal
    step, calls = trainer.step, []
    def step_and_interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == call: os.kill(os.getpid(), signal.SIGINT)
        return step(*args, **kwargs)
    trainer.step = step_and_interrupt


def test_ctrl_c_mid_epoch_saves_and_resumes_exactly(tmp_path, capsys):
    "Ctrl-C during step 5 of epoch 2: the step finishes, last.pt records the position, and resuming equals a straight run."
    straight = Trainer(small_config(tmp_path / "a", epochs=2, limit=128, batch_size=16), progress=False)
    straight.fit()
    t = Trainer(small_config(tmp_path / "b", epochs=2, limit=128, batch_size=16), progress=False)
    _interrupt_at(t, 8 + 5)
    with pytest.raises(KeyboardInterrupt):
        t.fit()
    assert "resume with" in capsys.readouterr().err
    ckpt = load_checkpoint(tmp_path / "b" / "last.pt")
    assert ckpt["epoch"] == 1 and ckpt["partial"]["step"] == 5
    resumed = Trainer.resume(tmp_path / "b" / "last.pt", progress=False)
    resumed.fit()
    a, b = weights(straight), weights(resumed)
    assert all(same(a[k], b[k]) for k in a)
    drop = lambda h: [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in h]
    assert drop(straight.history) == drop(resumed.history)
    assert load_checkpoint(tmp_path / "b" / "last.pt")["partial"] is None


def test_checkpoints_on_a_clock_survive_a_crash(tmp_path):
    "With checkpoint_minutes set, a run killed without warning (no chance to save) resumes from its last timed checkpoint, exactly."
    straight = Trainer(small_config(tmp_path / "a", epochs=1, limit=128, batch_size=16), progress=False)
    straight.fit()
    t = Trainer(small_config(tmp_path / "b", epochs=1, limit=128, batch_size=16, checkpoint_minutes=1e-9), progress=False)  # every step
    step, calls = t.step, []
    def crash(*args, **kwargs):
        calls.append(1)
        if len(calls) == 7: raise SystemExit("the Colab runtime disconnected")
        return step(*args, **kwargs)
    t.step = crash
    with pytest.raises(SystemExit):
        t.fit()
    assert load_checkpoint(tmp_path / "b" / "last.pt")["partial"]["step"] == 6
    resumed = Trainer.resume(tmp_path / "b" / "last.pt", progress=False, checkpoint_minutes=0)
    resumed.fit()
    a, b = weights(straight), weights(resumed)
    assert all(same(a[k], b[k]) for k in a)
