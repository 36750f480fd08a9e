"""Every data set's loader on small fabricated files in its on-disk format, the CLI on each,
and clear errors when data are missing."""
import gzip
import json
import pickle
import struct

import numpy as np
import pytest
import torch

from ottt_cuda.train import data, main

try:
    import torchvision  # noqa: F401
    HAS_TV = True
except ImportError:
    HAS_TV = False
needs_tv = pytest.mark.skipif(not HAS_TV, reason="torchvision is not installed (CIFAR/ImageNet loaders need it)")

# Published per-channel means/stds of the training images (pixel values in [0, 1]), written here
# rather than read from ottt_cuda.train.data so that a wrong constant there fails:
# - Fashion-MNIST: 0.2860 / 0.3530 (mean and std of the 60000 training images; Xiao et al. 2017's
#   data set, the figures used throughout its PyTorch examples);
# - CIFAR-10: (0.4914, 0.4822, 0.4465) / (0.2470, 0.2435, 0.2616); CIFAR-100: (0.5071, 0.4865, 0.4409)
#   / (0.2673, 0.2564, 0.2762) (over the 50000 training images of each);
# - ImageNet: (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225) (torchvision's documented normalization).
FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530
CIFAR_MEAN_STD = {"cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
                  "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))}
IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


pytestmark = pytest.mark.usefixtures("restore_threads")  # --threads changes the global count


def write_idx(path, arr, gz):
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    raw = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes()
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(raw)


def fake_fmnist(root, gz, n_train=40, n_test=20):
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{split}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28)), gz)
        write_idx(root / f"{split}-labels-idx1-ubyte{suffix}", np.arange(n) % 10, gz)


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "raw"])
def test_read_idx(tmp_path, gz):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a", arr, gz)
    np.testing.assert_array_equal(data.read_idx(tmp_path / "a"), arr)


def test_read_idx_rejects_garbage(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04hello")
    with pytest.raises(data.DataError, match="IDX"):
        data.read_idx(tmp_path / "bad")
    write_idx(tmp_path / "short", np.zeros((4, 5), np.uint8), False)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-3])
    with pytest.raises(data.DataError, match="truncated"):
        data.read_idx(tmp_path / "short")


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "raw"])
def test_fmnist_loader(tmp_path, gz):
    fake_fmnist(tmp_path, gz)
    train, test = data.build("fmnist", str(tmp_path))
    assert len(train) == 40 and len(test) == 20
    x, y = train[3]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and int(y) == 3
    raw = data.read_idx(next(tmp_path.glob("train-images*")))[3]
    expect = (torch.from_numpy(raw.astype(np.float32)) / 255 - FMNIST_MEAN) / FMNIST_STD
    torch.testing.assert_close(x[0], expect)


def test_fmnist_batched_fetch_matches_items(tmp_path):
    # The DataLoader uses __getitems__ (one vectorized conversion per batch): the batches must be the
    # per-item values, in the sampler's order.
    fake_fmnist(tmp_path, False)
    train, _ = data.build("fmnist", str(tmp_path))
    order = [7, 3, 39, 0, 21]
    got = train.__getitems__(order)
    assert len(got) == len(order)
    for i, (x, y) in zip(order, got):
        ex, ey = train[i]
        assert torch.equal(x, ex) and int(y) == int(ey) == i % 10
    xb, yb = next(iter(torch.utils.data.DataLoader(train, batch_size=5, sampler=order)))
    assert torch.equal(xb, torch.stack([train[i][0] for i in order]))
    assert yb.tolist() == [i % 10 for i in order]


def test_fmnist_missing_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(data.DataError, match="apt-get install dataset-fashion-mnist"):
        data.build("fmnist", str(tmp_path))
    rc = main(["fmnist", "--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "dataset-fashion-mnist" in err and "--data-dir" in err


def run_ok(argv, capsys):
    rc = main(argv + ["--epochs", "1", "--limit-batches", "1", "--threads", "1", "--no-progress", "--workers", "0"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return json.loads(out.splitlines()[-1])


def test_fmnist_cli(tmp_path, capsys):
    fake_fmnist(tmp_path, True)
    res = run_ok(["fmnist", "--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "o"), "--batch", "8"], capsys)
    assert res["dataset"] == "fmnist" and res["model"] == "r400"


# ---------------------------------------------------------------- CIFAR (torchvision's pickled batches)

def fake_cifar(root, hundred=False, n=8):
    rng = np.random.default_rng(1)
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    key = "fine_labels" if hundred else "labels"  # str keys: the real files come from Python 2 pickles
    names = ["train", "test"] if hundred else [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), key: list(range(n))}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    meta = ("meta", "fine_label_names") if hundred else ("batches.meta", "label_names")
    with open(folder / meta[0], "wb") as f:
        pickle.dump({meta[1]: [f"c{i}" for i in range(100 if hundred else 10)]}, f)


@needs_tv
@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_loader_and_cli(tmp_path, capsys, name):
    fake_cifar(tmp_path, name == "cifar100")
    train, test = data.build(name, str(tmp_path))
    assert len(train) == (40 if name == "cifar10" else 8) and len(test) == 8
    x, y = train[0]
    assert x.shape == (3, 32, 32) and int(y) == 0
    xt, _ = test[0]
    assert torch.equal(xt, test[0][0])  # no augmentation on the test split
    # the test image is the stored pixels (CHW rows of the pickled batch) normalized per channel
    folder = tmp_path / ("cifar-100-python" if name == "cifar100" else "cifar-10-batches-py")
    with open(folder / ("test" if name == "cifar100" else "test_batch"), "rb") as f:
        raw = pickle.load(f)["data"][0].reshape(3, 32, 32).astype(np.float64) / 255
    mean, std = (torch.tensor(v, dtype=torch.float64)[:, None, None] for v in CIFAR_MEAN_STD[name])
    torch.testing.assert_close(xt.double(), (torch.from_numpy(raw) - mean) / std, rtol=1e-5, atol=1e-5)
    res = run_ok([name, "--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "o"), "--batch", "4", "--T", "1"],
                 capsys)
    assert res["dataset"] == name and res["model"] == "vgg11_ws"


@needs_tv
def test_cifar_missing_is_a_clear_error(tmp_path):
    with pytest.raises(data.DataError, match="--download"):
        data.build("cifar10", str(tmp_path))


def test_cutout_zeroes_a_square():
    torch.manual_seed(0)
    img = torch.ones(3, 32, 32)
    out = data.Cutout(16)(img)
    zeros = (out == 0).all(0)
    assert 0 < int(zeros.sum()) <= 256 and torch.equal(img, torch.ones(3, 32, 32))


# ---------------------------------------------------------------- ImageNet (ImageFolder)

@needs_tv
def test_imagenet_loader_and_cli(tmp_path, capsys):
    from PIL import Image
    rng = np.random.default_rng(2)
    for split in ("train", "val"):
        for c in ("n01", "n02"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(tmp_path / split / c / f"{i}.png")
    # one validation image of a single colour: any resize and crop keep that colour, so the
    # normalized value is known exactly
    colour = np.array([200, 100, 30], dtype=np.uint8)
    Image.fromarray(np.broadcast_to(colour, (40, 48, 3)).copy()).save(tmp_path / "val" / "n01" / "0.png")
    train, test = data.build("imagenet", str(tmp_path), image_size=32)
    assert len(train) == 4 and train[0][0].shape == (3, 32, 32) and test[3][0].shape == (3, 32, 32)
    mean, std = (torch.tensor(v)[:, None, None] for v in IMAGENET_MEAN_STD)
    expect = ((torch.tensor(colour, dtype=torch.float32)[:, None, None] / 255 - mean) / std).expand(3, 32, 32)
    torch.testing.assert_close(test[0][0], expect, rtol=1e-5, atol=1e-5)
    res = run_ok(["imagenet", "--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "o"), "--batch", "2", "--T", "1",
                  "--image-size", "32"], capsys)
    assert res["model"] == "nf_resnet34"


@needs_tv
def test_imagenet_missing_is_a_clear_error(tmp_path):
    with pytest.raises(data.DataError, match="ImageFolder"):
        data.build("imagenet", str(tmp_path))


# ---------------------------------------------------------------- DVS frames (.npz)

def fake_dvs(root, T, hw, classes, n=6, dtype=np.uint8):
    rng = np.random.default_rng(3)
    for split in ("train", "test"):
        frames = rng.integers(0, 4, (n, T, 2, hw, hw)).astype(dtype)
        np.savez(root / f"{split}.npz", frames=frames, labels=np.arange(n) % classes)


@pytest.mark.parametrize("name,classes", [("cifar10dvs", 10), ("dvsgesture", 11)])
def test_dvs_loader_and_cli(tmp_path, capsys, name, classes):
    fake_dvs(tmp_path, 3, 16, classes, dtype=np.uint8 if name == "cifar10dvs" else np.float32)
    train, test = data.build(name, str(tmp_path), T=3)
    x, y = test[1]
    assert x.shape == (3, 2, 16, 16) and x.dtype == torch.float32 and int(y) == 1
    if name == "dvsgesture":  # no normalization or crop: the frames as stored
        with np.load(tmp_path / "test.npz") as z:
            torch.testing.assert_close(x, torch.from_numpy(z["frames"][1]))
    else:  # C.2: normalized by the global mean/std of the training frames (test split: no crop)
        with np.load(tmp_path / "train.npz") as z, np.load(tmp_path / "test.npz") as zt:
            f = z["frames"].astype(np.float64)
            expect = (zt["frames"][1].astype(np.float64) - f.mean()) / f.std()
        torch.testing.assert_close(x, torch.from_numpy(expect).float())
        assert train[0][0].shape == (3, 2, 16, 16)  # random crop keeps the size
    res = run_ok([name, "--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "o"), "--batch", "2", "--T", "3"],
                 capsys)
    assert res["dataset"] == name


def test_dvs_errors(tmp_path, capsys):
    with pytest.raises(data.DataError, match="train.npz"):
        data.build("cifar10dvs", str(tmp_path), T=10)
    fake_dvs(tmp_path, 3, 8, 10)
    with pytest.raises(data.DataError, match="T = 10"):
        data.build("cifar10dvs", str(tmp_path), T=10)
    np.savez(tmp_path / "train.npz", frames=np.zeros((2, 3, 8, 8)), labels=np.zeros(2))
    with pytest.raises(data.DataError, match=r"\[N, T, 2, H, W\]"):
        data.build("dvsgesture", str(tmp_path), T=3)
    rc = main(["dvsgesture", "--data-dir", str(tmp_path / "none"), "--out-dir", str(tmp_path / "o")])
    assert rc == 2 and "train.npz" in capsys.readouterr().err


def test_download_only_for_cifar(tmp_path):
    with pytest.raises(data.DataError, match="--download"):
        data.build("fmnist", str(tmp_path), download=True)
