"""Checkpoints: everything a resumed run needs to continue exactly as an uninterrupted one.

A checkpoint holds the model, optimizer, LR scheduler, grad scaler, the epoch just finished,
the best test accuracy and accumulated training time, the run's configuration (checked on
resume), and the RNG states of every rank: torch (CPU and CUDA), numpy, python `random` and
the DataLoader's generator (which orders the shuffled batches and seeds the loader workers).

States are stored as tensors and plain containers only, so torch.load(weights_only=True)
reads them (no pickled code runs when a checkpoint is loaded).
"""
import os
import random

import numpy as np
import torch

from .recipes import ConfigError

# Configuration keys a resumed run must share with the checkpoint: any change makes the
# continuation a different run (and silently so, without this check).
MUST_MATCH = ("dataset", "model", "mode", "T", "batch", "epochs", "lr", "wd", "optimizer", "schedule", "momentum",
              "dropout", "loss_alpha", "seed", "k", "chunk", "amp", "world_size", "limit_batches", "image_size",
              "feedback_dropout")
# Options added after checkpoints were first written: a checkpoint without the key was written with this value.
ADDED_LATER = {"feedback_dropout": False}


def rng_state(loader_generator):
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])),
        "python": random.getstate(),
        "loader": loader_generator.get_state(),
    }


def set_rng_state(state, loader_generator):
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(_tuples(state["python"]))
    loader_generator.set_state(state["loader"])


def _tuples(x):
    # random.setstate wants tuples; a round trip through some loaders may give lists.
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def save(path, state):
    """Write atomically (a crash mid-write leaves the previous checkpoint intact)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


class CheckpointError(ConfigError):
    """The file given to --resume is not a usable checkpoint (reported in one line, exit status 2)."""


REQUIRED = ("config", "epoch", "model", "optimizer", "scheduler", "rng", "best_test_acc", "train_time_s", "test_acc")


def load(path):
    """The checkpoint at `path`, or a CheckpointError that names the file and what is wrong with it."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"--resume: no checkpoint at {path}")
    if not os.path.isfile(path):
        raise CheckpointError(f"--resume: {path} is a directory, not a checkpoint file (e.g. OUT_DIR/checkpoint.pt)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError, ... depending on the damage
        # Only the first line: torch's weights_only message runs over a dozen lines of advice
        # that does not apply (our checkpoints never need weights_only=False).
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"--resume: {path} is not a readable ottt-train checkpoint (truncated, or written by "
                              f"another program): {type(e).__name__}: {first}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"--resume: {path} holds a {type(state).__name__}, not an ottt-train checkpoint "
                              "(a dict written by ottt-train at the end of each epoch)")
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        hint = " (it looks like a bare model state_dict)" if "config" in missing and "model" in missing else ""
        raise CheckpointError(f"--resume: {path} is not an ottt-train checkpoint{hint}: keys {missing} are "
                              "missing")
    return state


def check_config(saved, current):
    saved = {**ADDED_LATER, **saved}
    diff = {k: (saved.get(k), current.get(k)) for k in MUST_MATCH if saved.get(k) != current.get(k)}
    if diff:
        lines = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in diff.items())
        raise ConfigError(f"--resume: the checkpoint was written by a different configuration ({lines}); "
                         "resume with the same options as the original run")
