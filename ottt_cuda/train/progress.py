"""A per-epoch progress bar on stderr: batches done, running loss and accuracy, steps/s.

On a terminal it redraws one line; into a file (nohup, CI logs) it writes a plain line at most
every `file_interval` seconds so logs stay readable.
"""
import sys
import time


class Progress:
    def __init__(self, total, desc, enabled=True, stream=None, file_interval=60.0):
        self.total, self.desc, self.enabled = total, desc, enabled
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interval = 0.2 if self.tty else file_interval
        self.n, self.start, self.last = 0, time.perf_counter(), 0.0
        self.metrics = {}

    def update(self, n=1, **metrics):
        self.n += n
        self.metrics.update(metrics)
        now = time.perf_counter()
        if self.enabled and (now - self.last >= self.interval or self.n == self.total):
            self.last = now
            self._draw(now)

    def rate(self):
        dt = time.perf_counter() - self.start
        return self.n / dt if dt > 0 else 0.0

    def _draw(self, now):
        width = 24
        frac = self.n / self.total if self.total else 1.0
        bar = "#" * int(width * frac) + "-" * (width - int(width * frac))
        ms = " ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in self.metrics.items())
        line = f"{self.desc} [{bar}] {self.n}/{self.total} {ms} {self.rate():.2f} steps/s"
        if self.tty:
            self.stream.write("\r" + line + "\x1b[K")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self):
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
