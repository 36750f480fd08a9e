"""The outputs of the memory-vs-BPTT benchmark: Markdown table, the headline in
words, JSON, PNG."""
import json
import math
import os

RECORD_KEYS = ("method", "T", "batch", "device", "model", "iter_s", "peak_mb", "saved_mb")


def _ratio(a, b):
    if a is None or b is None or not b:
        return None
    return a / b


def _fmt(v, spec):
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def table(records):
    """Method x T rows: ms/step, peak MB, saved MB, and each as a ratio to bptt
    and to sj_ottt at the same T (x < 1: less than the baseline)."""
    by = {(r["method"], r["T"]): r for r in records}
    methods = list(dict.fromkeys(r["method"] for r in records))
    Ts = sorted({r["T"] for r in records})
    cols = ["method", "T", "ms/step", "peak MB", "saved MB"]
    bases = [b for b in ("bptt", "sj_ottt") if b in methods]
    for b in bases:
        cols += [f"time / {b}", f"peak / {b}", f"saved / {b}"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(cols) - 2)) + "|"]
    for m in methods:
        for T in Ts:
            r = by.get((m, T))
            if r is None:
                continue
            ok = r.get("error") is None
            ms = r["iter_s"] * 1e3 if ok and r.get("iter_s") is not None else None
            row = [m, str(T), _fmt(ms, ".0f"), _fmt(r.get("peak_mb"), ".1f"), _fmt(r.get("saved_mb"), ".1f")]
            for b in bases:
                base = by.get((b, T))
                if base is None or base.get("error") is not None or not ok:
                    row += ["–"] * 3
                    continue
                row += [_fmt(_ratio(r["iter_s"], base["iter_s"]), ".2f"),
                        _fmt(_ratio(r["peak_mb"], base["peak_mb"]), ".2f"),
                        _fmt(_ratio(r["saved_mb"], base["saved_mb"]), ".2f")]
            if not ok:
                row[2] = "failed: " + str(r["error"]).splitlines()[-1][:60] if r["error"] else "failed"
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _ok(r):
    return r.get("error") is None and r.get("iter_s") is not None and r.get("saved_mb") is not None


def headline(records, ours=("ottt_a", "ottt_o", "sltt", "ottt_a_chunk")):
    """The point of the benchmark in a few sentences: how each method's saved
    memory changes from the smallest to the largest T, and how our first OTTT
    method compares with BPTT and SpikingJelly's OTTT at the largest T both ran.
    Only what the records show: a missing or failed configuration is left out."""
    ok = [r for r in records if _ok(r)]
    by = {(r["method"], r["T"]): r for r in ok}
    methods = list(dict.fromkeys(r["method"] for r in ok))
    lines = []
    for m in methods:
        Ts = sorted(T for (mm, T) in by if mm == m)
        if len(Ts) < 2:
            continue
        a, b = by[m, Ts[0]]["saved_mb"], by[m, Ts[-1]]["saved_mb"]
        growth = f"{(b / a - 1) * 100:+.0f}%" if a else "n/a"
        lines.append(f"{m}: memory saved for backward {a:.1f} MB at T={Ts[0]} -> {b:.1f} MB at T={Ts[-1]} "
                     f"({growth})")
    mine = next((m for m in ours if m in methods), None)
    for base, what in (("bptt", "BPTT"), ("sj_ottt", "SpikingJelly's OTTT")):
        if mine is None or base not in methods:
            continue
        common = sorted(T for (m, T) in by if m == mine and (base, T) in by)
        if not common:
            continue
        T = common[-1]
        r, q = by[mine, T], by[base, T]
        mem = _ratio(r["saved_mb"], q["saved_mb"])
        t = _ratio(r["iter_s"], q["iter_s"])
        lines.append(f"{mine} vs {what} at T={T}: {_fmt(mem, '.2f')}x the memory, {_fmt(t, '.2f')}x the time "
                     "per training step")
    return "\n".join(lines)


def save_json(path, payload):
    """Write any JSON payload, creating the folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)


def write_json(path, records, meta):
    """A list of records with the issue's keys first; `meta` (machine, torch,
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


def plot(path, records, title):
    """Two panels against T (log2 axis), one line per method: memory (saved MB
    solid, peak MB dashed, same colour) and ms per training step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in records if r.get("error") is None and r.get("iter_s") is not None]
    methods = list(dict.fromkeys(r["method"] for r in ok))
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig, (ax_m, ax_t) = plt.subplots(1, 2, figsize=(12, 5.6))
    markers = "osD^v<>ph*"
    for i, m in enumerate(methods):
        rs = sorted((r for r in ok if r["method"] == m), key=lambda r: r["T"])
        Ts = [r["T"] for r in rs]
        color = f"C{i}"
        mk = markers[i % len(markers)]
        ax_m.plot(Ts, [r["saved_mb"] for r in rs], marker=mk, color=color, label=f"{m} saved")
        ax_m.plot(Ts, [r["peak_mb"] for r in rs], marker=mk, color=color, ls="--", alpha=0.55, mfc="none",
                  label=f"{m} peak")
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
    ax_m.set_title("memory: saved for backward + state (solid), peak growth (dashed)", fontsize=9)
    ax_t.set_ylabel("seconds per training step (median)")
    ax_t.set_title("time per training step", fontsize=9)
    # below the panels: the lines overlap where methods save the same bytes
    ax_m.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.13))
    ax_t.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.13))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
