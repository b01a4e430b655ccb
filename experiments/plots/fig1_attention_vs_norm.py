#!/usr/bin/python3
"""Paper Fig. 1: attention vs key norm for one layer/head of a `kvlab trace` run.

Left: every cached token as a point, x = the L2 norm of its key, y = the mean
attention the recorded queries pay it (log scale) -- the paper's claim is a
negative relation: low-norm keys draw the attention.
Right: the attention map (recorded queries x key positions, log colour scale,
white = not visible to that query) above the key-norm strip of the same positions.

usage: fig1_attention_vs_norm.py RUN_DIR [--layer L] [--head H] [--seq S] [-o OUT_DIR]
Without --layer/--head the traced (layer, head) with the most negative Spearman
rho between key norm and mean attention is shown."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from matplotlib import colors  # noqa: E402
from matplotlib import gridspec  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402


def ranks(x):
    r = np.empty(len(x))
    r[np.argsort(x, kind="stable")] = np.arange(1, len(x) + 1)
    return r


def spearman(x, y):
    if len(x) < 3:
        return np.nan
    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return np.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def received(tr, seq, li, hi):
    """Mean attention each position receives from the recorded queries that see it."""
    att = tr["attn"][seq, li, hi]                     # [Q, P]
    seen = np.isfinite(att)
    count = seen.sum(axis=0)
    total = np.where(seen, att, 0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return mean, att


def pick(tr, seq):
    best, best_rho = (0, 0), np.inf
    for li in range(tr["attn"].shape[1]):
        for hi in range(tr["attn"].shape[2]):
            mean, _ = received(tr, seq, li, hi)
            norm = tr["key_norm"][seq, li, tr["kv_head"][hi]]
            ok = np.isfinite(mean) & np.isfinite(norm)
            rho = spearman(norm[ok], mean[ok])
            if np.isfinite(rho) and rho < best_rho:
                best, best_rho = (li, hi), rho
    return best


def plot(run, out_dir, layer=None, head=None, seq=0, name="fig1_attention_vs_norm"):
    meta = common.load_meta(run)
    tr = common.require_npz(run, "trace.npz", "kvlab trace ...")
    layers, heads = list(tr["layers"]), list(tr["heads"])
    if seq >= tr["attn"].shape[0]:
        sys.exit(f"--seq {seq}: the trace has {tr['attn'].shape[0]} sequence(s)")
    if layer is None or head is None:
        li, hi = pick(tr, seq)
        li = layers.index(layer) if layer is not None else li
        hi = heads.index(head) if head is not None else hi
    else:
        if layer not in layers or head not in heads:
            sys.exit(f"layer {layer} / head {head} not traced (layers {layers}, heads {heads})")
        li, hi = layers.index(layer), heads.index(head)
    kv = int(tr["kv_head"][hi])
    mean, att = received(tr, seq, li, hi)
    norm = tr["key_norm"][seq, li, kv]
    qpos, n_prompt = tr["query_pos"], int(tr["n_prompt"])
    ok = np.isfinite(mean) & np.isfinite(norm) & (mean > 0)
    rho = spearman(norm[ok], mean[ok])

    fig = plt.figure(figsize=(13, 5.2))
    gs = gridspec.GridSpec(2, 3, width_ratios=[1, 1.5, 0.04], height_ratios=[1, 0.09],
                           wspace=0.35, hspace=0.08)
    ax = fig.add_subplot(gs[:, 0])
    pos = np.arange(len(norm))
    sc = ax.scatter(norm[ok], mean[ok], c=pos[ok], cmap="viridis", s=12, alpha=0.8, edgecolors="none")
    if ok[0]:
        ax.annotate("BOS", (norm[0], mean[0]), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("mean attention received")
    ax.text(0.02, 0.02, f"layer {layers[li]}, head {heads[hi]} (KV head {kv})\nSpearman ρ = {rho:+.2f}",
            transform=ax.transAxes, fontsize=9, va="bottom", bbox=dict(fc="white", ec="0.7", alpha=0.8))
    ax.set_xlabel("(a) key L2 norm  ‖k‖")
    cb = fig.colorbar(sc, ax=ax, pad=0.02, location="top", shrink=0.6, aspect=30)
    cb.set_label("token position", fontsize=8)
    cb.ax.tick_params(labelsize=7)

    axm = fig.add_subplot(gs[0, 1])
    floor = np.nanmin(att[att > 0]) if np.any(att > 0) else 1e-6
    im = axm.imshow(np.where(att > 0, att, np.nan), aspect="auto", interpolation="nearest", cmap="magma",
                    norm=colors.LogNorm(vmin=max(floor, 1e-5), vmax=1.0),
                    extent=(-0.5, att.shape[1] - 0.5, len(qpos) - 0.5, -0.5))
    step = max(1, len(qpos) // 6)
    axm.set_yticks(range(0, len(qpos), step))
    axm.set_yticklabels([str(q) for q in qpos[::step]])
    axm.set_ylabel("query position")
    axm.set_title("(b) attention map (white: not visible)")
    axm.tick_params(labelbottom=False)
    if n_prompt < att.shape[1]:
        axm.axvline(n_prompt - 0.5, color="cyan", lw=0.8, ls="--")
    fig.colorbar(im, cax=fig.add_subplot(gs[0, 2])).set_label("attention")

    axs = fig.add_subplot(gs[1, 1], sharex=axm)
    ims = axs.imshow(norm[None, :], aspect="auto", cmap="viridis", interpolation="nearest",
                     extent=(-0.5, len(norm) - 0.5, 0, 1))
    axs.set_yticks([])
    axs.set_xlabel("key position   (strip: key L2 norm)")
    fig.colorbar(ims, cax=fig.add_subplot(gs[1, 2])).set_label("‖k‖", fontsize=7)
    fig.suptitle(f"Attention vs key norm — {common.model_label(meta)}, sequence {seq}, "
                 f"{len(qpos)} queries, {len(norm)} positions", fontsize=11)
    return common.save(fig, out_dir, name)


def add_args(ap):
    ap.add_argument("--layer", type=int)
    ap.add_argument("--head", type=int)
    ap.add_argument("--seq", type=int, default=0)


if __name__ == "__main__":
    common.run_main(__doc__, plot, add_args, lambda a: (a.layer, a.head, a.seq))
