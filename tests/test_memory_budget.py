"""train_step(chunk="auto", memory_budget=...): the largest OTTT_A chunk whose step fits the budget.
The memory of a step is counted independently here by the benchmark's SavedBytes (saved tensors
once per storage + layer state), not by the counter that picks the chunk."""
import pytest
import torch

import ottt_cuda
from ottt_cuda.bench.memory import SavedBytes
from ottt_cuda.models import VGGWS, r400
from ottt_cuda.train.cli import main
from _compare import rel_err

T, B = 6, 2


def vgg():
    torch.manual_seed(0)
    return VGGWS([8, "A", 16], num_classes=4).double()


def rnn():
    torch.manual_seed(0)
    return r400(4, in_features=64, hidden=16).double()


def data(shape=(B, 3, 8, 8)):
    g = torch.Generator().manual_seed(1)
    return 3 * torch.randn(*shape, generator=g).double(), torch.tensor([0, 3])


def counted_peak(model, x, y, chunk):
    """Bytes of the step with this chunk, as the benchmark counts them."""
    with SavedBytes(model) as sb:
        ottt_cuda.train_step(model, x, y, None, T=T, chunk=chunk)
    return sb.peak


@pytest.mark.parametrize("build, shape, exact", [(vgg, (B, 3, 8, 8), True), (rnn, (B, 1, 8, 8), False)])
def test_chosen_chunk_fits_the_budget_and_the_next_does_not(build, shape, exact):
    model = build()
    x, y = data(shape)
    peaks = {k: counted_peak(model, x, y, k) for k in range(1, T + 1)}
    for k_fit in range(1, T):
        if peaks[k_fit + 1] <= peaks[k_fit]:
            continue  # no budget separates k_fit from k_fit + 1
        budget = (peaks[k_fit] + peaks[k_fit + 1]) // 2  # fits k_fit, not k_fit + 1
        ottt_cuda.train_step(model, x, y, None, T=T, chunk="auto", memory_budget=budget)  # measures, chunk 1
        ottt_cuda.train_step(model, x, y, None, T=T, chunk="auto", memory_budget=budget)  # uses the choice
        k = model.ottt_chunk_plan.chunk
        assert 1 <= k <= T and peaks[k] <= budget
        # and the step actually run with the choice stays within the budget
        with SavedBytes(model) as sb:
            ottt_cuda.train_step(model, x, y, None, T=T, chunk="auto", memory_budget=budget)
        assert sb.peak <= budget
        if exact:  # saved bytes grow linearly with the chunk: the choice is the largest that fits
            assert k == k_fit
        else:  # a K-independent saved tensor is counted K times: the choice may be smaller
            assert k <= k_fit
    # a budget above every chunk's peak: the whole sequence at once
    ottt_cuda.train_step(model, x, y, None, T=T, chunk="auto", memory_budget=peaks[T] * 2)
    assert model.ottt_chunk_plan.chunk == T


def test_vgg_budgets_cover_several_chunks():
    # the test above is not vacuous for the conv net: every chunk's peak grows
    model = vgg()
    x, y = data()
    peaks = [counted_peak(model, x, y, k) for k in range(1, T + 1)]
    assert all(b > a for a, b in zip(peaks, peaks[1:]))


@pytest.mark.parametrize("sequence", [False, True])
def test_gradients_equal_the_unchunked_step(sequence):
    x, y = data()
    if sequence:
        x = x.unsqueeze(0).repeat(T, 1, 1, 1, 1) * torch.linspace(0.5, 1.5, T, dtype=x.dtype).view(T, 1, 1, 1, 1)
    ref = vgg()
    ottt_cuda.train_step(ref, x, y, None, T=T, sequence=sequence)
    for budget in (10 ** 12, None):
        model = vgg()
        if budget is None:  # a budget that allows 2 of 6 steps at a time
            probe = vgg()
            budget = (counted_peak(probe, x, y, 2) + counted_peak(probe, x, y, 3)) // 2
        for _ in range(2):  # first call measures (chunks of 1), the second uses the choice
            model.zero_grad(set_to_none=True)
            loss, out = ottt_cuda.train_step(model, x, y, None, T=T, chunk="auto", memory_budget=budget,
                                             sequence=sequence)
        assert model.ottt_chunk_plan.chunk == (T if budget == 10 ** 12 else 2)
        for (name, p), q in zip(model.named_parameters(), ref.parameters()):
            assert rel_err(p.grad, q.grad) <= 1e-10, name


def test_budget_too_small_for_chunk_one_names_the_minimum():
    model = vgg()
    x, y = data()
    minimum = counted_peak(model, x, y, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"memory_budget .*too small.* at least (\d+) bytes") as e:
        ottt_cuda.train_step(model, x, y, opt, T=T, chunk="auto", memory_budget=minimum // 2)
    stated = int(str(e.value).split("at least ")[1].split(" bytes")[0])
    assert minimum <= stated <= minimum * 1.01  # the minimum it names is the real one
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))  # no optimizer step
    # the measurement is cached: the second call refuses at once, with the same number
    with pytest.raises(ValueError, match=f"at least {stated} bytes"):
        ottt_cuda.train_step(model, x, y, opt, T=T, chunk="auto", memory_budget=minimum // 2)


@pytest.mark.parametrize("kwargs, arg", [
    (dict(chunk="auto"), "memory_budget"),
    (dict(chunk="auto", memory_budget=-5), "memory_budget"),
    (dict(chunk="auto", memory_budget=0), "memory_budget"),
    (dict(chunk="auto", memory_budget=float("nan")), "memory_budget"),
    (dict(chunk="auto", memory_budget="six gigs"), "memory_budget"),
    (dict(chunk="auto", memory_budget=[1]), "memory_budget"),
    (dict(chunk="auto", memory_budget=True), "memory_budget"),
    (dict(chunk="auto", memory_budget=10 ** 9, mode="sltt"), "auto"),
    (dict(chunk="auto", memory_budget=10 ** 9, mode="bptt"), "auto"),
    (dict(chunk=2, memory_budget=10 ** 9), "memory_budget"),
    (dict(memory_budget=10 ** 9), "memory_budget"),
    (dict(chunk="automatic", memory_budget=10 ** 9), "chunk"),
])
def test_bad_values_name_the_argument(kwargs, arg):
    model = vgg()
    x, y = data()
    with pytest.raises(ValueError, match=arg):
        ottt_cuda.train_step(model, x, y, None, T=T, **kwargs)


def test_string_budget_is_accepted():
    model = vgg()
    x, y = data()
    ottt_cuda.train_step(model, x, y, None, T=T, chunk="auto", memory_budget="1GiB")
    assert model.ottt_chunk_plan.budget == 1073741824 and model.ottt_chunk_plan.chunk == T


@pytest.mark.parametrize("text, expected", [
    ("6GB", 6_000_000_000), ("512MiB", 536_870_912), ("1e9", 1_000_000_000), ("1.5 GiB", 1_610_612_736),
    ("2048", 2048), ("64kB", 64_000), ("3KiB", 3072), ("7gb", 7_000_000_000),
])
def test_cli_parses_sizes(text, expected):
    from ottt_cuda.train.cli import parser, resolve
    cfg = resolve(parser().parse_args(["synthetic", "--chunk", "auto", "--memory-budget", text]))
    assert cfg["chunk"] == "auto" and cfg["memory_budget"] == expected


@pytest.mark.parametrize("argv, option", [
    (["--chunk", "auto"], "--memory-budget"),
    (["--chunk", "auto", "--memory-budget=-3GB"], "--memory-budget"),
    (["--chunk", "auto", "--memory-budget", "6 parsecs"], "--memory-budget"),
    (["--memory-budget", "6GB"], "--memory-budget"),
    (["--chunk", "2", "--memory-budget", "6GB"], "--memory-budget"),
    (["--chunk", "auto", "--memory-budget", "6GB", "--mode", "sltt"], "--chunk"),
])
def test_cli_bad_budget_options_name_the_option(argv, option, capsys, tmp_path):
    rc = main(["synthetic", "--out-dir", str(tmp_path)] + argv)
    err = capsys.readouterr().err
    assert rc == 2 and option in err


def test_cli_chunk_auto_trains_and_reports_the_chunk(tmp_path, capsys):
    n = torch.get_num_threads()
    try:
        rc = main(["synthetic", "--epochs", "1", "--limit-batches", "3", "--out-dir", str(tmp_path),
                   "--threads", "1", "--no-progress", "--chunk", "auto", "--memory-budget", "1GB"])
    finally:
        torch.set_num_threads(n)
    out, err = capsys.readouterr()
    assert rc == 0, err
    import json
    res = json.loads(out.strip().splitlines()[-1])
    assert res["chunk"] == 4  # the synthetic recipe's T: 1 GB holds every step of this tiny net
    assert "chunk='auto': chunk 4 of T=4" in err
