"""The one progress bar (ottt_cuda.train.progress, tqdm): whole lines into files and
logs, the training bar's metrics and steps/s, nothing when disabled."""
import io

from ottt_cuda.train.progress import Progress, bar


def test_into_a_file_each_update_is_a_plain_line():
    buf = io.StringIO()  # not a terminal
    p = Progress(3, "epoch 1/2", stream=buf, file_interval=0.0)
    for i in range(3):
        p.update(loss=1.0 / (i + 1), acc=0.25 * i)
    p.close()
    text = buf.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert all(line.startswith("epoch 1/2:") for line in lines)
    assert "3/3" in lines[-1] and "loss 0.3333 acc 0.5000" in lines[-1] and lines[-1].endswith("steps/s]")
    assert p.n == 3 and p.rate() > 0


def test_into_a_file_updates_are_throttled():
    buf = io.StringIO()
    p = Progress(1000, "epoch 1/1", stream=buf, file_interval=3600.0)
    for _ in range(999):
        p.update(loss=0.5)
    p.close()
    # the first line, then nothing for an hour of updates, then the final state at close
    lines = buf.getvalue().splitlines()
    assert len(lines) <= 3 and "999/1000" in lines[-1]


def test_disabled_bar_writes_nothing_but_counts():
    buf = io.StringIO()
    p = Progress(4, "epoch", enabled=False, stream=buf)
    p.update(2, loss=0.1)
    p.close()
    assert buf.getvalue() == "" and p.n == 2


def test_plain_bar_counts_configurations():
    buf = io.StringIO()
    b = bar(2, "bench", unit="config", stream=buf, file_interval=0.0)
    b.set_postfix_str("ottt_a T=1")
    b.update(1)
    b.update(1)
    b.close()
    last = buf.getvalue().splitlines()[-1]
    assert last.startswith("bench: 100%") and "2/2" in last and "ottt_a T=1" in last
