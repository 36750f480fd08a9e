"""The one way ottt_cuda shows progress (training epochs, benchmark configurations): tqdm on stderr.

On a terminal tqdm redraws one line. Into a file (nohup, CI logs) it would write
carriage-return updates that make one unreadable line; there each update becomes a
plain line instead, at most one every `file_interval` seconds.
"""
import sys
import time

from tqdm import tqdm


class _PlainLines:
    """A stream for tqdm that turns its carriage-return redraws into whole lines."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, s):
        text = s.replace("\r", "").rstrip()
        if text:
            self.stream.write(text + "\n")

    def flush(self):
        self.stream.flush()


def _is_tty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def bar(total, desc, *, unit="it", enabled=True, stream=None, file_interval=60.0, bar_format=None):
    """A tqdm progress bar on `stream` (stderr by default); see the module doc for files."""
    stream = stream or sys.stderr
    tty = _is_tty(stream)
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, file=stream if tty else _PlainLines(stream),
                mininterval=0.2 if tty else file_interval, maxinterval=max(10.0, file_interval),
                dynamic_ncols=tty, ascii=not tty, bar_format=bar_format)


# tqdm's default layout without its own rate: Progress puts steps/s in the postfix,
# always in those units (tqdm would switch to s/step below one step per second).
_TRAIN_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]"


class Progress:
    """A per-epoch bar: batches done, running metrics (loss, acc, ...), steps/s.
    `n` and `rate()` stay readable after close() (the runner records them)."""

    def __init__(self, total, desc, enabled=True, stream=None, file_interval=60.0):
        self._bar = bar(total, desc, unit="step", enabled=enabled, stream=stream, file_interval=file_interval,
                        bar_format=_TRAIN_FORMAT)
        self.total, self.desc, self.enabled = total, desc, enabled
        self.n, self.start = 0, time.perf_counter()
        self.metrics = {}

    def update(self, n=1, **metrics):
        self.n += n
        self.metrics.update(metrics)
        # refresh=False: tqdm redraws at its own interval, not on every batch
        self._bar.set_postfix_str(self._postfix(), refresh=False)
        self._bar.update(n)

    def _postfix(self):
        ms = [f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in self.metrics.items()]
        return " ".join(ms + [f"{self.rate():.2f} steps/s"])

    def rate(self):
        """Steps per second since the bar was created."""
        dt = time.perf_counter() - self.start
        return self.n / dt if dt > 0 else 0.0

    def close(self):
        self._bar.close()
