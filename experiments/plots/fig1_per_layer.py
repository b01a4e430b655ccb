#!/usr/bin/python3
"""Paper Fig. 1, every layer: attention received vs key L2 norm, one panel per layer
of a `kvlab trace` run, every traced head in its own colour and every traced
sequence pooled. The first token (BOS, the attention sink when the model has one)
is drawn as a black star: in a model with sinks it sits top left, low norm and
high attention. Each panel's title gives the Spearman rho between key norm and
attention received, mean over the heads (the paper's claim: negative).

usage: fig1_per_layer.py RUN_DIR [-o OUT_DIR]"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from fig1_attention_vs_norm import received, spearman  # noqa: E402


def plot(run, out_dir, name="fig1_per_layer"):
    meta = common.load_meta(run)
    tr = common.require_npz(run, "trace.npz", "kvlab trace ...")
    layers, heads = list(tr["layers"]), list(tr["heads"])
    n_seq = tr["attn"].shape[0]
    cols = min(4, len(layers))
    rows = (len(layers) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.9 * rows), squeeze=False,
                             sharex=True, sharey=True)
    for ax in axes.flat[len(layers):]:
        ax.set_visible(False)
    cmap = plt.get_cmap("tab10")
    for li, (ax, layer) in enumerate(zip(axes.flat, layers)):
        rhos = []
        for hi, head in enumerate(heads):
            xs, ys, sink = [], [], []
            for s in range(n_seq):
                mean, _ = received(tr, s, li, hi)
                norm = tr["key_norm"][s, li, tr["kv_head"][hi]]
                ok = np.isfinite(mean) & np.isfinite(norm) & (mean > 0)
                if ok.sum() >= 3:
                    rhos.append(spearman(norm[ok], mean[ok]))
                xs.append(norm[ok][1:] if ok[0] else norm[ok])
                ys.append(mean[ok][1:] if ok[0] else mean[ok])
                if ok[0]:
                    sink.append((norm[0], mean[0]))
            ax.scatter(np.concatenate(xs), np.concatenate(ys), s=4, alpha=0.45, color=cmap(hi % 10),
                       edgecolors="none", label=f"head {head}")
            if sink:
                sx, sy = zip(*sink)
                ax.scatter(sx, sy, marker="*", s=60, color="black", edgecolors="white", linewidths=0.5,
                           label="first token (BOS)" if hi == 0 else None, zorder=3)
        rho = np.nanmean(rhos) if rhos else np.nan
        ax.set_yscale("log")
        ax.set_title(f"layer {layer}: Spearman ρ = {rho:+.2f}", fontsize=9)
        ax.grid(alpha=0.25)
        if li % cols == 0:
            ax.set_ylabel("attention received")
        if li // cols == rows - 1:
            ax.set_xlabel("key L2 norm ‖k‖")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 8), fontsize=8, markerscale=2,
               frameon=False, bbox_to_anchor=(0.5, -0.02))
    qpos = tr["query_pos"]
    fig.suptitle(f"Attention vs key norm per layer — {common.model_label(meta)}, {n_seq} sequence(s), "
                 f"{len(qpos)} quer{'y' if len(qpos) == 1 else 'ies'} each", fontsize=11)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return common.save(fig, out_dir, name)


if __name__ == "__main__":
    common.run_main(__doc__, plot, lambda ap: None, lambda a: ())
