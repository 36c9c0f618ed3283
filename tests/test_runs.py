"""Runs as people make them (issue 21): the command line on folders of real image files, run as a new user runs it.
Each test names the problem it guards against; each failed on the code before the issue was fixed."""
import json
import sys
import time

import pytest
import torch

from test_cli import in_process
from testdevice import DEVICE
from test_readme import write_photos


def flat_photos(root, n=20):
    "A flat folder of `n` real image files of mixed sizes and modes (no labels), as `write_photos` makes them."
    write_photos(root.parent / f"{root.name}_split")
    root.mkdir()
    files = sorted((root.parent / f"{root.name}_split").rglob("*.*"))[:n]
    for i, f in enumerate(files): f.rename(root / f"{i}{f.suffix}")
    return root


def test_a_folder_of_20_images_gets_a_recipe_that_fits_it(tmp_path):
    "1. The README's own-images command on 20 images: no 'no full batch of 512', the settings and their sources shown."
    photos = flat_photos(tmp_path / "photos")
    status, out, err = in_process("pretrain", "--dataset", "folder", "--data", str(photos), "--image-size", "64",
                                  "--epochs", "1", "--out", str(tmp_path / "run"))
    assert status == 0, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    c, sources = summary["config"], summary["sources"]
    assert c["batch_size"] == 8 and sources["batch_size"].startswith("data-size rule")
    if DEVICE == "cpu": assert c["backbone"] == "small" and sources["backbone"].startswith("data-size rule")  # a GPU keeps ResNet-18
    assert {"lr", "optimizer", "augment", "seed", "weight_decay", "schedule"} <= set(c) and sources["epochs"] == "flag"
    for line in ("batch_size", "data-size rule", "backbone", "flag"): assert line in out, out
    assert "images/s over the first" in out and "training steps left take about" in out  # the estimate


def test_data_without_dataset_is_used_as_a_folder_or_refused(tmp_path):
    "1. `--data photos` without `--dataset folder` trained silently on the toy data."
    photos = flat_photos(tmp_path / "photos")
    status, _, err = in_process("pretrain", "--data", str(photos), "--epochs", "1", "--quiet", "--out", str(tmp_path / "r"))
    assert status == 0, err
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["dataset"] == "folder"
    (tmp_path / "notes").mkdir()
    status, _, err = in_process("pretrain", "--data", str(tmp_path / "notes"), "--out", str(tmp_path / "r2"))
    assert status == 2 and "holds no images; name its data set: --dataset folder" in err and err.count("\n") == 1


def test_help_shows_each_recipe_flags_default():
    "1. --help said nothing of the defaults of --epochs, --batch-size, --lr, --backbone, --augment."
    status, out, _ = in_process("pretrain", "--help")
    flat = " ".join(out[out.index("options:"):].split())  # the flags' descriptions, after the usage line
    for flag in ("--epochs", "--batch-size", "--lr", "--backbone", "--augment", "--optimizer"):
        text = flat[flat.index(flag + " "):]
        text = text[:text.index(" --", 3)]
        assert "default:" in text, (flag, text)
    assert "spread" in flat and "images_per_s" in flat  # the epoch line's fields are explained


def test_a_folder_that_holds_a_run_is_not_overwritten(tmp_path):
    "2. A second run into the same folder replaced the first's last.pt and history.csv without a word."
    run = tmp_path / "run"
    args = ("pretrain", "--limit", "128", "--epochs", "1", "--batch-size", "64", "--quiet", "--knn-every", "0")
    assert in_process(*args, "--out", str(run))[0] == 0
    before = (run / "last.pt").read_bytes()
    status, _, err = in_process(*args, "--method", "ae", "--out", str(run))
    assert status == 2 and "already holds a run" in err and "--overwrite" in err and err.count("\n") == 1
    assert (run / "last.pt").read_bytes() == before
    assert in_process(*args, "--method", "ae", "--out", str(run), "--overwrite")[0] == 0
    assert torch.load(run / "last.pt", weights_only=True)["config"]["method"] == "ae"
    from ssl_ae.cli import default_out
    assert default_out("sidae", "toy") == "runs/quickstart" and default_out("aasae", "toy") != "runs/quickstart"


def test_bad_output_paths_fail_in_one_line_before_training(tmp_path):
    "3. --out an existing file trained a whole epoch, then FileExistsError; export into a folder: IsADirectoryError."
    (tmp_path / "file.txt").write_text("x")
    start = time.time()
    status, _, err = in_process("pretrain", "--out", str(tmp_path / "file.txt"))
    assert status == 2 and "is a file, not a folder" in err and err.count("\n") == 1 and time.time() - start < 20
    run = tmp_path / "run"
    assert in_process("pretrain", "--limit", "128", "--epochs", "1", "--quiet", "--out", str(run))[0] == 0
    (tmp_path / "exported").mkdir()
    status, out, err = in_process("export", str(run), str(tmp_path / "exported"))  # a run folder in, a folder out
    assert status == 0, err
    assert sorted(p.name for p in (tmp_path / "exported").iterdir()) == ["encoder.json", "encoder.pt"]
    status, _, err = in_process("export", str(run), str(tmp_path / "missing" / "encoder.pt"))
    assert status == 2 and "is not a folder" in err and err.count("\n") == 1


def test_messages_name_the_folder_written_and_accept_run_folders(tmp_path):
    "4. After --resume runs/int the summary named runs/quickstart; evaluate and --resume refused a run folder."
    run = tmp_path / "int"
    assert in_process("pretrain", "--limit", "128", "--epochs", "1", "--quiet", "--out", str(run))[0] == 0
    status, out, err = in_process("pretrain", "--resume", str(run), "--epochs", "2", "--quiet")
    assert status == 0, err
    files = next(l for l in out.splitlines() if l.startswith("files in"))
    assert files.startswith(f"files in {run}:") and "reconstructions.png" in files and "last.pt" in files
    status, out, err = in_process("evaluate", str(run), "--limit", "300", "--seeds", "1", "--fractions", "1", "--json")
    assert status == 0 and json.loads(out)["epoch"] == 2, err
    (tmp_path / "empty").mkdir()
    status, _, err = in_process("evaluate", str(tmp_path / "empty"))
    assert status == 2 and f"ssl_ae pretrain --out {tmp_path / 'empty'}" in err


def test_the_export_is_a_plain_state_dict(tmp_path):
    "5. `m.load_state_dict(torch.load('encoder.pt'))` failed: the file was a dict of format, build, state_dict, ..."
    from ssl_ae.evaluate import load_method
    run = tmp_path / "run"
    assert in_process("pretrain", "--limit", "128", "--epochs", "1", "--quiet", "--out", str(run))[0] == 0
    assert in_process("export", str(run), str(tmp_path / "encoder.pt"))[0] == 0
    info = json.loads((tmp_path / "encoder.json").read_text())
    env = {}
    exec(info["build"], {"torch": torch}, env)
    m = env["m"]
    m.load_state_dict(torch.load(tmp_path / "encoder.pt", weights_only=True))
    x = torch.rand(2, 3, 32, 32)
    mean, std = torch.tensor(info["mean"]).view(3, 1, 1), torch.tensor(info["std"]).view(3, 1, 1)
    with torch.no_grad(): torch.testing.assert_close(m.eval()((x - mean) / std), load_method(run).features(x))


def test_logs_outside_a_terminal_are_plain_lines(tmp_path):
    "6. Outside a terminal the bar wrote every step joined by carriage returns; --quiet also hid what it did not say."
    status, out, err = in_process("pretrain", "--limit", "128", "--epochs", "2", "--out", str(tmp_path / "r"))
    assert status == 0, err  # in_process writes to StringIO streams: not a terminal, as a pipe or a file is not
    assert "\r" not in out + err
    assert "epoch 2:" in out and "linear probe of the pretrained encoder: 128 training" in out
    status, out, _ = in_process("pretrain", "--limit", "128", "--epochs", "1", "--quiet", "--out", str(tmp_path / "q"))
    assert status == 0 and "epoch 1:" not in out and "linear probe of" not in out and "files in" in out


def test_threads_and_tensorboard(tmp_path, monkeypatch):
    "6. No threads setting, and no TensorBoard output."
    import types
    written = []
    class Writer:  # a stand-in for torch.utils.tensorboard's writer, so the test runs without tensorboard installed
        def __init__(self, folder): written.append(("folder", folder))
        def add_scalar(self, k, v, step): written.append((k, v, step))
        def flush(self): pass
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    threads = torch.get_num_threads()
    try:
        status, _, err = in_process("pretrain", "--limit", "128", "--epochs", "2", "--quiet", "--threads", "1",
                                    "--tensorboard", "--out", str(tmp_path / "r"))
        assert status == 0, err
        assert torch.get_num_threads() == 1
    finally: torch.set_num_threads(threads)
    history = json.loads((tmp_path / "r" / "summary.json").read_text())
    losses = [v for k, v, step in written[1:] if k == "loss"]
    assert written[0] == ("folder", str(tmp_path / "r" / "tensorboard")) and len(losses) == 2
    import csv
    rows = list(csv.DictReader(open(tmp_path / "r" / "history.csv")))
    assert [float(r["loss"]) for r in rows] == pytest.approx(losses)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # not installed: one line, before any work
    status, _, err = in_process("pretrain", "--tensorboard", "--out", str(tmp_path / "t"))
    assert status == 2 and "pip install tensorboard" in err and not (tmp_path / "t" / "last.pt").exists()


def test_tutorials_say_which_scale_their_outputs_are_from_and_use_the_fractions_they_print():
    "7. Run in place at smoke scale, a tutorial's outputs passed for the cpu results its prose describes; '1 %' was 10 %."
    import re
    from pathlib import Path
    import nbformat
    for path in sorted((Path(__file__).parents[1] / "nbs" / "tutorials").glob("[0-9]*.ipynb")):
        code = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
        settings = next(i for i, s in enumerate(code) if s.startswith("SCALE = "))
        line = next(l for l in code[settings].splitlines() if l.startswith("FRACTIONS ="))
        for scale in ("smoke", "cpu", "colab", "paper"):
            env = {"SCALE": scale, "CPU": scale == "cpu"}
            exec(line, env)
            assert env["FRACTIONS"] == {"all": 1.0, "few": 0.01}, (path.name, scale, env["FRACTIONS"])
        banner = code[settings + 1]
        assert banner.startswith('if SCALE != "cpu":') and "display(Markdown(" in banner, path.name
        shown = {}
        exec(banner, {"SCALE": "smoke", "display": lambda m: shown.setdefault("text", m), "Markdown": str})
        assert re.search(r"from the `smoke` scale.*describes the committed `cpu` results", shown["text"]), path.name
