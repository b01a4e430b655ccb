#!/usr/bin/python3
"""Needle-in-a-haystack and passkey heat maps (Kamradt style): score (needle) or
accuracy (passkey) per context length (rows) and depth (columns), one map per
policy and compression ratio at one skip-layer set, the full cache first. One
figure per model: OUT/needle_heatmap_MODEL.png/.pdf (--task passkey:
OUT/passkey_heatmap_MODEL.png/.pdf).

Input: the tidy CSV of `experiments/collect.py ROOT -o all.csv` (needle or passkey
rows with a numeric length and depth).

usage: needle_heatmap.py ALL_CSV [-o OUT_DIR] [--skip 0,1] [--task needle|passkey]
                         [--policies LIST] [--allow-empty]
Run with Debian's /usr/bin/python3 (python3-matplotlib, python3-numpy)."""
import argparse
import csv
import os
import sys
from collections import defaultdict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

ORDER = {"full": 0, "l2": 1, "l2-high": 2, "random": 3}
METRIC = {"needle": "score", "passkey": "accuracy"}


def grids(rows, skip, task="needle", policies=None):
    """{model: {(policy, ratio): {(length, depth): score}}}"""
    out = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        if r["task"] != task or r.get("length") == "all" or r.get("depth") == "all":
            continue
        if r["policy"] != "full" and (r["skip_layers"] != skip or (policies and r["policy"] not in policies)):
            continue
        ratio = 0.0 if r["policy"] == "full" else float(r["compression_ratio"])
        out[r["model"]][(r["policy"], ratio)][(int(r["length"]), int(r["depth"]))] = float(r[METRIC[task]])
    return out


def plot_model(model, maps, skip, out_dir, task="needle"):
    keys = sorted(maps, key=lambda k: (ORDER.get(k[0], 9), k[0], k[1]))
    cols = min(5, len(keys))
    nrows = (len(keys) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.6 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.set_visible(False)
    for i, (ax, key) in enumerate(zip(axes.flat, keys)):
        cells = maps[key]
        lengths = sorted({l for l, _ in cells})
        depths = sorted({d for _, d in cells})
        z = np.full((len(lengths), len(depths)), np.nan)
        for (l, d), v in cells.items():
            z[lengths.index(l), depths.index(d)] = v
        ax.set_visible(True)
        im = ax.imshow(z, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto", origin="lower")
        ax.set_xticks(range(len(depths)), [str(d) for d in depths], fontsize=7)
        ax.set_yticks(range(len(lengths)), [str(l) for l in lengths], fontsize=7)
        policy, ratio = key
        ax.set_title("full cache" if policy == "full" else f"{policy}, {ratio * 100:.0f}% evicted", fontsize=9)
        ax.set_xlabel("depth (%)", fontsize=8)
        if i % cols == 0:
            ax.set_ylabel("length (tokens)", fontsize=8)
    fig.subplots_adjust(hspace=0.55, wspace=0.3, right=0.86)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label=METRIC[task])
    what = "needle in a haystack" if task == "needle" else "passkey retrieval"
    fig.suptitle(f"{model}: {what} (skip layers {skip})")
    return common.save(fig, out_dir, f"{task}_heatmap_{model}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("all_csv")
    ap.add_argument("-o", "--out", default="plots")
    ap.add_argument("--skip", default="0,1")
    ap.add_argument("--task", choices=sorted(METRIC), default="needle")
    ap.add_argument("--policies", help="comma-separated policies to show (besides the full cache) [all]")
    ap.add_argument("--allow-empty", action="store_true", help="no runs of the task is not an error")
    a = ap.parse_args()
    a.skip = common.skip_set(a.skip)
    policies = set(a.policies.split(",")) if a.policies else None
    with open(a.all_csv, newline="") as f:
        by_model = grids(list(csv.DictReader(f)), a.skip, a.task, policies)
    if not by_model:
        if a.allow_empty:
            print(f"{a.all_csv}: no {a.task} runs, no heat map", file=sys.stderr)
            return
        sys.exit(f"{a.all_csv}: no {a.task} runs")
    for model in sorted(by_model):
        for p in plot_model(model, by_model[model], a.skip, a.out, a.task):
            print(p)


if __name__ == "__main__":
    main()
