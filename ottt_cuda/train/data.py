"""Data sets and loaders for every recipe.

On-disk formats:
- fmnist: the four IDX files of Fashion-MNIST (train-images-idx3-ubyte, train-labels-idx1-ubyte,
  t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte), gzip-compressed (.gz) or not, in --data-dir
  (default: /usr/share/datasets/fashion-mnist, where Debian's dataset-fashion-mnist installs them).
- cifar10 / cifar100: torchvision's layout (cifar-10-batches-py/ or cifar-100-python/ in --data-dir).
- imagenet: ImageFolder layout, --data-dir/train/<class>/*.JPEG and --data-dir/val/<class>/*.JPEG.
- cifar10dvs / dvsgesture, either of two layouts in --data-dir:
  1. SpikingJelly's dataset folder (the `root` given to spikingjelly.datasets.CIFAR10DVS /
     DVS128Gesture), with the events already integrated by SpikingJelly into T frames split by
     event number (data_type='frame', frames_number=T, split_by='number'); read directly:
         ROOT/frames_number_T_split_by_number/<class>/<sample>.npz            (CIFAR10DVS)
         ROOT/frames_number_T_split_by_number/{train,test}/<class>/<sample>.npz
                                       (DVS128Gesture, and CIFAR10DVSTEBNSplit's split)
     each .npz holding frames [T, 2, H, W] (event counts, ON/OFF polarity). CIFAR10-DVS has no
     official split: without train/ and test/ the first 10% of each class by sample number
     (cifar10_<class>_0 .. _99) is the test set, the rest trains (9000 / 1000, as the paper and
     TEBN's split). Class folders are sorted by name (numerically when all are numbers: DVS128-
     Gesture's 0..10). CIFAR10-DVS frames are resized 128x128 -> 48x48 (bilinear, antialiased:
     "reduce the spatial resolution into 48x48 by interpolation", supplementary C.2).
     --data-dir may also point at the frames_number_T_split_by_number folder itself.
  2. pre-integrated frames, one file per split, --data-dir/train.npz and --data-dir/test.npz,
     each holding
      frames  [N, T, 2, H, W]  uint8 (event counts) or float32, ON/OFF polarity channels
      labels  [N]              integer class indices
     (write them with numpy.savez; the paper integrates CIFAR10-DVS into T = 10 frames at 48x48
     and DVS128-Gesture into T = 20 frames; T of the file must equal --T).
  --image-size S resizes the frames to SxS in either layout.
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

    def __getitems__(self, indices):
        # The DataLoader fetches a whole batch through this when it exists: one vectorized
        # conversion instead of one per sample (Fashion-MNIST: 2.8 s -> 0.9 s of loading per
        # epoch at 1 thread). Same values as __getitem__, element by element.
        idx = torch.as_tensor(indices, dtype=torch.long)
        x = self.images[idx].float().div_(255.0).sub_(self.mean).div_(self.std)
        return list(zip(x.unbind(0), self.labels[idx].unbind(0)))


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

def _frame_item(x, size, crop_pad, mean, std):
    """float frames [T, 2, H, W] -> resized, randomly cropped (one shift per sequence), normalized."""
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                                            antialias=True)
    if crop_pad:
        # The same random crop for every frame of a sample (one spatial shift per sequence).
        p = crop_pad
        h, w = x.shape[-2:]
        x = torch.nn.functional.pad(x, (p, p, p, p))
        dy, dx = torch.randint(2 * p + 1, ()).item(), torch.randint(2 * p + 1, ()).item()
        x = x[..., dy:dy + h, dx:dx + w]
    if mean != 0.0 or std != 1.0:
        x = (x - mean) / std
    return x


class FrameDataset(torch.utils.data.Dataset):
    """Pre-integrated event frames [N, T, 2, H, W] in memory; items are float [T, 2, H', W']."""

    def __init__(self, frames, labels, crop_pad=0, mean=0.0, std=1.0, size=None):
        self.frames = torch.as_tensor(frames)
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.crop_pad, self.mean, self.std, self.size = crop_pad, mean, std, size

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return _frame_item(self.frames[i].float(), self.size, self.crop_pad, self.mean, self.std), self.labels[i]


class FrameFolderDataset(torch.utils.data.Dataset):
    """SpikingJelly's integrated frames, one .npz per sample, read when an item is asked for (as
    SpikingJelly's own DatasetFolder does: CIFAR10-DVS at 128x128 is 6 GB in float32)."""

    def __init__(self, files, labels, T, crop_pad=0, mean=0.0, std=1.0, size=None):
        self.files, self.labels, self.T = list(files), torch.as_tensor(labels, dtype=torch.long), T
        self.crop_pad, self.mean, self.std, self.size = crop_pad, mean, std, size

    def __len__(self):
        return len(self.files)

    def raw(self, i):
        """Sample i's frames as float32 [T, 2, H, W], resized, neither cropped nor normalized."""
        path = self.files[i]
        try:
            with np.load(path) as z:
                if "frames" not in z:
                    raise DataError(f"{path} holds no 'frames' array (found {sorted(z.files)}): not a SpikingJelly "
                                    "frames file")
                frames = z["frames"]
        except DataError:
            raise
        except Exception as e:
            raise DataError(f"{path} is not a readable .npz file ({type(e).__name__}: {e})") from None
        if frames.ndim != 4 or frames.shape[1] != 2 or (self.T is not None and frames.shape[0] != self.T):
            raise DataError(f"{path}: frames must be [T={self.T}, 2, H, W], got {frames.shape}")
        return _frame_item(torch.from_numpy(np.asarray(frames, dtype=np.float32)), self.size, 0, 0.0, 1.0)

    def __getitem__(self, i):
        return _frame_item(self.raw(i), None, self.crop_pad, self.mean, self.std), self.labels[i]


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


def _dvs_npz(name, data_dir, T, size):
    train_f, train_y = _load_npz(os.path.join(data_dir, "train.npz"), T, name)
    test_f, test_y = _load_npz(os.path.join(data_dir, "test.npz"), T, name)
    if name == "cifar10dvs":
        # C.2: random crop as CIFAR-10, inputs normalized by the global mean/std over all time steps
        # (one scalar pair from the training frames).
        mean, std = (_global_mean_std(train_f) if size is None
                     else _dataset_mean_std(FrameDataset(train_f, train_y, size=size)))
        return (FrameDataset(train_f, train_y, 4, mean, std, size), FrameDataset(test_f, test_y, 0, mean, std, size))
    return FrameDataset(train_f, train_y, size=size), FrameDataset(test_f, test_y, size=size)


# ----------------------------------------------------------------------------- SpikingJelly folders

SJ_DEFAULT_SIZE = {"cifar10dvs": 48, "dvsgesture": None}  # None: SpikingJelly's 128x128 as stored
CIFAR10DVS_TEST_PER_CLASS = 0.1  # 100 of each class's 1000 samples (9000 train / 1000 test)


def sj_frames_dir(T):
    """The folder SpikingJelly writes for frames_number=T, split_by='number'."""
    return f"frames_number_{T}_split_by_number"


def _find_sj_root(data_dir, T):
    if os.path.basename(os.path.normpath(data_dir)) == sj_frames_dir(T):
        return data_dir
    p = os.path.join(data_dir, sj_frames_dir(T))
    return p if os.path.isdir(p) else None


def _sample_number(path):
    # SpikingJelly names samples <prefix>_<n>.npz (cifar10_airplane_7.npz, user01_fluorescent_0.npz).
    stem = os.path.splitext(os.path.basename(path))[0]
    tail = stem.rsplit("_", 1)[-1]
    return (int(tail), stem) if tail.isdigit() else (float("inf"), stem)


def _class_folders(root):
    names = [n for n in os.listdir(root) if os.path.isdir(os.path.join(root, n))]
    if names and all(n.isdigit() for n in names):
        return sorted(names, key=int), {n: int(n) for n in names}
    names = sorted(names)
    return names, {n: i for i, n in enumerate(names)}


def _npz_files(folder):
    return sorted((os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".npz")), key=_sample_number)


def _sj_split(root, name):
    """([(file, label)] train, [(file, label)] test) from a SpikingJelly frames folder."""
    split_dirs = [os.path.join(root, s) for s in ("train", "test")]
    if all(os.path.isdir(d) for d in split_dirs):
        names, label = _class_folders(split_dirs[0])
        out = []
        for d in split_dirs:
            test_names, _ = _class_folders(d)
            if set(test_names) - set(names):
                raise DataError(f"{d} has class folders {sorted(set(test_names) - set(names))} that "
                                f"{split_dirs[0]} lacks")
            out.append([(f, label[n]) for n in names if os.path.isdir(os.path.join(d, n))
                        for f in _npz_files(os.path.join(d, n))])
        return out[0], out[1]
    if name != "cifar10dvs":
        raise DataError(f"{root} must hold train/ and test/ folders (SpikingJelly's DVS128Gesture layout: "
                        f"{sj_frames_dir('T')}/train/<label>/*.npz)")
    names, label = _class_folders(root)
    train, test = [], []
    for n in names:
        files = _npz_files(os.path.join(root, n))
        # At least one test sample per class when there are two (small subsets stay testable).
        k = max(1, int(round(len(files) * CIFAR10DVS_TEST_PER_CLASS))) if len(files) > 1 else 0
        test += [(f, label[n]) for f in files[:k]]
        train += [(f, label[n]) for f in files[k:]]
    return train, test


def _dataset_mean_std(ds):
    """Global mean/std over every element of every (resized, uncropped) training sample, in float64."""
    total = sq = 0.0
    n = 0
    for i in range(len(ds)):
        x = (ds.raw(i) if hasattr(ds, "raw") else _frame_item(ds.frames[i].float(), ds.size, 0, 0.0, 1.0)).double()
        total += float(x.sum())
        sq += float(x.square().sum())
        n += x.numel()
    mean = total / max(n, 1)
    std = max(sq / max(n, 1) - mean * mean, 0.0) ** 0.5
    return mean, (std or 1.0)


def _dvs_spikingjelly(name, root, T, size, num_classes):
    train, test = _sj_split(root, name)
    if not train or not test:
        raise DataError(f"{root}: no .npz samples found for the {'train' if not train else 'test'} split "
                        f"(expected <class>/<sample>.npz files written by SpikingJelly)")
    labels = {y for _, y in train + test}
    if num_classes is not None and max(labels) >= num_classes:
        raise DataError(f"{root} has class labels up to {max(labels)} but {name} has {num_classes} classes")
    size = size if size is not None else SJ_DEFAULT_SIZE[name]

    def make(items, crop, mean=0.0, std=1.0):
        return FrameFolderDataset([f for f, _ in items], [y for _, y in items], T, crop, mean, std, size)

    if name == "cifar10dvs":
        mean, std = _dataset_mean_std(make(train, 0))
        return make(train, 4, mean, std), make(test, 0, mean, std)
    return make(train, 0), make(test, 0)


def dvs(name, data_dir, T, size=None, num_classes=None):
    """CIFAR10-DVS / DVS128-Gesture from train.npz/test.npz or from SpikingJelly's folders (module doc)."""
    if os.path.isfile(os.path.join(data_dir, "train.npz")):
        return _dvs_npz(name, data_dir, T, size)
    root = _find_sj_root(data_dir, T) if T is not None else None
    if root is not None:
        return _dvs_spikingjelly(name, root, T, size, num_classes)
    other = sorted(n for n in os.listdir(data_dir) if n.startswith("frames_number_")) \
        if os.path.isdir(data_dir) else []
    found = f" Found {', '.join(other)}: pass the matching --T (frames_number = T, split_by='number')." \
        if other else ""
    raise DataError(f"{name}: no data in {data_dir}. Expected either SpikingJelly's folder "
                    f"{os.path.join(data_dir, sj_frames_dir(T))}/ (made by spikingjelly.datasets with "
                    f"data_type='frame', frames_number={T}, split_by='number') or pre-integrated frames "
                    f"{os.path.join(data_dir, 'train.npz')} and test.npz: numpy.savez(path, frames=uint8/float32 "
                    f"[N, T, 2, H, W], labels=int [N]) (see ottt_cuda/train/data.py).{found}")


# ----------------------------------------------------------------------------- dispatch

SEQUENCE_DATASETS = ("cifar10dvs", "dvsgesture")


def build(dataset, data_dir=None, *, download=False, T=None, image_size=None, num_classes=10):
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
        return imagenet(data_dir, image_size or 224)
    if dataset in SEQUENCE_DATASETS:
        return dvs(dataset, data_dir, T, image_size, num_classes)
    raise ValueError(f"unknown data set {dataset!r}")
