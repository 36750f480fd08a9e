"""Firing-rate statistics (supplementary D.1): average firing rate of every LIF layer and the
average number of spikes per neuron over the T steps, on the test set; JSON + PNG bar chart.

Spikes are counted by wrapping each LIF instance's `step` and `multi` for the duration, not
with forward hooks: a RecurrentLIF calls its neuron's `step` directly (the recurrence runs
outside the neuron's forward), so hooks would miss it.
"""
import json
import os

import torch

from ..nn import LIF


class SpikeCounter:
    def __init__(self, model):
        self.layers = [(name, m) for name, m in model.named_modules() if isinstance(m, LIF)]
        self.spikes = {n: 0.0 for n, _ in self.layers}
        self.count = {n: 0 for n, _ in self.layers}      # neuron x step x sample elements seen
        self.neurons = {n: 0 for n, _ in self.layers}    # neurons per sample

    def _wrap(self, name, m):
        step, multi = m.step, m.multi
        depth = [0]  # LIF.multi may call step: count only the outermost call

        def record(out, per_sample):
            if depth[0] == 0:
                self.spikes[name] += float(out.detach().double().sum())
                self.count[name] += out.numel()
                self.neurons[name] = per_sample

        def w_step(x):
            out = step(x)
            record(out, out[0].numel() if out.dim() else 1)
            return out

        def w_multi(x_seq):
            depth[0] += 1
            try:
                out = multi(x_seq)
            finally:
                depth[0] -= 1
            record(out, out[0, 0].numel() if out.dim() > 1 else 1)
            return out

        m.step, m.multi = w_step, w_multi

    def __enter__(self):
        for name, m in self.layers:
            self._wrap(name, m)
        return self

    def __exit__(self, *exc):
        for _, m in self.layers:
            del m.step, m.multi  # drop the instance attributes: the class methods show through again

    def totals(self):
        return [self.spikes[n] for n, _ in self.layers] + [float(self.count[n]) for n, _ in self.layers]

    def set_totals(self, values):
        k = len(self.layers)
        for i, (n, _) in enumerate(self.layers):
            self.spikes[n], self.count[n] = values[i], int(values[k + i])

    def summary(self, T):
        layers = []
        for n, _ in self.layers:
            rate = self.spikes[n] / self.count[n] if self.count[n] else 0.0
            layers.append({"layer": n, "neurons": self.neurons[n], "firing_rate": rate, "spikes_per_neuron": rate * T})
        total_spikes, total_count = sum(self.spikes.values()), sum(self.count.values())
        rate = total_spikes / total_count if total_count else 0.0
        return {"T": T, "firing_rate": rate, "spikes_per_neuron": rate * T, "layers": layers}


def write(summary, out_dir, title=""):
    """stats.json and firing_rates.png in out_dir; returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, "stats.json")]
    with open(paths[0], "w") as f:
        json.dump(summary, f, indent=2)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        import warnings
        warnings.warn("matplotlib is not installed: firing-rate chart not drawn (stats.json written)")
        return paths
    names = [l["layer"] or "(model)" for l in summary["layers"]]
    rates = [l["firing_rate"] for l in summary["layers"]]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(names) + 2), 3.5))
    ax.bar(range(len(names)), rates, color="tab:blue")
    ax.axhline(summary["firing_rate"], color="tab:red", ls="--", lw=1,
               label=f"mean {summary['firing_rate']:.3f} ({summary['spikes_per_neuron']:.2f} spikes/neuron, "
                     f"T={summary['T']})")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("average firing rate")
    ax.set_title(title or "firing rate per LIF layer (test set)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(os.path.join(out_dir, "firing_rates.png"))
    fig.savefig(paths[1], dpi=120)
    plt.close(fig)
    return paths


@torch.no_grad()
def collect(model, batches, T, evaluate_fn):
    """Run evaluate_fn(model, x) over `batches` while counting spikes; returns the counter."""
    counter = SpikeCounter(model)
    with counter:
        for x in batches:
            evaluate_fn(model, x)
    return counter
