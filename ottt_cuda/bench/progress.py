"""A progress bar on stderr: tqdm when installed, else a one-line counter."""
import sys
import time


class _Simple:
    def __init__(self, total, desc):
        self.total, self.desc, self.n, self.t0, self.note = total, desc, 0, time.perf_counter(), ""
        self._draw()

    def _draw(self):
        width = 24
        filled = int(width * self.n / max(1, self.total))
        elapsed = time.perf_counter() - self.t0
        sys.stderr.write(f"\r{self.desc} [{'#' * filled}{'.' * (width - filled)}] {self.n}/{self.total} "
                         f"{elapsed:6.0f}s {self.note:40.40s}")
        sys.stderr.flush()

    def set_postfix_str(self, note):
        self.note = note
        self._draw()

    def update(self, n=1):
        self.n += n
        self._draw()

    def close(self):
        sys.stderr.write("\n")
        sys.stderr.flush()


def bar(total, desc="bench"):
    try:
        from tqdm import tqdm
    except ImportError:
        return _Simple(total, desc)
    return tqdm(total=total, desc=desc, file=sys.stderr, dynamic_ncols=True)
