#!/usr/bin/python3
"""Decode speed and KV memory against context length, the full cache against
compressed ones: what eviction buys at decode time, measured.

Input: the JSON of `kvlab bench --context 512,2048,4096,8192 --json FILE` (its
"context_sweep" rows: context, cache, decode_tok_s_median/_min/_max,
kv_bytes_in_use, achieved_gb_s, frac_of_bandwidth, config, threads), one file per
model. Two panels per configuration (weight dtype / attention / KV dtype, threads):
decode tokens/s against the context (min..max over the repeats as a band), and
the KV cache in MiB against the context, one line per cache (full in black).
One figure per input file and configuration: OUT/decode_vs_context_NAME.png/.pdf,
NAME = the JSON file's name without .json, plus the configuration when the
file has several.

usage: decode_vs_context.py BENCH_JSON [BENCH_JSON ...] [-o OUT_DIR] [--title TEXT]
Run with Debian's /usr/bin/python3 (python3-matplotlib, python3-numpy)."""
import argparse
import json
import os
import re
import sys
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (Agg backend, save())
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

POLICY_COLOUR = {"full": "black", "l2": "tab:blue", "window": "tab:orange", "h2o": "tab:green",
                 "snapkv": "tab:purple", "tova": "tab:brown", "random": "tab:gray"}


def load_rows(path):
    with open(path) as f:
        doc = json.load(f)
    rows = doc.get("context_sweep")
    if not rows:
        sys.exit(f"{path}: no context_sweep rows (made by kvlab bench --context ...?)")
    return doc, rows


def style(row):
    """Colour by policy; solid for the lighter compression, dashed for the heavier."""
    colour = POLICY_COLOUR.get(row["policy"], None)
    dash = "-" if row["policy"] == "full" or row["compression"] <= 0.5 else "--"
    return colour, dash


def plot_config(name, model, config, rows, out_dir, title):
    by_cache = defaultdict(list)
    for r in rows:
        by_cache[r["cache"]].append(r)
    fig, (ax_speed, ax_mem) = plt.subplots(1, 2, figsize=(10, 4))
    order = sorted(by_cache, key=lambda c: (c != "full", c))
    for cache in order:
        pts = sorted(by_cache[cache], key=lambda r: r["context"])
        ctx = np.array([r["context"] for r in pts])
        tps = np.array([r["decode_tok_s_median"] for r in pts])
        lo = np.array([r["decode_tok_s_min"] for r in pts])
        hi = np.array([r["decode_tok_s_max"] for r in pts])
        mib = np.array([r["kv_bytes_in_use"] for r in pts]) / 2**20
        colour, dash = style(pts[0])
        label = "full cache" if cache == "full" else f"{pts[0]['policy']} {100 * pts[0]['compression']:.0f}% evicted"
        lw = 2.0 if cache == "full" else 1.4
        ax_speed.plot(ctx, tps, dash, color=colour, lw=lw, marker="o", ms=3, label=label)
        if np.any(hi > lo):
            ax_speed.fill_between(ctx, lo, hi, color=colour, alpha=0.12, lw=0)
        ax_mem.plot(ctx, mib, dash, color=colour, lw=lw, marker="o", ms=3, label=label)
    for ax in (ax_speed, ax_mem):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context length (tokens cached before decoding)")
        ax.grid(True, alpha=0.3)
    ax_speed.set_ylabel("decode speed (tokens/s, median)")
    ax_speed.set_ylim(bottom=0)
    ax_mem.set_ylabel("KV cache in use (MiB)")
    ax_mem.set_yscale("log")
    ax_mem.legend(fontsize=8, loc="upper left")
    threads = rows[0]["threads"]
    head = title or f"{model}: decode vs context, {config}, {threads} thread(s)"
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    return common.finish(fig, out_dir, f"decode_vs_context_{slug}", head)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", nargs="+", help="kvlab bench --context ... --json FILE outputs")
    ap.add_argument("-o", "--out", default="build/bench/plots", help="output directory [build/bench/plots]")
    ap.add_argument("--title", help="figure title (default: model, configuration, threads)")
    a = ap.parse_args()
    for path in a.json:
        doc, rows = load_rows(path)
        model = os.path.basename(os.path.normpath(doc.get("model", "?")))
        groups = defaultdict(list)
        for r in rows:
            groups[(r["config"], r["threads"])].append(r)
        base = os.path.splitext(os.path.basename(path))[0]
        for (config, threads), g in groups.items():
            name = base if len(groups) == 1 else f"{base}_{config}_{threads}t"
            for p in plot_config(name, model, config, g, a.out, a.title):
                print(p)


if __name__ == "__main__":
    main()
