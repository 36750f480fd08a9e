"""How benchmarks time things: the median of CUDA-synchronized calls (time_call)
and methods timed side by side in interleaved rounds (interleaved_rounds). The
allocator is left as a user's process has it: no setting that favours one side."""
import dataclasses
import statistics
import time

import torch


def sync(device):
    """Wait for the device's queued work (a no-op on the CPU)."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def time_call(fn, device, *, warmup=3, reps=20, min_time=0.05):
    """Median seconds per call of fn() over `reps` timed calls (at least `min_time` in all)."""
    for _ in range(warmup):
        fn()
    sync(device)
    samples = []
    total = 0.0
    while len(samples) < reps or total < min_time:
        t0 = time.perf_counter()
        fn()
        sync(device)
        dt = time.perf_counter() - t0
        samples.append(dt)
        total += dt
        if len(samples) >= 10 * reps:
            break
    return statistics.median(samples)


@dataclasses.dataclass
class Rounds:
    """One callable's measurements from interleaved_rounds: mean seconds per call in each
    round, the calls each round made, and the median over rounds."""
    seconds: list
    calls: list

    @property
    def median(self):
        return statistics.median(self.seconds)


def interleaved_rounds(fns, rounds, *, sync=None, target_s=0.0, max_calls=None, check_every=1, errors=None):
    """Time the callables of `fns` ({name: fn}) side by side: `rounds` rounds, each measuring
    every fn once in the order given (A, B, C, A, B, C, ...), so that a change in the machine's
    load during the run reaches all of them alike rather than whichever ran last.

    One measurement calls fn() until `target_s` seconds have passed (at least once, at most
    `max_calls` times), calling `sync` (e.g. torch.cuda.synchronize) every `check_every` calls
    before reading the clock and after the last call; its figure is the mean seconds per call.
    Returns {name: Rounds}. With `errors` (a dict), a fn that raises is recorded there as
    {name: exception} and left out of the later rounds (its Rounds keeps what it measured);
    without it the exception propagates."""
    sync = sync or (lambda: None)
    out = {name: Rounds([], []) for name in fns}
    live = dict(fns)
    for _ in range(rounds):
        for name, fn in list(live.items()):
            try:
                n, t0 = 0, time.perf_counter()
                while True:
                    fn()
                    n += 1
                    if n % check_every == 0 or (max_calls is not None and n >= max_calls):
                        sync()
                        if time.perf_counter() - t0 >= target_s or (max_calls is not None and n >= max_calls):
                            break
                dt = time.perf_counter() - t0
            except Exception as e:
                if errors is None:
                    raise
                errors[name] = e
                del live[name]
                continue
            out[name].seconds.append(dt / n)
            out[name].calls.append(n)
    return out

