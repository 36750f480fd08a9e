"""The main job's measurements: for each T, every method's measuring pass, then the
timing rounds of all of them side by side, in this one process.

Measuring pass, one method at a time, inside a LiveBytes session (memory.py) that
starts before the method's model is built:
1. the model (our initial weights for every method) and its optimizer; for a method
   that must reproduce another exactly (sj_bptt_memopt: plain sj_bptt), its gradients
   are checked against the other's first, and a mismatch fails it before anything is
   timed (methods.check_gradients);
2. one plain warm-up step: it creates the gradients and the optimizer's state, as the
   first step of any training run does; the loss must be finite;
3. one step inside LiveBytes.measure(): its peak of live tensor bytes, less the bytes
   of the parameters and of the optimizer's state (the same for every method on one
   architecture): peak_mb, the memory of a step in a training run's steady state;
then, after the session, one step under the saved-bytes counter: saved_mb (the
deterministic figure). It comes after the measured step because a step with the
counter's hooks on is no step of a plain training run: global module hooks keep
train_step off its autograd-free chain, and on R400 such a step leaves no
gradients, so the gradients and the optimizer's state must come from a plain step.

Timing pass: every method that got through its measuring pass, side by side:
`rounds` rounds, each timing one training step of every method in turn
(timing.interleaved_rounds); iter_s is the median over the rounds. No profiler and
no hooks are on, and the allocator is left as PyTorch and the C library set it up:
the times are those of a plain training loop.
"""
import gc
import math
import time

import torch

from . import memory, methods
from .timing import interleaved_rounds, sync


def _sync_fn(device):
    return (lambda: sync(device)) if device.type == "cuda" else None


def _failed(base, error):
    return dict(base, iter_s=None, peak_mb=None, saved_mb=None, error=error)


def _finite(method, T, loss):
    value = float(loss)
    if not math.isfinite(value):
        raise FloatingPointError(f"{method} T={T}: loss is {value}")
    return value


def measure(method, model_name, T, x, y, device, seed=0):
    """One method's measuring pass (the module doc): (record without times, step, optimizer)."""
    t0 = time.perf_counter()
    with memory.LiveBytes(device) as live:
        model, step = methods.build(method, model_name, device, seed=seed, example=(x, T))
        model.train()
        check = methods.check_gradients(method, model, step, model_name, device, x, y, T, seed=seed)
        opt = methods.make_optimizer(model)
        loss = _finite(method, T, step(x, y, opt, T))
        fixed = memory.tensor_bytes(list(model.parameters()) + memory.optimizer_tensors(opt))
        with live.measure():
            loss_measured = _finite(method, T, step(x, y, opt, T))
    with memory.SavedBytes(model) as sb:
        _finite(method, T, step(x, y, opt, T))
    rec = {
        "peak_mb": (live.peak_total - fixed) / memory.MB, "saved_mb": sb.peak / memory.MB,
        # the parts of the two figures, for whoever wants to look closer
        "params_and_optimizer_mb": fixed / memory.MB, "peak_total_mb": live.peak_total / memory.MB,
        "alive_before_step_mb": live.before / memory.MB, "growth_in_step_mb": live.peak / memory.MB,
        "saved_tensors_mb": sb.peak_saved / memory.MB, "state_mb": sb.peak_state / memory.MB,
        "peak_source": "allocator events (torch.profiler, profile_memory=True): most tensor bytes alive "
                       "during the step, less those of the parameters and the optimizer's state",
        "loss": loss, "loss_measured_step": loss_measured, "check": check,
        "measure_s": time.perf_counter() - t0,
    }
    if live.cuda_check is not None:
        rec["cuda_max_allocated_growth_mb"] = live.cuda_check / memory.MB
    return rec, step, opt


def run_T(model_name, T, method_names, batch, device, rounds, seed=0, on_record=None):
    """The records of every method at one T (the module doc). A method that fails gets a record
    with "error" and the others go on. on_record(record) is called as each method's measuring
    pass ends, before the timing rounds."""
    device = torch.device(device)
    x, y = methods.make_input(model_name, batch, device, seed=seed)
    recs, steps = {}, {}
    for m in method_names:
        base = {"method": m, "T": T, "batch": batch, "device": device.type, "model": model_name}
        try:
            rec, step, opt = measure(m, model_name, T, x, y, device, seed=seed)
            recs[m] = dict(base, **rec, error=None)
            steps[m] = (lambda step=step, opt=opt: step(x, y, opt, T))
        except Exception as e:
            recs[m] = _failed(base, f"{type(e).__name__}: {e}")
        if on_record:
            on_record(recs[m])
    errors = {}
    timed = interleaved_rounds(steps, rounds, sync=_sync_fn(device), errors=errors)
    for m, r in timed.items():
        rec = recs[m]
        if m in errors:
            e = errors[m]
            recs[m] = _failed(rec, f"{type(e).__name__} in timing round {len(r.seconds) + 1}: {e}")
            continue
        rec.update(iter_s=r.median, iter_s_all=r.seconds, rounds=len(r.seconds),
                   threads=torch.get_num_threads())
    del steps, timed
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return [recs[m] for m in method_names]
