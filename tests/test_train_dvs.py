"""CIFAR10-DVS and DVS128-Gesture read straight from SpikingJelly's dataset folders. The tests write a tiny event set in SpikingJelly's on-disk layout themselves
(ROOT/frames_number_T_split_by_number/..., one .npz with a 'frames' array per sample, as
spikingjelly.datasets' FrameFixedNumberBuilder writes it); nothing is downloaded."""
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ottt_cuda.train import data, main

CIFAR10DVS_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def integrate(events, T, H, W):
    """Events split into T slices of equal event count, counted per (polarity, y, x): SpikingJelly's
    split_by='number' integration, written independently here (np.add.at, not its bincount)."""
    n = len(events["t"])
    frames = np.zeros((T, 2, H, W))
    for j in range(T):
        lo, hi = (n // T) * j, (n // T) * (j + 1) if j < T - 1 else n
        np.add.at(frames[j], (events["p"][lo:hi], events["y"][lo:hi], events["x"][lo:hi]), 1)
    return frames


def random_events(rng, n, H, W, hot):
    """n events, mostly around pixel `hot` (so classes differ), sorted by time."""
    x = np.clip(rng.normal(hot[1], 3, n), 0, W - 1).astype(np.int64)
    y = np.clip(rng.normal(hot[0], 3, n), 0, H - 1).astype(np.int64)
    return {"t": np.sort(rng.integers(0, 10 ** 6, n)), "x": x, "y": y, "p": rng.integers(0, 2, n)}


def write_sample(path, frames):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez_compressed(path, frames=frames)  # SpikingJelly's np_savez (compressed by default)


def cifar10dvs_tree(root, T, per_class=10, H=128, W=128, seed=0):
    """ROOT/frames_number_T_split_by_number/<class>/cifar10_<class>_<i>.npz (no split folders)."""
    rng = np.random.default_rng(seed)
    base = os.path.join(root, f"frames_number_{T}_split_by_number")
    for c, name in enumerate(CIFAR10DVS_CLASSES):
        for i in range(per_class):
            ev = random_events(rng, 300, H, W, (8 + 10 * c, 20 + 5 * c))
            write_sample(os.path.join(base, name, f"cifar10_{name}_{i}.npz"), integrate(ev, T, H, W))
    os.makedirs(os.path.join(root, "events_np"), exist_ok=True)  # SpikingJelly's raw folder (checked by it)
    return base


def gesture_tree(root, T, per_class=(3, 1), classes=11, H=128, W=128, seed=1):
    """ROOT/frames_number_T_split_by_number/{train,test}/<label>/userNN_<light>_<k>.npz."""
    rng = np.random.default_rng(seed)
    base = os.path.join(root, f"frames_number_{T}_split_by_number")
    for split, n in zip(("train", "test"), per_class):
        for label in range(classes):
            for k in range(n):
                ev = random_events(rng, 200, H, W, (10 * label + 5, 60))
                write_sample(os.path.join(base, split, str(label), f"user{k + 1:02d}_led_{k}.npz"),
                             integrate(ev, T, H, W))
    os.makedirs(os.path.join(root, "events_np"), exist_ok=True)
    return base


def load(path):
    with np.load(path) as z:
        return torch.from_numpy(z["frames"].astype(np.float32))


def resize48(frames):
    # The paper: "reduce the spatial resolution into 48x48 by interpolation" (bilinear, antialiased).
    return F.interpolate(frames, size=(48, 48), mode="bilinear", align_corners=False, antialias=True)


def test_cifar10dvs_from_spikingjelly_folder_split_resize_normalize(tmp_path):
    base = cifar10dvs_tree(tmp_path, T=3)
    train, test = data.build("cifar10dvs", str(tmp_path), T=3, num_classes=10)
    # 10% of each class by sample number tests (samples 0 of 10 here), the rest trains.
    assert len(train) == 90 and len(test) == 10
    assert sorted(os.path.basename(f) for f in test.files) == sorted(f"cifar10_{c}_0.npz" for c in CIFAR10DVS_CLASSES)
    assert test.labels.tolist() == list(range(10))  # airplane=0 ... truck=9, CIFAR-10's order

    # Normalized by one global mean/std over every resized training frame (supplementary C.2).
    raw_train = torch.stack([resize48(load(os.path.join(base, c, f"cifar10_{c}_{i}.npz")))
                             for c in CIFAR10DVS_CLASSES for i in range(1, 10)]).double()
    mean, std = raw_train.mean().item(), raw_train.std(unbiased=False).item()
    x, y = test[3]
    assert x.shape == (3, 2, 48, 48) and x.dtype == torch.float32 and int(y) == 3
    expect = (resize48(load(os.path.join(base, "cat", "cifar10_cat_0.npz"))).double() - mean) / std
    torch.testing.assert_close(x.double(), expect, rtol=1e-5, atol=1e-5)
    assert train[0][0].shape == (3, 2, 48, 48)  # random crop (pad 4) keeps the size


def test_tebn_split_folders_are_used_when_present(tmp_path):
    base = cifar10dvs_tree(tmp_path, T=2, per_class=3)
    # CIFAR10DVSTEBNSplit adds train/ and test/ with per-class links: they define the split then.
    for split, idx in (("test", [0]), ("train", [1, 2])):
        for c in CIFAR10DVS_CLASSES:
            os.makedirs(os.path.join(base, split, c))
            for i in idx:
                os.symlink(os.path.join(base, c, f"cifar10_{c}_{i}.npz"),
                           os.path.join(base, split, c, f"cifar10_{c}_{i}.npz"))
    train, test = data.build("cifar10dvs", str(tmp_path), T=2, image_size=16, num_classes=10)
    assert len(train) == 20 and len(test) == 10 and test[0][0].shape == (2, 2, 16, 16)
    assert all(os.sep + "test" + os.sep in f for f in test.files)


def test_dvs128_gesture_from_spikingjelly_folder(tmp_path):
    base = gesture_tree(tmp_path, T=4)
    train, test = data.build("dvsgesture", str(tmp_path), T=4, num_classes=11)
    assert len(train) == 33 and len(test) == 11
    # Label = the folder's number (0..10), numerically ordered; frames as stored (128x128, no normalization).
    assert sorted(test.labels.tolist()) == list(range(11))
    i = test.labels.tolist().index(10)
    x, y = test[i]
    assert int(y) == 10 and x.shape == (4, 2, 128, 128)
    torch.testing.assert_close(x, load(os.path.join(base, "test", "10", "user01_led_0.npz")), rtol=0, atol=0)


def test_data_dir_may_be_the_frames_folder_itself(tmp_path):
    base = gesture_tree(tmp_path, T=2, per_class=(1, 1), classes=2, H=16, W=16)
    train, test = data.build("dvsgesture", base, T=2, num_classes=11)
    assert len(train) == 2 and test[0][0].shape == (2, 2, 16, 16)


def test_labels_agree_with_spikingjellys_own_reader(tmp_path):
    """SpikingJelly's dataset classes, pointed at the same tree, read the same frames; the class of a
    CIFAR10-DVS sample is the same index in both."""
    datasets = pytest.importorskip("spikingjelly.datasets")
    cifar10dvs_tree(tmp_path / "c", T=2, per_class=2, H=128, W=128)
    sj = datasets.CIFAR10DVS(str(tmp_path / "c"), data_type="frame", frames_number=2, split_by="number")
    train, test = data.build("cifar10dvs", str(tmp_path / "c"), T=2, image_size=128, num_classes=10)
    ours = {os.path.basename(f): (int(y), f) for ds in (train, test) for f, y in zip(ds.files, ds.labels)}
    assert len(ours) == len(sj) == 20
    for path, label in sj.samples:
        y, f = ours[os.path.basename(path)]
        assert y == label
    frames, label = sj[5]
    name = os.path.basename(sj.samples[5][0])
    ds = train if ours[name][1] in train.files else test
    torch.testing.assert_close(ds.raw(ds.files.index(ours[name][1])), torch.from_numpy(frames), rtol=0, atol=0)

    gesture_tree(tmp_path / "g", T=2, per_class=(1, 1), classes=3, H=128, W=128)
    sj_test = datasets.DVS128Gesture(str(tmp_path / "g"), train=False, data_type="frame", frames_number=2,
                                     split_by="number")
    _, g_test = data.build("dvsgesture", str(tmp_path / "g"), T=2, num_classes=11)
    for (path, _), (f, y) in zip(sorted(sj_test.samples), sorted(zip(g_test.files, g_test.labels.tolist()))):
        assert os.path.basename(path) == os.path.basename(f) and int(os.path.basename(os.path.dirname(path))) == y


def test_cli_trains_on_a_spikingjelly_folder(tmp_path, capsys):
    gesture_tree(tmp_path / "sj", T=2, per_class=(2, 1), classes=11, H=32, W=32)
    rc = main(["dvsgesture", "--data-dir", str(tmp_path / "sj"), "--T", "2", "--epochs", "1", "--batch", "4",
               "--out-dir", str(tmp_path / "o"), "--threads", "1", "--no-progress", "--workers", "0"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    res = json.loads(out.splitlines()[-1])
    assert res["dataset"] == "dvsgesture" and res["complete"] and 0.0 <= res["test_acc"] <= 1.0


def test_missing_or_mismatched_folders_are_clear_errors(tmp_path, capsys):
    cifar10dvs_tree(tmp_path, T=3, per_class=2, H=8, W=8)
    # T must equal SpikingJelly's frames_number: the error lists what is there.
    with pytest.raises(data.DataError, match=r"frames_number_10_split_by_number.*Found frames_number_3_split_by_"
                                             r"number: pass the matching --T"):
        data.build("cifar10dvs", str(tmp_path), T=10, num_classes=10)
    rc = main(["cifar10dvs", "--data-dir", str(tmp_path), "--T", "5", "--out-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "frames_number_5_split_by_number" in err and "train.npz" in err

    # DVS128-Gesture needs the train/ and test/ folders SpikingJelly makes.
    bad = tmp_path / "g" / "frames_number_2_split_by_number" / "0"
    bad.mkdir(parents=True)
    with pytest.raises(data.DataError, match="train/ and test/"):
        data.build("dvsgesture", str(tmp_path / "g"), T=2)

    # A sample whose frame count is not T, and a file that is not an npz, name the file.
    gesture_tree(tmp_path / "h", T=2, per_class=(1, 1), classes=1, H=8, W=8)
    f = tmp_path / "h" / "frames_number_2_split_by_number" / "test" / "0" / "user01_led_0.npz"
    write_sample(str(f), np.zeros((3, 2, 8, 8)))
    _, test = data.build("dvsgesture", str(tmp_path / "h"), T=2)
    with pytest.raises(data.DataError, match=r"user01_led_0.npz: frames must be \[T=2, 2, H, W\]"):
        test[0]
    f.write_bytes(b"not a zip")
    with pytest.raises(data.DataError, match="user01_led_0.npz is not a readable .npz"):
        test[0]


def test_npz_format_still_works_and_takes_image_size(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        np.savez(tmp_path / f"{split}.npz", frames=rng.integers(0, 4, (4, 2, 2, 16, 16)).astype(np.uint8),
                 labels=np.arange(4))
    train, test = data.build("dvsgesture", str(tmp_path), T=2)
    assert test[0][0].shape == (2, 2, 16, 16)
    train, test = data.build("dvsgesture", str(tmp_path), T=2, image_size=8)
    with np.load(tmp_path / "test.npz") as z:
        expect = F.interpolate(torch.from_numpy(z["frames"][1]).float(), size=(8, 8), mode="bilinear",
                               align_corners=False, antialias=True)
    torch.testing.assert_close(test[1][0], expect)
