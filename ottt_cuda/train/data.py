"""Data sets and loaders for every recipe.

On-disk formats:
- fmnist: the four IDX files of Fashion-MNIST (train-images-idx3-ubyte, train-labels-idx1-ubyte,
  t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte), gzip-compressed (.gz) or not, in --data-dir
  (default: /usr/share/datasets/fashion-mnist, where Debian's dataset-fashion-mnist installs them).
- cifar10 / cifar100: torchvision's layout (cifar-10-batches-py/ or cifar-100-python/ in --data-dir).
- imagenet: ImageFolder layout, --data-dir/train/<class>/*.JPEG and --data-dir/val/<class>/*.JPEG.
- cifar10dvs / dvsgesture: pre-integrated frames, one file per split, --data-dir/train.npz and
  --data-dir/test.npz, each holding
      frames  [N, T, 2, H, W]  uint8 (event counts) or float32, ON/OFF polarity channels
      labels  [N]              integer class indices
  (write them with numpy.savez; the paper integrates CIFAR10-DVS into T = 10 frames at 48x48 and
  DVS128-Gesture into T = 20 frames; T of the file must equal --T).
- synthetic: generated in memory (no files).
"""
import gzip
import os
import pickle
import struct

import numpy as np
import torch

FMNIST_DIR = "/usr/share/datasets/fashion-mnist"
FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530
CIFAR_STATS = {"cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
               "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))}
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CUTOUT_LENGTH = 16


class DataError(RuntimeError):
    """A data set is missing or malformed; the message says how to get it."""


def default_data_dir(dataset):
    if dataset == "fmnist":
        return FMNIST_DIR
    return os.path.join(os.path.expanduser("~"), ".cache", "ottt_cuda", dataset)


# ----------------------------------------------------------------------------- IDX (Fashion-MNIST)

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path):
    """An IDX file (gzip or raw, told apart by the gzip magic, not the name) as a numpy array."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    count = int(np.prod(dims)) if dims else 1
    offset = 4 + 4 * ndim
    if len(raw) - offset < count * dtype.itemsize:
        raise DataError(f"{path} is truncated: header says {dims}, found {len(raw) - offset} bytes of data")
    return np.frombuffer(raw, dtype, count, offset).reshape(dims).astype(dtype.newbyteorder("="))


def _find_idx(data_dir, stem):
    for name in (stem + ".gz", stem):
        p = os.path.join(data_dir, name)
        if os.path.isfile(p):
            return p
    return None


FMNIST_HELP = ("Fashion-MNIST IDX files not found in {dir} (need {missing}).\n"
               "Get them with:  sudo apt-get install dataset-fashion-mnist   (installs to " + FMNIST_DIR + ")\n"
               "or download train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz,\n"
               "t10k-labels-idx1-ubyte.gz from https://github.com/zalandoresearch/fashion-mnist into a folder\n"
               "and pass it with --data-dir.")


class ArrayDataset(torch.utils.data.Dataset):
    """Images held in memory as uint8 [N, C, H, W]; scaled to [0, 1], normalized per item."""

    def __init__(self, images, labels, mean, std):
        self.images = torch.as_tensor(images)
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.mean, self.std = mean, std

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        x = self.images[i].float().div_(255.0).sub_(self.mean).div_(self.std)
        return x, self.labels[i]


def fashion_mnist(data_dir):
    data_dir = data_dir or FMNIST_DIR
    stems = {(split, kind): f"{split}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"
             for split in ("train", "t10k") for kind in ("images", "labels")}
    paths = {k: _find_idx(data_dir, s) for k, s in stems.items()}
    missing = [stems[k] + "[.gz]" for k, p in paths.items() if p is None]
    if missing:
        raise DataError(FMNIST_HELP.format(dir=data_dir, missing=", ".join(missing)))
    out = []
    for split in ("train", "t10k"):
        images, labels = read_idx(paths[(split, "images")]), read_idx(paths[(split, "labels")])
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(f"Fashion-MNIST {split} files disagree: images {images.shape}, labels {labels.shape}")
        out.append(ArrayDataset(images[:, None], labels.astype(np.int64), FMNIST_MEAN, FMNIST_STD))
    return out[0], out[1]


# ----------------------------------------------------------------------------- synthetic

def synthetic(num_classes=10, size=8, n_train=1024, n_test=256, noise=0.35):
    """Noisy copies of one random prototype image per class: learnable in a few epochs.
    Generated from a fixed seed so every run (and every rank) sees the same data."""
    g = torch.Generator().manual_seed(1234)
    protos = torch.rand(num_classes, 1, size, size, generator=g)

    def make(n):
        y = torch.arange(n) % num_classes
        x = (protos[y] + noise * torch.randn(n, 1, size, size, generator=g)).clamp_(0, 1)
        return torch.utils.data.TensorDataset(x, y)

    return make(n_train), make(n_test)


# ----------------------------------------------------------------------------- torchvision sets

def _torchvision():
    try:
        import torchvision
    except ImportError as e:
        raise DataError("this data set needs torchvision, which is not installed: "
                        "pip install torchvision (the version matching your torch)") from e
    return torchvision


class Cutout:
    """Zero one square of side `length` at a random centre (clipped at the border), DeVries & Taylor
    2017, applied after normalization as in their code. Uses torch's RNG so runs are reproducible."""

    def __init__(self, length=CUTOUT_LENGTH):
        self.length = length

    def __call__(self, img):
        h, w = img.shape[-2:]
        cy, cx = torch.randint(h, ()).item(), torch.randint(w, ()).item()
        half = self.length // 2
        img = img.clone()
        img[..., max(0, cy - half):min(h, cy + half), max(0, cx - half):min(w, cx + half)] = 0
        return img


def cifar(name, data_dir, download):
    tv = _torchvision()
    T = tv.transforms
    mean, std = CIFAR_STATS[name]
    train_tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                          T.Normalize(mean, std), Cutout()])
    test_tf = T.Compose([T.ToTensor(), T.Normalize(mean, std)])
    base = tv.datasets.CIFAR10 if name == "cifar10" else tv.datasets.CIFAR100
    if download:
        base(data_dir, train=True, download=True)
        base(data_dir, train=False, download=True)

    def present(root, cls=base):
        files = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
        return all(os.path.isfile(os.path.join(root, cls.base_folder, f)) for f in files)

    class Present(base):
        # torchvision verifies MD5 sums of every batch file at construction; we only require the
        # files to be present (a corrupted pickle still fails loudly when loaded), which also lets
        # tests use small fabricated files in the same layout.
        def _check_integrity(self):
            return present(self.root)

        def _load_meta(self):  # the same, minus the MD5 check
            with open(os.path.join(self.root, self.base_folder, self.meta["filename"]), "rb") as f:
                meta = pickle.load(f, encoding="latin1")
            self.classes = meta[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    if not present(data_dir):
        raise DataError(f"{name} not found in {data_dir} (expected torchvision's {base.base_folder}/). "
                        f"Run once with --download, or place the python version of the data set there.")
    return Present(data_dir, train=True, transform=train_tf), Present(data_dir, train=False, transform=test_tf)


def imagenet(data_dir, image_size=224):
    tv = _torchvision()
    T = tv.transforms
    mean, std = IMAGENET_STATS
    resize = max(image_size, int(round(image_size * 256 / 224)))
    train_tf = T.Compose([T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), T.ToTensor(),
                          T.Normalize(mean, std)])
    test_tf = T.Compose([T.Resize(resize), T.CenterCrop(image_size), T.ToTensor(), T.Normalize(mean, std)])
    dirs = [os.path.join(data_dir, s) for s in ("train", "val")]
    if not all(os.path.isdir(d) for d in dirs):
        raise DataError(f"ImageNet not found in {data_dir}: expected {dirs[0]}/<class>/*.JPEG and "
                        f"{dirs[1]}/<class>/*.JPEG (ImageFolder layout; ImageNet cannot be downloaded "
                        "automatically, get it from https://image-net.org)")
    return tv.datasets.ImageFolder(dirs[0], train_tf), tv.datasets.ImageFolder(dirs[1], test_tf)


# ----------------------------------------------------------------------------- DVS frames

class FrameDataset(torch.utils.data.Dataset):
    """Pre-integrated event frames [N, T, 2, H, W]; items are float [T, 2, H, W]."""

    def __init__(self, frames, labels, crop_pad=0, mean=0.0, std=1.0):
        self.frames = torch.as_tensor(frames)
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.crop_pad, self.mean, self.std = crop_pad, mean, std

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        x = self.frames[i].float()
        if self.crop_pad:
            # The same random crop for every frame of a sample (one spatial shift per sequence).
            p = self.crop_pad
            h, w = x.shape[-2:]
            x = torch.nn.functional.pad(x, (p, p, p, p))
            dy, dx = torch.randint(2 * p + 1, ()).item(), torch.randint(2 * p + 1, ()).item()
            x = x[..., dy:dy + h, dx:dx + w]
        if self.mean != 0.0 or self.std != 1.0:
            x = (x - self.mean) / self.std
        return x, self.labels[i]


def _load_npz(path, T, name):
    if not os.path.isfile(path):
        raise DataError(f"{name}: {path} not found. Expected pre-integrated frames: numpy.savez(path, "
                        f"frames=uint8/float32 [N, T, 2, H, W], labels=int [N]) for train.npz and test.npz "
                        f"(see ottt_cuda/train/data.py; e.g. integrate events into frames with SpikingJelly)")
    with np.load(path) as z:
        if "frames" not in z or "labels" not in z:
            raise DataError(f"{path} must hold arrays 'frames' and 'labels', found {sorted(z.files)}")
        frames, labels = z["frames"], z["labels"]
    if frames.ndim != 5 or frames.shape[2] != 2 or labels.ndim != 1 or len(labels) != len(frames):
        raise DataError(f"{path}: frames must be [N, T, 2, H, W] and labels [N], got {frames.shape} and "
                        f"{labels.shape}")
    if T is not None and frames.shape[1] != T:
        raise DataError(f"{path} holds {frames.shape[1]} frames per sample but T = {T}; integrate the events "
                        "into T frames or pass --T to match")
    return frames, labels.astype(np.int64)


def _global_mean_std(frames, chunk=256):
    """One mean/std over all frames, in float64 chunks (a float copy of CIFAR10-DVS is 1.6 GB)."""
    total = sq = 0.0
    for i in range(0, len(frames), chunk):
        part = np.asarray(frames[i:i + chunk], dtype=np.float64)
        total += part.sum()
        sq += np.square(part).sum()
    n = max(1, frames.size)
    mean = total / n
    std = float(np.sqrt(max(sq / n - mean * mean, 0.0)))
    return float(mean), (std or 1.0)


def dvs(name, data_dir, T):
    train_f, train_y = _load_npz(os.path.join(data_dir, "train.npz"), T, name)
    test_f, test_y = _load_npz(os.path.join(data_dir, "test.npz"), T, name)
    if name == "cifar10dvs":
        # C.2: random crop as CIFAR-10, inputs normalized by the global mean/std over all time steps
        # (one scalar pair from the training frames).
        mean, std = _global_mean_std(train_f)
        return FrameDataset(train_f, train_y, 4, mean, std), FrameDataset(test_f, test_y, 0, mean, std)
    return FrameDataset(train_f, train_y), FrameDataset(test_f, test_y)


# ----------------------------------------------------------------------------- dispatch

SEQUENCE_DATASETS = ("cifar10dvs", "dvsgesture")


def build(dataset, data_dir=None, *, download=False, T=None, image_size=224, num_classes=10):
    """(train set, test set) for a recipe name; items are (x, y) with x [C, H, W] (static input,
    the same at every time step) or [T, C, H, W] for DVS frames."""
    if download and dataset not in ("cifar10", "cifar100"):
        raise DataError(f"--download is only supported for cifar10 / cifar100, not {dataset}")
    if dataset == "synthetic":
        return synthetic(num_classes)
    data_dir = data_dir or default_data_dir(dataset)
    if dataset == "fmnist":
        return fashion_mnist(data_dir)
    if dataset in ("cifar10", "cifar100"):
        return cifar(dataset, data_dir, download)
    if dataset == "imagenet":
        return imagenet(data_dir, image_size)
    if dataset in SEQUENCE_DATASETS:
        return dvs(dataset, data_dir, T)
    raise ValueError(f"unknown data set {dataset!r}")
