#!/usr/bin/python3
"""Paper Fig. 7: attention loss vs compression ratio for the eviction orders
keep-low-norm (the L2 policy), keep-high-norm, random and the oracle (keep the
highest attention), from a `kvlab correlate` run.

Left: attention loss = the attention mass of the measured query on the tokens
evicted, at compression ratio r (fraction of the cache removed), averaged over
the layers (minus --skip-layers) and heads; band = 25th..75th percentile over
those (layer, head). Right: overlap of each kept set with the oracle's.

usage: loss_vs_ratio.py RUN_DIR [--skip-layers 0,1] [-o OUT_DIR]"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402


def curves(m, key, layers):
    c = m[key][layers]                        # [L', H, 9]
    c = c.reshape(-1, c.shape[-1])
    c = c[np.all(np.isfinite(c), axis=1)]
    return c.mean(axis=0), np.percentile(c, 25, axis=0), np.percentile(c, 75, axis=0)


def plot(run, out_dir, skip=(), name="loss_vs_ratio"):
    meta = common.load_meta(run)
    m = common.require_npz(run, "metrics.npz", "kvlab correlate ...")
    L = m["spearman_mean"].shape[0]
    layers = [l for l in range(L) if l not in skip]
    if not layers:
        sys.exit("--skip-layers leaves no layer")
    x = common.ratios_pct(m)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.3))
    for order, (label, colour, ls) in common.ORDER_STYLE.items():
        mean, lo, hi = curves(m, f"loss_{order}_mean", layers)
        a1.plot(x, mean, ls, color=colour, marker="o", ms=3, label=label)
        a1.fill_between(x, lo, hi, color=colour, alpha=0.12, lw=0)
        if order != "oracle":
            mean, lo, hi = curves(m, f"overlap_{order}_mean", layers)
            a2.plot(x, mean, ls, color=colour, marker="o", ms=3, label=label)
            a2.fill_between(x, lo, hi, color=colour, alpha=0.12, lw=0)
    a1.set_xlabel("compression ratio (% of the cache evicted)")
    a1.set_ylabel("attention loss (mass on evicted tokens)")
    a1.set_ylim(0, 1)
    common.band_legend(a1, "band: 25th-75th percentile over (layer, head)", fontsize=8)
    a1.set_title("attention loss vs compression")
    a2.set_xlabel("compression ratio (% of the cache evicted)")
    a2.set_ylabel("|kept ∩ oracle kept| / kept")
    a2.set_ylim(0, 1.02)
    common.band_legend(a2, "band: 25th-75th percentile over (layer, head)", fontsize=8)
    a2.set_title("overlap with the oracle's kept set")
    skipped = f", layers {sorted(skip)} skipped" if skip else ""
    return common.finish(fig, out_dir, name, f"{common.run_label(meta)}{skipped}")


def add_args(ap):
    ap.add_argument("--skip-layers", default="", help="comma-separated layers to leave out (the paper: 0,1)")


if __name__ == "__main__":
    common.run_main(__doc__, plot, add_args, lambda a: ({int(s) for s in a.skip_layers.split(",") if s.strip()},))
