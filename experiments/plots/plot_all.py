#!/usr/bin/python3
"""Render every plot that applies to the given kvlab run directories:
  trace.npz   -> fig1_attention_vs_norm (one layer/head), fig1_per_layer
  metrics.npz -> fig2_alr_heatmap, loss_vs_ratio, score_<KEY> (one per score
                 of a `correlate --score` run), and rho_per_layer and
                 sink_diagnostics (all such runs together: one line per run/model;
                 sink_diagnostics leaves out runs of kvlab builds before the sink
                 metrics)
  policy.npz  -> policy_loss (kvlab correlate --policy ...)
PNG and PDF go to OUT_DIR (default: FIRST_RUN/plots); the paths are printed.

usage: plot_all.py RUN_DIR [RUN_DIR ...] [-o OUT_DIR]     (make plots RUN="dir1 dir2")"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fig1_attention_vs_norm  # noqa: E402
import fig1_per_layer  # noqa: E402
import fig2_alr_heatmap  # noqa: E402
import loss_vs_ratio  # noqa: E402
import policy_loss  # noqa: E402
import rho_per_layer  # noqa: E402
import score_heatmap  # noqa: E402
import sink_diagnostics  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("-o", "--out", help="output directory [FIRST_RUN/plots]")
    a = ap.parse_args()
    out = a.out or os.path.join(a.runs[0], "plots")
    many = len(a.runs) > 1
    paths, correlate_runs = [], []
    for run in a.runs:
        if not os.path.isdir(run):
            sys.exit(f"{run}: not a directory")
        tag = "_" + os.path.basename(os.path.normpath(run)) if many else ""
        found = False
        if os.path.exists(os.path.join(run, "trace.npz")):
            paths += fig1_attention_vs_norm.plot(run, out, name="fig1_attention_vs_norm" + tag)
            paths += fig1_per_layer.plot(run, out, name="fig1_per_layer" + tag)
            found = True
        if os.path.exists(os.path.join(run, "metrics.npz")):
            paths += fig2_alr_heatmap.plot(run, out, name="fig2_alr_heatmap" + tag)
            paths += loss_vs_ratio.plot(run, out, name="loss_vs_ratio" + tag)
            for spec, key in score_heatmap.score_keys(run):
                paths += score_heatmap.plot_one(run, out, spec, key, f"score_{key}" + tag)
            correlate_runs.append(run)
            found = True
        if os.path.exists(os.path.join(run, "policy.npz")):
            paths += policy_loss.plot(run, out, name="policy_loss" + tag)
            found = True
        if not found:
            sys.exit(f"{run}: no trace.npz, metrics.npz or policy.npz (not a kvlab trace/correlate run)")
    if correlate_runs:
        paths += rho_per_layer.plot(correlate_runs, out)
        sink_runs = [r for r in correlate_runs if sink_diagnostics.has_sink_metrics(r)]
        if sink_runs:
            paths += sink_diagnostics.plot(sink_runs, out)
    for p in paths:
        print(p)


if __name__ == "__main__":
    main()
