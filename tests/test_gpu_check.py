"""The GPU check's plumbing, on the CPU: the steps it runs, the environment it records, and the JSON it writes. (What
the steps find can only be seen on a GPU; see tests/gpu_check.py.)"""
import json
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
import gpu_check  # noqa: E402


def test_the_check_runs_every_step_and_writes_its_figures(tmp_path, monkeypatch):
    ran = []
    def fake_run(self, name, cmd, limit, env=None):
        ran.append((name, [str(c) for c in cmd], env or {}))
        tail = 'FIGURES {"presets": []}' if name == "bench" else '{"knn_accuracy": 0.5}' if name == "evaluate" else ""
        self.figures["steps"][name] = r = {"status": "passed", "seconds": 0.0, "tail": tail[-10:]}
        self.text = "x" * 5000 + "\n" + tail  # the figures are read from all of the output, not the JSON's tail
        if name == "quick-start":
            (tmp_path / "quickstart").mkdir(); (tmp_path / "quickstart" / "last.pt").write_bytes(b"")
            (tmp_path / "quickstart" / "summary.json").write_text('{"probe_accuracy": 0.4}')
        return r
    monkeypatch.setattr(gpu_check.Check, "run", fake_run)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "a GPU")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    assert gpu_check.main(["--out", str(tmp_path)]) == 0
    names = [n for n, _, _ in ran]
    assert names == ["bench", "cuda-tests", "quick-start", "evaluate", "suite-on-cuda"]  # issue 23's figures first
    suite = dict((n, (c, e)) for n, c, e in ran)["suite-on-cuda"]
    assert suite[1] == {"SSL_AE_TEST_DEVICE": "cuda", "SSL_AE_TEST_FLAGS": "slow"} and "tests" in suite[0] and "--ignore=tests/test_wheel.py" in suite[0]
    for name in ("cuda-tests", "suite-on-cuda"):  # the project's addopts name xdist's flags, which a GPU machine may lack
        cmd = dict((n, c) for n, c, _ in ran)[name]; assert cmd[cmd.index("-o") + 1] == "addopts="
    assert "--device" in dict((n, c) for n, c, _ in ran)["evaluate"] and "cuda" in dict((n, c) for n, c, _ in ran)["evaluate"]
    quick = dict((n, e) for n, _, e in ran)["quick-start"]  # from cold kernel caches, as a new user's first run
    assert {"TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR"} <= set(quick) and all("cold_caches" in v for v in quick.values())
    figures = json.loads((tmp_path / "gpu_check.json").read_text())
    assert figures["environment"]["gpu"] == "a GPU" and "missing_extras" in figures["environment"]
    assert figures["steps"]["quick-start"]["summary"]["probe_accuracy"] == 0.4 and figures["steps"]["bench"]["figures"] == {"presets": []}
    assert figures["steps"]["evaluate"]["result"]["knn_accuracy"] == 0.5 and (tmp_path / "gpu_check.log").exists()
    assert not (tmp_path / "quickstart" / "last.pt").exists()  # only the small files come back
    assert figures["targets"]["sidae_paper_step_ms"] == {"value": None, "target": "<= 6.0", "met": None}  # not measured


def test_the_targets_are_read_from_the_bench_figures():
    figures = {"capture": {"presets": [{"preset": "simsiam on cifar10", "batch_size": 512, "auto_images_per_s": 1.0},
                                       {"preset": "sidae on cifar10", "batch_size": 512, "auto_images_per_s": 102_400.0}],
                           "quick_start": {"auto_train_s": 12.5}},
               "augment": {"gpu_batched_views_per_s": 1e5, "gpu_captured_views_per_s": 4.7e6, "ours_views_per_s": 9e9},
               "lightly": {"error": "ImportError: no lightly"}}
    t = gpu_check.targets(figures)
    assert t["sidae_paper_step_ms"] == {"value": 5.0, "target": "<= 6.0", "met": True}
    assert t["augment_views_per_s"]["value"] == 4.7e6 and t["augment_views_per_s"]["met"]  # the GPU's best, not the CPU's
    assert t["quick_start_train_s"]["met"] is False and t["simsiam_over_lightly"] == {"value": None, "target": ">= 3.0", "met": None}


def test_without_a_gpu_the_check_says_so_and_exits_2(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path)]) == 2
    assert "no CUDA GPU" in (tmp_path / "gpu_check.log").read_text()


def test_a_spent_budget_skips_the_remaining_steps(tmp_path):
    c = gpu_check.Check(tmp_path, budget=0)
    r = c.run("anything", [sys.executable, "-c", "print(1)"], 10)
    assert r["status"] == "skipped" and "budget" in r["why"]
    r = gpu_check.Check(tmp_path, budget=60).run("echo", [sys.executable, "-c", "print('hello')"], 30)
    assert r["status"] == "passed" and "hello" in r["tail"]


def test_steps_not_asked_for_are_skipped_and_named(tmp_path, capsys):
    c = gpu_check.Check(tmp_path, budget=60, steps={"echo"})
    assert c.run("other", [sys.executable, "-c", "print(1)"], 10) == {"status": "not asked", "why": "not among --steps"}
    assert c.run("echo", [sys.executable, "-c", "print(2)"], 10)["status"] == "passed"
    with pytest.raises(SystemExit): gpu_check.main(["--out", str(tmp_path), "--steps", "bench,nonsense"])
    assert "unknown steps nonsense" in capsys.readouterr().err


def test_a_check_of_some_steps_only_writes_its_json(tmp_path, monkeypatch):
    "Run with --steps suite-on-cuda alone, the check once failed reading the skipped bench's output."
    def run(self, name, cmd, limit, env=None):
        self.text, r = "", {"status": "not asked" if name != "suite-on-cuda" else "passed"}
        self.figures["steps"][name] = r
        return r
    monkeypatch.setattr(gpu_check.Check, "run", run)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "a GPU")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    assert gpu_check.main(["--out", str(tmp_path), "--steps", "suite-on-cuda"]) == 0
    assert json.loads((tmp_path / "gpu_check.json").read_text())["steps"]["bench"]["status"] == "not asked"


def _fake(gpu: str, bench_figures: dict, skip: str | None = None):
    "A `Check.run` that passes every step (the bench printing `bench_figures`), except `skip`, skipped for the budget."
    def run(self, name, cmd, limit, env=None):
        if name == skip: r = {"status": "skipped", "why": "the check's budget of 290 s is spent"}; self.text = ""
        else:
            r = {"status": "passed", "seconds": 0.0, "tail": ""}
            self.text = "FIGURES " + json.dumps(bench_figures) if name == "bench" else ""
        self.figures["steps"][name] = r
        return r
    return run


GOOD = {"capture": {"presets": [{"preset": "sidae on cifar10", "batch_size": 512, "auto_images_per_s": 102_400.0}],
                    "quick_start": {"auto_train_s": 8.0}},
        "augment": {"gpu_captured_views_per_s": 4.7e6}, "lightly": {"speedup": 5.0}}


@pytest.mark.parametrize("gpu, figures, skip, exit_code, said", [
    ("NVIDIA H200", GOOD, None, 0, None),
    ("NVIDIA H200", GOOD, "suite-on-cuda", 1, "suite-on-cuda: skipped (the check's budget"),  # a step left out for time
    ("NVIDIA H200", {**GOOD, "augment": {"error": "RuntimeError: boom"}}, None, 1, "bench: failed (a figure errored)"),
    ("NVIDIA H200", {**GOOD, "lightly": {"speedup": 2.0}}, None, 1, "target simsiam_over_lightly: 2.0 against >= 3.0"),
    ("NVIDIA H100 80GB HBM3", {**GOOD, "lightly": {}}, None, 1, "target simsiam_over_lightly: not measured"),
    ("Tesla T4", {**GOOD, "lightly": {"speedup": 2.0}}, None, 0, None),  # the H200's targets are not a T4's
], ids=["all-good", "budget-skip", "errored-figure", "missed-target", "unmeasured-target", "t4-targets-shown-only"])
def test_the_check_cannot_pass_falsely(tmp_path, monkeypatch, capsys, gpu, figures, skip, exit_code, said):
    "Before issue 38 each of these exited 0: a skipped step counted as passed, and errored figures and targets were ignored."
    monkeypatch.setattr(gpu_check.Check, "run", _fake(gpu, figures, skip))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: gpu)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    assert gpu_check.main(["--out", str(tmp_path)]) == exit_code
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert ("NOT PASSED" in last) == bool(exit_code) and (said is None or said in last), last
    problems = json.loads((tmp_path / "gpu_check.json").read_text())["problems"]
    assert bool(problems) == bool(exit_code) and (said is None or any(said.split(":")[0] in p for p in problems)), problems


def test_the_budget_is_the_gpus_own(tmp_path, monkeypatch):
    "A T4 gets several times an H200's five minutes, and each step's limit grows with it."
    seen = {}
    def run(self, name, cmd, limit, env=None):
        seen[name] = self.budget, self.scale
        self.figures["steps"][name] = r = {"status": "passed"}; self.text = ""; return r
    monkeypatch.setattr(gpu_check.Check, "run", run)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 5))
    for gpu, budget in (("Tesla T4", 1500), ("NVIDIA H200", 290), ("Some Future GPU", 1500)):
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: gpu)
        gpu_check.main(["--out", str(tmp_path)])
        assert seen["bench"] == (budget, budget / 290), gpu
        assert json.loads((tmp_path / "gpu_check.json").read_text())["environment"]["budget_s"] == budget
