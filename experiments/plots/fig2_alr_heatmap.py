#!/usr/bin/python3
"""Paper Fig. 2: ALR per layer and head, from a `kvlab correlate` run.

Left: ALR/n (Eqs. 5-7 divided by the number of cached tokens, so runs with
different lengths compare; 0 = the norm order is the ideal eviction order).
Right: mean Spearman rho between key norm and attention (blue = negative,
the paper's claim).

usage: fig2_alr_heatmap.py RUN_DIR [-o OUT_DIR]"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402


def annotate(ax, values, fmt):
    L, H = values.shape
    if L * H > 400:
        return
    for l in range(L):
        for h in range(H):
            v = values[l, h]
            if np.isfinite(v):
                ax.text(h, l, fmt.format(v), ha="center", va="center", fontsize=6, color="white")


def plot(run, out_dir, name="fig2_alr_heatmap"):
    meta = common.load_meta(run)
    m = common.require_npz(run, "metrics.npz", "kvlab correlate ...")
    alr, rho = m["alr_per_n_mean"], m["spearman_mean"]
    L, H = alr.shape
    fig, axes = plt.subplots(1, 2, figsize=(4 + 0.55 * H * 2, 1.5 + 0.35 * L), squeeze=False)
    ax = axes[0, 0]
    im = ax.imshow(alr, cmap="viridis", aspect="auto", interpolation="nearest")
    annotate(ax, alr, "{:.3f}")
    ax.set_title("ALR / n  (0 = norm order is the ideal eviction order)")
    fig.colorbar(im, ax=ax, fraction=0.05)
    ax = axes[0, 1]
    lim = np.nanmax(np.abs(rho)) if np.any(np.isfinite(rho)) else 1
    im = ax.imshow(rho, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto", interpolation="nearest")
    annotate(ax, rho, "{:+.2f}")
    ax.set_title("Spearman ρ (key norm, attention)")
    fig.colorbar(im, ax=ax, fraction=0.05)
    for ax in axes[0]:
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_xticks(range(H))
        ax.set_yticks(range(L))
    return common.finish(fig, out_dir, name, common.run_label(meta))


if __name__ == "__main__":
    common.run_main(__doc__, plot)
