#!/usr/bin/python3
"""Attention sinks per layer, one line per run (model), from `kvlab correlate` runs.

Three panels, over the layers:
  attention on the first token   the mean over heads of each head's mean
                                 attention on the first token (BOS); dots: the
                                 heads; dotted line: the 0.3 threshold
  share of heads > 0.3           Gu et al.'s Sink_1^0.3 (arXiv 2410.10781),
                                 per layer
  first key norm / median        the first token's key norm over the median key
                                 norm, mean over KV heads; dots: the KV heads;
                                 below 1 = the sink's key is short (the L2
                                 paper's mechanism)
The x axis is the relative depth (layer / (layers - 1)) when models of
different depths are compared, the layer index otherwise.

usage: sink_diagnostics.py RUN_DIR [RUN_DIR ...] [-o OUT_DIR]"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

SINK_THRESHOLD = 0.3
MEMBERS = ("sink_first_token_attn", "sink_head_share", "sink_key_norm_ratio",
           "first_token_attn_mean", "first_key_norm_ratio_mean")


def has_sink_metrics(run):
    """Does RUN's metrics.npz have the sink members (kvlab builds before them did not)?"""
    m = common.load_npz(run, "metrics.npz")
    return m is not None and all(k in m for k in MEMBERS)


def plot(runs, out_dir, name="sink_diagnostics"):
    data = []
    for run in runs:
        meta = common.load_meta(run)
        m = common.require_npz(run, "metrics.npz", "kvlab correlate ...")
        missing = [k for k in MEMBERS if k not in m]
        if missing:
            sys.exit(f"{run}: metrics.npz has no {missing[0]} (written by an older kvlab: run correlate again)")
        data.append((meta, m))
    depths = {m["sink_head_share"].shape[0] for _, m in data}
    relative = len(depths) > 1
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    ax_attn, ax_share, ax_norm = axes
    for i, (meta, m) in enumerate(data):
        L = m["sink_head_share"].shape[0]
        x = np.arange(L) / max(L - 1, 1) if relative else np.arange(L)
        colour, label = f"C{i}", common.run_label(meta)
        heads = m["first_token_attn_mean"]                     # [L, H]
        ax_attn.plot(x, m["sink_first_token_attn"], "-o", color=colour, ms=4, label=label)
        for h in range(heads.shape[1]):
            ax_attn.scatter(x, heads[:, h], color=colour, s=6, alpha=0.35, lw=0)
        ax_share.plot(x, m["sink_head_share"], "-o", color=colour, ms=4, label=label)
        ratio = m["first_key_norm_ratio_mean"]                  # [L, H]: the heads of a KV group repeat it
        ax_norm.plot(x, m["sink_key_norm_ratio"], "-o", color=colour, ms=4, label=label)
        for h in range(ratio.shape[1]):
            ax_norm.scatter(x, ratio[:, h], color=colour, s=6, alpha=0.35, lw=0)
    ax_attn.axhline(SINK_THRESHOLD, color="black", lw=0.6, ls=":")
    ax_norm.axhline(1, color="black", lw=0.6)
    for ax in axes:
        ax.set_xlabel("relative depth" if relative else "layer")
        if not relative:
            ax.set_xticks(range(max(depths)))
    ax_attn.set_ylim(bottom=0)
    ax_share.set_ylim(-0.03, 1.03)
    ax_norm.set_ylim(bottom=0)
    ax_attn.set_ylabel("attention on the first token")
    ax_attn.set_title("mean over heads (dots: heads, dotted: 0.3)", fontsize=9)
    ax_share.set_ylabel("share of heads with attention > 0.3")
    ax_share.set_title("sink heads (Gu et al. Sink$_1^{0.3}$ per layer)", fontsize=9)
    ax_norm.set_ylabel("first key norm / median key norm")
    ax_norm.set_title("mean over KV heads (dots: heads)", fontsize=9)
    ax_share.legend(fontsize=8, loc="best")
    return common.finish(fig, out_dir, name, "Attention sinks per layer (kvlab correlate)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("-o", "--out", help="output directory [FIRST_RUN/plots]")
    a = ap.parse_args()
    for p in plot(a.runs, a.out or os.path.join(a.runs[0], "plots")):
        print(p)


if __name__ == "__main__":
    main()
