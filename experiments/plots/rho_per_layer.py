#!/usr/bin/python3
"""Per-layer Spearman rho between key norm and attention, one line per run
(model), from `kvlab correlate` runs.

Line: the mean over heads of each head's mean rho. Band: +- the pooled standard
deviation over all heads and queries of the layer. Dots: the individual heads.
The x axis is the relative depth (layer / (layers - 1)) when models of
different depths are compared, the layer index otherwise.

usage: rho_per_layer.py RUN_DIR [RUN_DIR ...] [-o OUT_DIR] [--metric spearman|pearson]"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402


def pooled(mean, std, n):
    """Mean and std of the union of groups given each group's mean, sample std, n."""
    ok = (n > 0) & np.isfinite(mean)
    mean, std, n = mean[ok], np.nan_to_num(std[ok]), n[ok].astype(float)
    N = n.sum()
    if N < 2:
        return (mean.mean() if len(mean) else np.nan), 0.0
    M = (n * mean).sum() / N
    ss = ((n - 1) * std ** 2).sum() + (n * (mean - M) ** 2).sum()
    return M, np.sqrt(ss / (N - 1))


def plot(runs, out_dir, metric="spearman", name="rho_per_layer"):
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    data = []
    for run in runs:
        meta = common.load_meta(run)
        m = common.require_npz(run, "metrics.npz", "kvlab correlate ...")
        data.append((meta, m))
    depths = {m[f"{metric}_mean"].shape[0] for _, m in data}
    relative = len(depths) > 1
    for i, (meta, m) in enumerate(data):
        mean, std, n = m[f"{metric}_mean"], m[f"{metric}_std"], m[f"{metric}_n"]
        L, H = mean.shape
        x = np.arange(L) / max(L - 1, 1) if relative else np.arange(L)
        stats = np.array([pooled(mean[l], std[l], n[l]) for l in range(L)])
        colour = f"C{i}"
        line = np.nanmean(np.where(n > 0, mean, np.nan), axis=1)
        ax.plot(x, line, "-o", color=colour, ms=4, label=f"{common.run_label(meta)}")
        ax.fill_between(x, stats[:, 0] - stats[:, 1], stats[:, 0] + stats[:, 1], color=colour, alpha=0.15, lw=0)
        for h in range(H):
            ax.scatter(x, mean[:, h], color=colour, s=6, alpha=0.35, lw=0)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xlabel("relative depth" if relative else "layer")
    if not relative:
        ax.set_xticks(range(max(depths)))
    ax.set_ylabel(f"{'Spearman ρ' if metric == 'spearman' else 'Pearson r'} (key norm, attention)")
    ax.set_title(f"{metric.capitalize()} per layer: mean over heads, band = ±1 std over heads × queries")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return common.save(fig, out_dir, name)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--metric", choices=["spearman", "pearson"], default="spearman")
    ap.add_argument("-o", "--out", help="output directory [FIRST_RUN/plots]")
    a = ap.parse_args()
    for p in plot(a.runs, a.out or os.path.join(a.runs[0], "plots"), a.metric):
        print(p)


if __name__ == "__main__":
    main()
