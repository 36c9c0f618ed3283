"""A researcher's use of the package: their own images (a folder, or a tensor), their own resolution, and an encoder
that leaves as a plain state dict. Each test fails if the feature it names is broken."""
import json
import sys
import textwrap

import pytest
import torch

from testdevice import same  # (tests/ is on the path: test_cli is imported from there too)
from PIL import Image

from test_cli import in_process


def write_folder(root, classes=("cat", "dog"), per_class=12, size=(40, 56), seed=0):
    "Class subfolders of PNG files of a non-square size, in train/ and test/ splits; each class has its own mean colour."
    g = torch.Generator().manual_seed(seed)
    for split, n in (("train", per_class), ("test", per_class // 2)):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                base = torch.tensor([200, 60, 60] if c == 0 else [60, 60, 200], dtype=torch.float32)
                img = (base + 30 * torch.randn(*size, 3, generator=g)).clamp(0, 255).to(torch.uint8)
                Image.fromarray(img.numpy()).save(folder / f"{i:03d}.png")
    return root


def test_pretrain_on_a_folder_from_the_command_line(tmp_path):
    root = write_folder(tmp_path / "pets")
    out = tmp_path / "run"
    status, stdout, err = in_process("pretrain", "--dataset", "folder", "--data", str(root), "--image-size", "64", "--backbone", "small",
                                     "--epochs", "1", "--batch-size", "8", "--optimizer", "adam", "--lr", "1e-3", "--augment", "simsiam_cifar",
                                     "--quiet", "--out", str(out))
    assert status == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == "folder" and summary["probe_accuracy"] is not None  # train/ and test/ class folders: probed
    saved = torch.load(out / "last.pt", weights_only=False)
    assert saved["config"]["image_size"] == 64 and saved["config"]["data"] == str(root)
    # a flat folder (no labels): pretrains, and says the probe was skipped
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, p in enumerate(sorted((root / "train" / "cat").iterdir())): p.rename(flat / f"{i}.png")
    status, stdout, err = in_process("pretrain", "--dataset", "folder", "--data", str(flat), "--backbone", "small", "--epochs", "1",
                                     "--batch-size", "4", "--quiet", "--out", str(tmp_path / "flat_run"))
    assert status == 0, err
    assert "linear probe skipped" in stdout
    # an empty folder: one line, status 2
    (tmp_path / "empty").mkdir()
    status, _, err = in_process("pretrain", "--dataset", "folder", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "x"))
    assert status == 2 and "no images in" in err and err.strip().count("\n") == 0


def test_trainer_takes_images_in_memory_and_resumes_with_them(tmp_path):
    from ssl_ae.train import Config, Trainer, train_or_resume
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 48, 48), generator=g, dtype=torch.uint8)
    cfg = Config(method="sidae", backbone="small", epochs=2, batch_size=16, optimizer="adam", lr=1e-3, augment="toy",
                 options={"dim": 32}, out=str(tmp_path / "mine"))
    half = Trainer(cfg, progress=False, images=images)
    half.fit(stop_after=1)
    with pytest.raises(ValueError, match="pass them again"): train_or_resume(cfg, progress=False)
    resumed = train_or_resume(cfg, progress=False, images=images)
    straight = Trainer(Config(**{**cfg.__dict__, "out": str(tmp_path / "straight")}), progress=False, images=images)
    straight.fit()
    assert resumed.epoch == 2 and resumed.loader.images.shape == (64, 3, 32, 32)  # resized to the working size
    assert all(same(a, b) for a, b in zip(resumed.method.state_dict().values(), straight.method.state_dict().values()))


@pytest.mark.parametrize("method,backbone", [("sidae", "small"), ("aasae", "small"), ("dae_embed", "white"), ("simclr_gs", "small"),
                                             ("simsiam_gs", "small"), ("supervised", "small"), ("vae", "resnet18_imagenet")])
def test_every_family_trains_at_96_pixels(tmp_path, method, backbone):
    from ssl_ae.evaluate import load_method, reconstruct_views
    from ssl_ae.train import Config, Trainer
    cfg = Config(method=method, backbone=backbone, image_size=96, limit=8, epochs=1, batch_size=8, optimizer="adam", lr=1e-3,
                 augment="simclr", out=str(tmp_path / method))
    t = Trainer(cfg, progress=False)
    assert t.loader.images.shape[-1] == 96 and t.augment.size == 96 and t.augment.blur_kernel == 9
    t.fit()
    assert torch.isfinite(torch.tensor(t.history[-1]["loss"]))
    m = load_method(tmp_path / method / "last.pt")  # a 96-px checkpoint loads back at 96 px
    rec = reconstruct_views(m, t.loader.images[:2], "simclr")
    if rec["r1"] is not None: assert rec["r1"].shape == (2, 3, 96, 96)


def test_stl10_keeps_its_96_pixels(tmp_path):
    from test_data import write_stl10
    from ssl_ae.data import load_dataset
    labels = write_stl10(tmp_path, n=3)
    x, y = load_dataset("stl10", tmp_path, "train", size=96)
    assert x.shape == (3, 3, 96, 96) and y.tolist() == (labels["train"].astype(int) - 1).tolist()
    assert torch.equal(x[0, 0], (2 * torch.arange(96, dtype=torch.uint8))[None].expand(96, 96))  # every native pixel, unresampled
    assert load_dataset("stl10", tmp_path, "train")[0].shape == (3, 3, 32, 32)  # the default stays SidAE's 32 px


LOAD_WITHOUT_SSL_AE = textwrap.dedent('''
    import json, torch, torchvision           # run with sys.modules["ssl_ae"] = None: importing ssl_ae fails
    info = json.load(open(weights.replace(".pt", ".json")))  # beside the weights: input, and how to rebuild the net
    exec(info["build"])                        # the line of torch/torchvision code it carries: it defines m
    m.load_state_dict(torch.load(weights, weights_only=True)); m.eval()  # the weights: a plain state dict
    mean, std = torch.tensor(info["mean"]).view(1, 3, 1, 1), torch.tensor(info["std"]).view(1, 3, 1, 1)
    with torch.no_grad(): features = m((x - mean) / std)
''')


@pytest.mark.parametrize("backbone,method,options", [("resnet18_cifar", "sidae", {"dim": 64, "hidden": 64, "projector_layers": 2}),
                                                     ("white", "dae_embed", {"dim": 64, "normalize_input": False})])
def test_export_leaves_an_encoder_that_torchvision_alone_loads(tmp_path, backbone, method, options):
    from ssl_ae.evaluate import load_method
    from ssl_ae.train import Config, Trainer
    run = tmp_path / "run"
    Trainer(Config(method=method, backbone=backbone, limit=32, epochs=1, batch_size=16, optimizer="adam", lr=1e-3, augment="toy",
                   options=options, out=str(run)), progress=False).fit()
    status, out, err = in_process("export", str(run / "last.pt"), str(tmp_path / "encoder.pt"))
    assert status == 0 and f"{backbone} encoder" in out, err
    x = torch.rand(4, 3, 32, 32)
    loader = {"weights": str(tmp_path / "encoder.pt"), "x": x}
    with pytest.MonkeyPatch.context() as mp:  # in this process (no second torch start-up), with ssl_ae made unimportable
        mp.setitem(sys.modules, "ssl_ae", None)
        exec(LOAD_WITHOUT_SSL_AE, loader)
    with torch.no_grad(): ours = load_method(run / "last.pt").features(x)
    torch.testing.assert_close(loader["features"], ours, atol=1e-5, rtol=1e-5)
    status, _, err = in_process("export", str(tmp_path / "nowhere.pt"), str(tmp_path / "e.pt"))
    assert status == 2 and err.strip().count("\n") == 0
