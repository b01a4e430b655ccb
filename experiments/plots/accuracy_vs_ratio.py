#!/usr/bin/python3
"""Paper Fig. 4 (and the perplexity counterpart): quality vs compression ratio per
policy. Panels: perplexity relative to the full cache (ppl / ppl_full), passkey
accuracy, needle score (whichever tasks the CSV has). Solid lines: every policy at
the main skip-layer set (--skip, the paper's 0,1); dashed/dotted: l2 at the other
skip sets; grey horizontal line: the full cache. One figure per model:
OUT/NAME_MODEL.png/.pdf (NAME: --name, default accuracy_vs_ratio). With
--skip none and a CSV of every policy at the same budget (reproduce-l2.sh's
comparison) it is the equal-memory comparison of all policies.

Input: the tidy CSV of `experiments/collect.py ROOT -o all.csv` (the overall rows:
length = depth = "all" for passkey and needle).

usage: accuracy_vs_ratio.py ALL_CSV [-o OUT_DIR] [--skip 0,1] [--name NAME] [--title TEXT]
Run with Debian's /usr/bin/python3 (python3-matplotlib, python3-numpy)."""
import argparse
import csv
import os
import sys
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

COLOURS = {"l2": "tab:blue", "l2-high": "tab:red", "random": "tab:gray", "window": "tab:orange",
           "h2o": "tab:green", "snapkv": "tab:purple", "tova": "tab:brown", "lagkv": "tab:pink",
           "pyramid": "tab:olive", "zigzag": "tab:cyan"}
TASKS = [("ppl", "ppl", "perplexity / full-cache perplexity"),
         ("passkey", "accuracy", "passkey accuracy"),
         ("needle", "score", "needle score (word overlap)")]
SKIP_STYLE = ["--", ":", "-."]


def headline(rows):
    """{(model, task): {(policy, skip): {ratio: value}}} and the full-cache values."""
    out, full = defaultdict(lambda: defaultdict(dict)), {}
    for r in rows:
        task = r.get("variant") or r["task"]
        if r["task"] != "ppl" and (r.get("length") != "all" or r.get("depth") != "all"):
            continue
        metric = dict((t, m) for t, m, _ in TASKS)[r["task"]]
        v = float(r[metric])
        if r["policy"] == "full":
            full[(r["model"], task)] = v
        else:
            out[(r["model"], task)][(r["policy"], r["skip_layers"])][float(r["compression_ratio"])] = v
    return out, full


def panel(ax, series, full, task, skip, label):
    for (policy, sk), pts in sorted(series.items()):
        if sk != skip and policy != "l2":
            continue
        xs = sorted(pts)
        ys = [pts[x] / full if task == "ppl" and full else pts[x] for x in xs]
        others = sorted({s for (_, s) in series if s != skip})
        ls = "-" if sk == skip else SKIP_STYLE[others.index(sk) % len(SKIP_STYLE)]
        ax.plot([x * 100 for x in xs], ys, ls, marker="o", ms=3, color=COLOURS.get(policy, "black"),
                label=f"{policy}, skip {sk or 'none'}", clip_on=task == "ppl")
    if task == "ppl" and ax.get_ylim()[1] > 8:     # a collapsing policy would flatten the others
        ax.set_yscale("log")
    if full is not None:
        ax.axhline(1.0 if task == "ppl" else full, color="black", lw=1, alpha=0.5, label="full cache")
    if task != "ppl":      # accuracy and score are fractions: the axis shows exactly [0, 1]
        ax.set_ylim(0, 1)
    ax.set_xlabel("compression ratio (% of the KV cache evicted)")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("all_csv")
    ap.add_argument("-o", "--out", default="plots")
    ap.add_argument("--skip", default="0,1")
    ap.add_argument("--name", default="accuracy_vs_ratio", help="file name stem [accuracy_vs_ratio]")
    ap.add_argument("--title", default="quality vs KV-cache compression", help="figure title after the model name")
    a = ap.parse_args()
    a.skip = common.skip_set(a.skip)
    with open(a.all_csv, newline="") as f:
        series, full = headline(list(csv.DictReader(f)))
    models = sorted({m for m, _ in series})
    if not models:
        sys.exit(f"{a.all_csv}: no compressed runs")
    for model in models:
        labels = dict((t, l) for t, _, l in TASKS)
        variants = sorted({t for m, t in series if m == model},
                          key=lambda t: ([x for x, _, _ in TASKS].index(t.split("@")[0]), t))
        tasks = [(t, None, labels[t.split("@")[0]]) for t in variants]
        fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
        for ax, (task, _, label) in zip(axes[0], tasks):
            panel(ax, series[(model, task)], full.get((model, task)), task.split("@")[0], a.skip, label)
            ax.set_title(task)
        # the legend where most lines are (the ppl panels also carry l2's other skip sets)
        max(axes[0], key=lambda ax: len(ax.get_legend_handles_labels()[1])).legend(fontsize=7)
        fig.suptitle(f"{model}: {a.title}")
        fig.tight_layout()
        for p in common.save(fig, a.out, f"{a.name}_{model}"):
            print(p)


if __name__ == "__main__":
    main()
