#!/usr/bin/python3
"""One figure per score of a `kvlab correlate --score ...` run: does the score
predict the attention of the next query, per layer and head?

Left: Spearman rho of (score, attention) per layer x head (red = positive =
the score ranks the tokens the query attends to highest). Middle: the
attention mass lost at 50 % compression when keeping the top scores, per
layer x head. Right: that loss against the compression ratio, mean over the
heads, per layer (thin) and over all layers (thick), beside the oracle and
random eviction of the same rows (dashed, dotted).

usage: score_heatmap.py RUN_DIR [-o OUT_DIR]   (one file score_<KEY> per score)"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import fig2_alr_heatmap  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402


def score_keys(run):
    """The scores of a run, in the order given: [(spec, key)] from meta.json."""
    meta = common.load_meta(run)
    return [(s["score"], s["key"]) for s in meta.get("knobs", {}).get("scores", [])]


def plot_one(run, out_dir, spec, key, name):
    meta = common.load_meta(run)
    m = common.require_npz(run, "metrics.npz", "kvlab correlate --score ...")
    rho = m[f"score_{key}_spearman_mean"]
    loss = m[f"score_{key}_loss_mean"]
    oracle, rnd = m[f"score_{key}_loss_oracle_mean"], m[f"score_{key}_loss_random_mean"]
    ratios = m["ratios"]
    L, H = rho.shape
    mid = len(ratios) // 2
    fig, axes = plt.subplots(1, 3, figsize=(6 + 0.55 * H * 2, 1.5 + 0.35 * max(L, 8)), squeeze=False)
    ax = axes[0, 0]
    im = ax.imshow(rho, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
    fig2_alr_heatmap.annotate(ax, rho, "{:+.2f}")
    ax.set_title(f"Spearman ρ ({spec}, attention)")
    fig.colorbar(im, ax=ax, fraction=0.05)
    ax = axes[0, 1]
    im = ax.imshow(loss[:, :, mid], cmap="viridis", vmin=0, aspect="auto", interpolation="nearest")
    fig2_alr_heatmap.annotate(ax, loss[:, :, mid], "{:.2f}")
    ax.set_title(f"attention loss at {ratios[mid]:.0%} compression")
    fig.colorbar(im, ax=ax, fraction=0.05)
    for ax in axes[0, :2]:
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_xticks(range(H))
        ax.set_yticks(range(L))
    ax = axes[0, 2]
    x = ratios * 100
    for l in range(L):
        ax.plot(x, np.nanmean(loss[l], axis=0), color=plt.cm.viridis(l / max(L - 1, 1)), lw=0.7, alpha=0.6)
    ax.plot(x, np.nanmean(loss, axis=(0, 1)), color="black", lw=2, label=spec)
    ax.plot(x, np.nanmean(oracle, axis=(0, 1)), "k--", lw=1, label="oracle")
    ax.plot(x, np.nanmean(rnd, axis=(0, 1)), "k:", lw=1, label="random")
    ax.set_xlabel("compression ratio (% removed)")
    ax.set_ylabel("attention mass lost")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    return common.finish(fig, out_dir, name, f"{common.run_label(meta)} — score {spec}")


def plot(run, out_dir, name="score"):
    paths = []
    for spec, key in score_keys(run):
        paths += plot_one(run, out_dir, spec, key, f"{name}_{key}")
    return paths


if __name__ == "__main__":
    common.run_main(__doc__, plot)
