"""The installed `ssl_ae` console command, run as a user runs it."""
import json
import shutil
import subprocess
import sys

import torch


def ssl_ae(*args, timeout=300):
    "The console script where it is installed; else (a GPU machine that runs the repository without installing it) `python -m ssl_ae.cli`."
    command = ["ssl_ae"] if shutil.which("ssl_ae") else [sys.executable, "-m", "ssl_ae.cli"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=timeout)


def test_bench_augment_json():
    status, out, err = in_process("bench", "augment", "--json", "--images", "128", "--batch-size", "64", "--workers", "0")  # the plumbing; chapter 16 measures
    assert status == 0, err
    result = json.loads(out)  # exactly one JSON object on stdout
    assert {"ours_views_per_s", "torchvision_views_per_s", "speedup"} <= set(result)
    assert result["speedup"] == result["ours_views_per_s"] / result["torchvision_views_per_s"]


def test_help_explains_every_flag():
    status, out, _ = in_process("bench", "augment", "--help")
    assert status == 0
    for flag in ("--json", "--images", "--batch-size", "--workers", "--preset", "--device"): assert flag in out


def test_bad_input_is_one_line_and_status_2():
    status, out, err = in_process("bench", "augment", "--preset", "nope")
    assert status == 2 and out == ""
    assert err.strip().count("\n") == 0 and "choose one of simsiam_cifar" in err
    status, _, err = in_process("bench", "augment", "--images", "0")
    assert status == 2 and "must be a positive whole number" in err
    status, _, err = in_process("bench", "step", "--device", "toaster")
    assert status == 2 and "unknown device 'toaster'" in err and err.strip().count("\n") == 0


def in_process(*args):
    "Run `ssl_ae ARGS` in this process (the same `main` the console script calls): (status, stdout, stderr)."
    import contextlib
    import io
    from ssl_ae.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try: status = main(list(args))
        except SystemExit as e: status = e.code
    return status, out.getvalue(), err.getvalue()


def test_pretrain_bad_input_fails_fast_with_one_line(tmp_path):
    import time
    corrupt = tmp_path / "last.pt"
    corrupt.write_bytes(b"\x00" * 100)
    cases = [(["--w", "1.5"], "w must be in [0, 1]; got 1.5"),
             (["--method", "simsiam_gs", "--lam", "1.5"], "lam must be in (0, 1]; got 1.5"),
             (["--method", "nope"], "invalid choice: 'nope'"),
             (["--dataset", "imagenet"], "invalid choice: 'imagenet'"),
             (["--dataset", "mnist", "--data", str(tmp_path / "empty")], "mnist (train split) not found: looked in"),
             (["--resume", str(corrupt)], "is not a readable checkpoint"),
             (["--device", "toaster"], "argument --device: unknown device 'toaster'; use auto, cpu, cuda, cuda:N or mps"),
             (["--amp", "fp8"], "argument --amp: invalid choice: 'fp8'")]
    for args, expected in cases:
        start = time.time()
        status, _, err = in_process("pretrain", *args, "--out", str(tmp_path / "out"))
        assert status == 2, (args, err)
        assert expected in err and err.strip().count("\n") == 0, (args, err)
        assert time.time() - start < 30, args
    run = ssl_ae("evaluate", str(corrupt))  # and once through the installed console script
    assert run.returncode == 2 and "is not a readable checkpoint" in run.stderr and run.stderr.strip().count("\n") == 0


def test_pretrain_help_explains_every_flag():
    status, out, _ = in_process("pretrain", "--help")
    assert status == 0
    for flag in ("--method", "--dataset", "--epochs", "--w", "--lam", "--alpha", "--out", "--resume", "--device", "--compile", "--no-amp", "--amp", "--checkpoint-minutes"):
        assert flag in out


def test_bench_profile_json(monkeypatch):
    import ssl_ae.bench
    monkeypatch.setattr(ssl_ae.bench, "_probe_seconds", lambda t, clock: 1.0)  # the probe's time: chapter 16 measures it
    status, out, err = in_process("bench", "profile", "--json", "--steps", "3", "--batch-size", "32")  # medians of 3: one timed step alone was noisy enough on a busy 2-core machine to fail the check below
    assert status == 0, err
    r = json.loads(out)
    phases = sum(r[f"{k}_s"] for k in ("augment", "forward", "backward", "optimizer"))
    assert 0.25 < phases / r["step_s"] < 4, r  # the phases account for the step (loosely: `pytest -n` runs beside it)
    assert r["encoder_s"] < r["forward_s"] * 1.5 and r["probe_s"] > 0 and r["steps_per_minute"] == 60 / r["step_s"]


def test_the_probe_trains_on_the_images_a_limited_run_pretrained_on(tmp_path):
    "Issue 21: `--limit N` limits the probe's training split too (it was the whole split: 15-90 s more on 2 cores)."
    from ssl_ae.evaluate import _labelled_splits
    from ssl_ae.recipes import quick_config
    from ssl_ae.train import Trainer
    t = Trainer(quick_config("sidae", limit=128, out=str(tmp_path)), progress=False)
    (xtr, ytr), (xte, yte) = _labelled_splits(t)
    assert len(xtr) == len(ytr) == 128 and torch.equal(xtr, t.images[:128]) and len(xte) == 2_000
    full = Trainer(quick_config("sidae", limit=None, out=str(tmp_path / "full")), progress=False)
    assert len(_labelled_splits(full)[0][0]) == 10_000  # the quick start's probe: unchanged


def _tiny_run(tmp_path):
    "A finished two-epoch quick-start run (64 toy images) in tmp_path/run, as `ssl_ae pretrain` leaves it."
    status, out, err = in_process("pretrain", "--limit", "64", "--epochs", "2", "--batch-size", "32", "--out",
                                  str(tmp_path / "run"), "--quiet")
    assert status == 0, err
    return tmp_path / "run"


def test_nothing_a_user_made_is_overwritten_without_asking(tmp_path):
    """Issue 39: export, evaluate and resuming a finished run each replaced files (an earlier encoder.pt, the run's
    evaluation.json, summary.json's timings). Now each refuses in one line, or says the run is finished and leaves it."""
    run = _tiny_run(tmp_path)
    summary = (run / "summary.json").read_text()
    # export: a second write is refused, --overwrite replaces; a name ending in / is a folder
    assert in_process("export", str(run), str(tmp_path / "enc.pt"))[0] == 0
    status, _, err = in_process("export", str(run), str(tmp_path / "enc.pt"))
    assert status == 2 and "already exist: pass another path, or overwrite=True (--overwrite)" in err and err.count("\n") == 1
    assert in_process("export", str(run), str(tmp_path / "enc.pt"), "--overwrite")[0] == 0
    assert in_process("export", str(run), str(tmp_path / "new_dir") + "/")[0] == 0
    assert (tmp_path / "new_dir" / "encoder.pt").exists() and (tmp_path / "new_dir" / "encoder.json").exists()
    assert not (tmp_path / "new_dir.json").exists()
    # evaluate: its JSON is not replaced unless asked; --no-save writes nothing
    args = ("evaluate", str(run), "--seeds", "1", "--limit", "64", "--fractions", "1.0")
    assert in_process(*args)[0] == 0 and (run / "evaluation.json").exists()
    before = (run / "evaluation.json").read_text()
    status, _, err = in_process(*args)
    assert status == 2 and "evaluation.json exists (an earlier evaluation): --overwrite replaces it" in err
    assert in_process(*args, "--no-save", "--overwrite")[0] == 0 and (run / "evaluation.json").read_text() == before
    # resuming a finished run trains nothing and rewrites nothing
    status, out, _ = in_process("pretrain", "--resume", str(run))
    assert status == 0 and "is a finished run (sidae on toy, epoch 2 of 2): nothing to train" in out
    assert (run / "summary.json").read_text() == summary


def test_bench_capture_without_a_gpu_refuses_at_once():
    "It ran 11 minutes printing nothing on a CPU-only machine; now one line, in well under a second of work."
    import time
    start = time.time()
    status, out, err = in_process("bench", "capture", "--device", "cpu")
    assert status == 2 and "needs a CUDA GPU" in err and err.count("\n") == 1 and time.time() - start < 20
    assert "(a CUDA GPU)" in in_process("bench", "--help")[1]


def test_every_script_a_user_is_told_to_run_has_help(tmp_path):
    "Each script under tests/ that the docs tell someone to run answers --help (execute_notebooks.py was a traceback)."
    from pathlib import Path
    tests = Path(__file__).parent
    for script in ("execute_notebooks.py", "run_plain.py", "gpu_check.py", "fingerprint.py", "pretrain_plan.py", "durations.py"):
        r = subprocess.run([sys.executable, str(tests / script), "--help"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and r.stdout.startswith("usage:") and not r.stderr.strip(), (script, r.stderr[-500:])


def test_a_tutorial_executed_at_another_scale_leaves_its_page(monkeypatch, tmp_path):
    "Executed at the default (smoke) scale, a tutorial's copy goes to executed/; its page keeps the cpu outputs."
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent))
    from execute_notebooks import destination
    page, chapter = Path("nbs/tutorials/01_sidae.ipynb"), Path("nbs/11_train.ipynb")
    monkeypatch.delenv("SSL_AE_SCALE", raising=False)
    assert destination(page) == Path("executed/01_sidae.ipynb") and destination(chapter) == chapter
    assert destination(page, update=True) == page and destination(page, out=tmp_path) == tmp_path / "01_sidae.ipynb"
    monkeypatch.setenv("SSL_AE_SCALE", "cpu")
    assert destination(page) == page  # regenerating the page's committed results


def test_the_knn_line_says_which_features_it_read(tmp_path):
    "Training's monitor and evaluate gave two kNN accuracies for one checkpoint; the line now says whose features it read."
    run = _tiny_run(tmp_path)
    status, out, _ = in_process("evaluate", str(run), "--seeds", "1", "--limit", "64", "--fractions", "1.0", "--no-save")
    assert status == 0 and "(features after BatchNorm recalibration on clean images, as the probe reads them)" in out
    status, out, _ = in_process("evaluate", str(run), "--seeds", "1", "--limit", "64", "--fractions", "1.0", "--no-save",
                                "--no-recalibrate", "--json")
    assert status == 0 and json.loads(out)["knn_bn_recalibrated"] is False


def test_a_bad_method_option_is_refused_before_the_settings_table(tmp_path):
    "Seven of issue 39's bad inputs printed the 14-15-line settings table first and the error last; now one line, first."
    cases = [(["--w", "-0.1"], "w must be in [0, 1]; got -0.1"), (["--w", "nan"], "w must be in [0, 1]; got nan"),
             (["--method", "simsiam_gs", "--lam", "0"], "lam must be in (0, 1]; got 0.0"),
             (["--method", "simclr", "--tau", "0"], "tau must be > 0; got 0.0"),
             (["--method", "dae_embed", "--alpha", "-1"], "alpha must be >= 0; got -1.0"),
             (["--method", "dae_embed", "--kind", "l3"], "kind must be one of l1, l2, ncs; got 'l3'"),
             (["--method", "aasae", "--beta", "-1"], "beta must be >= 0; got -1.0")]
    for args, said in cases:
        status, out, err = in_process("pretrain", *args, "--out", str(tmp_path / "run"), "--epochs", "1")
        assert status == 2 and out == "" and said in err and err.count("\n") == 1, (args, out[:200], err)
    assert not (tmp_path / "run").exists()
