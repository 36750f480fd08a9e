"""Argument checks shared by every backend; each error names the argument."""
import math

import torch

from .reference import SURROGATES

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def tensor(t, name):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {t.dtype}")
    return t


def like(t, name, ref, ref_name, shape=None):
    """t must be a tensor with ref's dtype and device and the given shape (ref's by default)."""
    tensor(t, name)
    shape = ref.shape if shape is None else shape
    if t.shape != shape:
        raise ValueError(f"{name} must have shape {tuple(shape)} (that of {ref_name}), got {tuple(t.shape)}")
    if t.device != ref.device:
        raise ValueError(f"{name} must be on {ref_name}'s device {ref.device}, got {t.device}")
    if t.dtype != ref.dtype:
        raise TypeError(f"{name} must have {ref_name}'s dtype {ref.dtype}, got {t.dtype}")
    return t


def number(value, name, *, low=None, high=None, low_open=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")
    return value


def neuron(tau, v_th, v_reset, decay_input, surrogate, alpha):
    """Checks the neuron's scalar arguments; returns them normalized."""
    tau = number(tau, "tau", low=0.0, low_open=True)
    v_th = number(v_th, "v_th")
    if v_reset is not None:
        v_reset = number(v_reset, "v_reset")
    if not isinstance(decay_input, bool):
        raise TypeError(f"decay_input must be a bool, got {type(decay_input).__name__}")
    if surrogate not in SURROGATES:
        raise ValueError(f"surrogate must be one of {SURROGATES}, got {surrogate!r}")
    alpha = number(alpha, "alpha", low=0.0, low_open=True)
    return tau, v_th, v_reset, decay_input, surrogate, alpha


def decay(value, name):
    # A trace leak outside [0, 1] is no trace of past spikes: it would grow or
    # alternate in sign, so it is refused rather than silently computed.
    return number(value, name, low=0.0, high=1.0)


def mask_for(mask, x):
    """A dropout mask broadcastable to x, returned with x's shape and dtype."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
    if mask.device != x.device:
        raise ValueError(f"mask must be on x's device {x.device}, got {mask.device}")
    try:
        return mask.to(x.dtype).expand_as(x)
    except RuntimeError:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to x's shape {tuple(x.shape)}") from None


def positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def positive_ints(**named):
    """positive_int for each keyword: a model builder's sizes, named as the caller spelled them."""
    for name, value in named.items():
        positive_int(value, name)


def boolean(value, name):
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def module(model, name="model"):
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(model).__name__}")
    return model


def int_pair(value, name, low=1):
    """An int or a pair of ints, each >= low; returned as a pair."""
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    try:
        pair = tuple(pair)
    except TypeError:
        raise TypeError(f"{name} must be an int or a pair of ints, got {type(value).__name__}") from None
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) for v in pair):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if any(v < low for v in pair):
        raise ValueError(f"{name} must be >= {low}, got {value!r}")
    return pair
