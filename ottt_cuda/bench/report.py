"""The outputs of the main job: Markdown table, the headline in words, JSON, PNG."""
import json
import math
import os

RECORD_KEYS = ("method", "T", "batch", "device", "model", "iter_s", "peak_mb", "saved_mb")
# A ratio is printed only against a real figure: a memory figure below this many MB (or a missing
# one) is no denominator. Every figure the main job divides by is a peak or saved size of a whole
# training step, tens of MB or more on the smallest workload it runs.
MIN_MB = 1.0
MIN_S = 1e-6
_FLOOR = {"iter_s": MIN_S, "peak_mb": MIN_MB, "saved_mb": MIN_MB}
BASES = (("bptt", "BPTT"), ("sj_ottt", "SpikingJelly's OTTT"))
OURS_OTTT = ("ottt_a", "ottt_o", "sltt", "ottt_a_chunk")


def _real(v):
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def ratio(r, base, key):
    """r[key] / base[key] for two records, or None unless both figures are real measurements
    and the denominator is at least its floor (MIN_MB for memory, MIN_S for time)."""
    a, b = r.get(key), base.get(key)
    if not (_real(a) and _real(b)) or b <= 0 or b < _FLOOR[key]:
        return None
    return a / b


def _fmt(v, spec):
    return "–" if not _real(v) else format(v, spec)


def _ok(r):
    return r.get("error") is None and _real(r.get("iter_s"))


def table(records):
    """Method x T rows: ms/step, peak MB, saved MB, and each as a ratio to bptt and to
    sj_ottt at the same T (x < 1: less than the baseline); '–' where a figure is missing
    or a denominator is not a real measurement (see ratio)."""
    by = {(r["method"], r["T"]): r for r in records}
    names = list(dict.fromkeys(r["method"] for r in records))
    Ts = sorted({r["T"] for r in records})
    cols = ["method", "T", "ms/step", "peak MB", "saved MB"]
    bases = [b for b, _ in BASES if b in names]
    for b in bases:
        cols += [f"time / {b}", f"peak / {b}", f"saved / {b}"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(cols) - 2)) + "|"]
    for m in names:
        for T in Ts:
            r = by.get((m, T))
            if r is None:
                continue
            ok = r.get("error") is None
            ms = r["iter_s"] * 1e3 if ok and _real(r.get("iter_s")) else None
            row = [m, str(T), _fmt(ms, ".0f"), _fmt(r.get("peak_mb"), ".1f"), _fmt(r.get("saved_mb"), ".1f")]
            for b in bases:
                base = by.get((b, T))
                if base is None or base.get("error") is not None or not ok:
                    row += ["–"] * 3
                    continue
                row += [_fmt(ratio(r, base, k), ".2f") for k in ("iter_s", "peak_mb", "saved_mb")]
            if not ok:
                row[2] = "failed: " + str(r["error"]).splitlines()[-1][:60] if r["error"] else "failed"
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def legend(rounds):
    """What each column of table() means, in a few lines."""
    return "\n".join([
        f"ms/step: one training step (T time steps, backward, optimizer step), median of {rounds} round(s); each "
        "round times one step of every method in turn, in one process, without profiler or hooks.",
        "peak MB: the most tensor bytes alive at once during one step (activations, saved tensors, gradients, "
        "layer state, temporaries), less the parameters and the optimizer's state, which every method holds "
        "alike; from the allocator's events (torch.profiler profile_memory) in a separate, untimed step.",
        "saved MB: the peak of the bytes saved for backward (once per storage) plus the layers' state. "
        "MB: 2^20 bytes.",
        f"x / base: ratio to that method at the same T (below 1: less); '–' where a figure is missing or the "
        f"denominator is under {MIN_MB:g} MB.",
    ])


def _series(by, m, key):
    return sorted((T, r[key]) for (mm, T), r in by.items() if mm == m and _real(r.get(key)))


def _list(values, spec):
    return " / ".join(_fmt(v, spec) for v in values)


def headline(records, conditions=None):
    """The point of the main job in a few sentences, from the records only (a missing or failed
    configuration is left out): `conditions` (what ran where), each method's peak and saved
    memory from the smallest to the largest T, and our first OTTT method against BPTT and
    SpikingJelly's OTTT at every T both ran, naming the T where it is slower."""
    ok = [r for r in records if _ok(r)]
    by = {(r["method"], r["T"]): r for r in ok}
    names = list(dict.fromkeys(r["method"] for r in ok))
    lines = [conditions] if conditions else []
    for m in names:
        for key, what in (("peak_mb", "peak"), ("saved_mb", "saved for backward")):
            s = _series(by, m, key)
            if len(s) < 2:
                continue
            (T0, a), (T1, b) = s[0], s[-1]
            growth = f" ({(b / a - 1) * 100:+.0f}%)" if a >= MIN_MB else ""
            lines.append(f"{m}: {what} {a:.1f} MB at T={T0} -> {b:.1f} MB at T={T1}{growth}")
    mine = next((m for m in OURS_OTTT if m in names), None)
    for base, what in BASES:
        if mine is None or base not in names:
            continue
        common = sorted(T for (m, T) in by if m == mine and (base, T) in by)
        if not common:
            continue
        t = [ratio(by[mine, T], by[base, T], "iter_s") for T in common]
        mem = [ratio(by[mine, T], by[base, T], "peak_mb") for T in common]
        Ts = " / ".join(map(str, common))
        slower = [f"T={T} ({x:.2f}x)" for T, x in zip(common, t) if x is not None and x > 1]
        verdict = (f"slower at {', '.join(slower)}" if slower else "faster at every T measured")
        lines.append(f"{mine} vs {what} at T = {Ts}: {_list(t, '.2f')}x the time per training step "
                     f"({verdict}); {_list(mem, '.2f')}x the peak memory")
    return "\n".join(lines)


def save_json(path, payload):
    """Write any JSON payload, creating the folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)


def write_json(path, records, meta):
    """A list of records with RECORD_KEYS first; `meta` (machine, torch,
    command) is added to every record under "meta" so the file stays a list."""
    out = []
    for r in records:
        rec = {k: r.get(k) for k in RECORD_KEYS}
        rec.update({k: v for k, v in r.items() if k not in RECORD_KEYS})
        rec["meta"] = meta
        out.append(rec)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(out, f, indent=1)


def write_markdown(path, table_text, legend_text, summary, meta, plot=None):
    """The run as a Markdown page: command, machine, elapsed time, table, legend, headline."""
    m = meta["machine"]
    lines = [f"# python -m ottt_cuda.bench ({meta['preset']} preset)", "",
             f"Command: `{meta['command']}`", "",
             f"- machine: {m.get('platform')}, {m.get('processor')}, {m.get('cpu_count')} cores"
             + (f", {m['gpu']}" if m.get("gpu") else ""),
             f"- torch {meta['torch']}, {meta['threads']} torch thread(s), python {m.get('python')}, "
             f"SpikingJelly {m.get('spikingjelly')}, ottt_cuda backend {m.get('ottt_cuda_backend')}",
             f"- total elapsed: {meta['elapsed_s']:.0f} s", ""]
    if plot:
        rel = os.path.relpath(os.path.abspath(plot), os.path.dirname(os.path.abspath(path)))
        lines += [f"![memory and time vs T]({rel})", ""]
    lines += [table_text, "", *[f"- {ln}" for ln in legend_text.splitlines()], ""]
    if summary:
        lines += [*[f"{ln}  " for ln in summary.splitlines()], ""]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines))


def plot(path, records, title):
    """Two panels against T (log2 axis), one line per method: memory (peak MB
    solid, saved MB dashed, same colour) and seconds per training step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in records if _ok(r)]
    methods = list(dict.fromkeys(r["method"] for r in ok))
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig, (ax_m, ax_t) = plt.subplots(1, 2, figsize=(12, 5.6))
    markers = "osD^v<>ph*"
    for i, m in enumerate(methods):
        rs = sorted((r for r in ok if r["method"] == m), key=lambda r: r["T"])
        Ts = [r["T"] for r in rs]
        color = f"C{i}"
        mk = markers[i % len(markers)]
        ax_m.plot(Ts, [r["peak_mb"] for r in rs], marker=mk, color=color, label=f"{m} peak")
        ax_m.plot(Ts, [r["saved_mb"] for r in rs], marker=mk, color=color, ls="--", alpha=0.55, mfc="none",
                  label=f"{m} saved")
        ax_t.plot(Ts, [r["iter_s"] for r in rs], marker=mk, color=color, label=m)
    allT = sorted({r["T"] for r in ok})
    for ax in (ax_m, ax_t):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(allT)
        ax.set_xticklabels([str(t) for t in allT])
        ax.set_xlabel("time steps T")
        ax.grid(True, which="both", alpha=0.3)
        # plain numbers on the log axes (not 10^k): the reader compares values
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax_m.set_ylabel("MB per training step")
    ax_m.set_title("memory of one step: peak of live tensors (solid), saved for backward + state (dashed)",
                   fontsize=9)
    ax_t.set_ylabel("seconds per training step (median of interleaved rounds)")
    ax_t.set_title("time per training step", fontsize=9)
    # below the panels: the lines overlap where methods save the same bytes
    ax_m.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.13))
    ax_t.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.13))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
