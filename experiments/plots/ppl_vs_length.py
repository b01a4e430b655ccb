#!/usr/bin/python3
"""Paper Fig. 3: perplexity vs input length with a compressed KV cache, one panel per
policy, one curve per compression ratio, the full cache in black.

Input: the per-position CSV of `experiments/collect.py ROOT --positions positions.csv`
(columns model, policy, compression_ratio, skip_layers, pos, cum_ppl, cum_ppl_ref...).
cum_ppl at position t = exp(mean NLL of every prediction up to t, over the chunks),
i.e. the perplexity of the first t tokens. One figure per model:
OUT/ppl_vs_length_MODEL.png/.pdf.

usage: ppl_vs_length.py POSITIONS_CSV [-o OUT_DIR] [--skip 0,1] [--from 8]
Run with Debian's /usr/bin/python3 (python3-matplotlib, python3-numpy)."""
import argparse
import csv
import os
import sys
from collections import defaultdict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (Agg backend, save())
import matplotlib.pyplot as plt  # noqa: E402

POLICY_ORDER = ["l2", "l2-high", "random"]


def load(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def curves(rows, skip):
    """{model: {policy: {ratio: (pos, cum_ppl)}}} at one skip set, and the full cache."""
    out = defaultdict(lambda: defaultdict(dict))
    full = {}
    groups = defaultdict(list)
    for r in rows:
        model = r["model"] + ("" if r.get("variant", "ppl") == "ppl" else " " + r["variant"])
        groups[(model, r["policy"], r["compression_ratio"], r["skip_layers"], r["run"])].append(r)
    for (model, policy, ratio, sk, _), g in groups.items():
        pos = np.array([int(r["pos"]) for r in g])
        ppl = np.array([float(r["cum_ppl"]) for r in g])
        if policy == "full":
            full[model] = (pos, ppl)
        elif sk == skip:
            out[model][policy][float(ratio)] = (pos, ppl)
    return out, full


def plot_model(model, by_policy, full, start, skip, out_dir):
    policies = [p for p in POLICY_ORDER if p in by_policy] + sorted(p for p in by_policy if p not in POLICY_ORDER)
    fig, axes = plt.subplots(1, len(policies), figsize=(4.2 * len(policies), 3.8), sharey=True, squeeze=False)
    for ax, policy in zip(axes[0], policies):
        ratios = sorted(by_policy[policy])
        cmap = plt.get_cmap("viridis")
        for i, ratio in enumerate(ratios):
            pos, ppl = by_policy[policy][ratio]
            keep = pos >= start
            ax.plot(pos[keep], ppl[keep], color=cmap(i / max(1, len(ratios) - 1)), lw=1.4,
                    label=f"{ratio * 100:.0f}% evicted")
        if model in full:
            pos, ppl = full[model]
            keep = pos >= start
            ax.plot(pos[keep], ppl[keep], color="black", lw=2, ls="--", label="full cache")
        ax.set_yscale("log")
        ax.set_title(f"{policy} (skip layers {skip})")
        ax.set_xlabel("input length (tokens)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("perplexity of the first t tokens")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(f"{model}: perplexity vs input length, KV cache compressed token by token")
    fig.tight_layout()
    return common.save(fig, out_dir, "ppl_vs_length_" + model.replace(" ", "_"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("positions")
    ap.add_argument("-o", "--out", default="plots")
    ap.add_argument("--skip", default="0,1", help="skip-layer set to show [0,1]")
    ap.add_argument("--from", dest="start", type=int, default=8, help="first position shown [8]")
    a = ap.parse_args()
    by_model, full = curves(load(a.positions), a.skip)
    if not by_model:
        sys.exit(f"{a.positions}: no compressed ppl runs with skip layers {a.skip}")
    for model in sorted(by_model):
        base = model.split(" ")[0]          # a variant (ppl@step) shares the full-cache run
        full.setdefault(model, full.get(base))
        if full[model] is None:
            del full[model]
        for p in plot_model(model, by_model[model], full, a.start, a.skip, a.out):
            print(p)


if __name__ == "__main__":
    main()
