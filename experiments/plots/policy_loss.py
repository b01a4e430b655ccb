#!/usr/bin/python3
"""Attention loss of an eviction policy against the full cache, from a
`kvlab correlate --policy ...` run (policy.npz).

Left: per decode step, the full-cache attention mass on the tokens the policy
evicted (mean over chunks, layers and heads; band = +-1 std), next to the
oracle that keeps the same number of tokens by attention. Right: the same per
layer (mean over heads and steps), with the fraction of the cache kept.

usage: policy_loss.py RUN_DIR [-o OUT_DIR]"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402


def policy_label(meta):
    p = meta.get("policy", {})
    if not isinstance(p, dict):
        return str(p)
    label = p.get("policy", "?")
    b = p.get("budget")
    if isinstance(b, dict):
        label += f", {b.get('kind', '')} {b.get('value', '')}"
    if p.get("schedule"):
        label += f", schedule {p['schedule']}"
    return label


def plot(run, out_dir, name="policy_loss"):
    meta = common.load_meta(run)
    z = common.require_npz(run, "policy.npz", "kvlab correlate --policy ...")
    steps = np.arange(1, len(z["steps_attention_loss_mean"]) + 1)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, label, colour in (("attention_loss", "policy", "tab:blue"), ("oracle_loss", "oracle, same budget", "black")):
        m, s = z[f"steps_{key}_mean"], np.nan_to_num(z[f"steps_{key}_std"])
        a1.plot(steps, m, color=colour, label=label)
        a1.fill_between(steps, np.clip(m - s, 0, 1), np.clip(m + s, 0, 1), color=colour, alpha=0.12, lw=0)
    for n in range(500, len(steps) + 1, 500):
        a1.axvline(n, color="0.8", lw=0.6)
    a1.set_xlabel("decode step")
    a1.set_ylabel("attention mass on evicted tokens")
    a1.set_ylim(0, 1)
    common.band_legend(a1, "band: ± 1 std over layers × heads", fontsize=8)
    a1.set_title("attention loss per step (mean over layers × heads)")
    L = z["attention_loss_mean"].shape[0]
    x = np.arange(L)
    a2.bar(x - 0.2, np.nanmean(z["attention_loss_mean"], axis=1), 0.4, label="policy", color="tab:blue")
    a2.bar(x + 0.2, np.nanmean(z["oracle_loss_mean"], axis=1), 0.4, label="oracle", color="0.3")
    a2.plot(x, np.nanmean(z["kept_fraction_mean"], axis=1), "o-", color="tab:green", ms=3, label="fraction kept")
    a2.set_xticks(x)
    a2.set_xlabel("layer")
    a2.set_ylim(0, 1.05)
    a2.legend(fontsize=8)
    a2.set_title("per layer (mean over heads and steps)")
    return common.finish(fig, out_dir, name, f"{common.model_label(meta)} — {policy_label(meta)}")


if __name__ == "__main__":
    common.run_main(__doc__, plot)
