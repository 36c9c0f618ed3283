"""Data-parallel training on the CPU with the gloo backend and 2 processes under torchrun: the ranks end with identical
weights, and SimSiam (SyncBatchNorm) and SimCLR (negatives gathered across ranks, with gradients) on 2 processes match
1 process on the same global batch. The views are the clean images (preset `none`) so that both runs see the same
inputs; what differs is only how the batch is split."""
import runpy
import subprocess
import sys
import textwrap

import torch

SCRIPT = textwrap.dedent('''
    import sys, torch
    from ssl_ae.train import Config, Trainer
    out = sys.argv[1]
    for method, options in (("simsiam", {"dim": 32, "projector_layers": 2}), ("simclr", {"dim": 32})):
        cfg = Config(method=method, backbone="small", limit=256, epochs=1, batch_size=64, optimizer="sgd", lr=0.05,
                     augment="none", options=options, out=f"{out}/{method}", device="cpu")
        t = Trainer(cfg, progress=False)
        if t.world == 1: torch.save(t.method.state_dict(), f"{out}/{method}_init.pt")
        t.fit()
        torch.save(t.method.state_dict(), f"{out}/{method}_rank{t.rank}_of{t.world}.pt")
''')


def test_two_processes_match_one(tmp_path, monkeypatch):
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    env_run = dict(capture_output=True, text=True, timeout=600)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), str(tmp_path)], **env_run)
    assert two.returncode == 0, two.stderr[-3000:]
    monkeypatch.setattr(sys, "argv", [str(script), str(tmp_path)])
    runpy.run_path(str(script), run_name="__main__")  # the one-process run, in this process: no second torch start-up
    for method in ("simsiam", "simclr"):
        r0, r1, single, init = (torch.load(tmp_path / f"{method}_{n}.pt") for n in ("rank0_of2", "rank1_of2", "rank0_of1", "init"))
        assert all(torch.equal(r0[k], r1[k]) for k in r0), f"{method}: ranks differ"
        params = [k for k in r0 if r0[k].is_floating_point() and "running" not in k]
        moved = torch.cat([(single[k] - init[k]).flatten() for k in params]).norm()         # how far training moved the weights
        apart = torch.cat([(r0[k] - single[k]).flatten() for k in params]).norm()          # how far 2 processes end from 1
        assert moved > 0.1 and apart < 0.01 * moved, (method, moved.item(), apart.item())  # a wrong gradient scale gives ~moved
