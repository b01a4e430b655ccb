"""Shared helpers for the kvlab plots: read a run directory, save PNG + PDF.

A run directory is what `kvlab trace` or `kvlab correlate` wrote:
  meta.json     command line, model, knobs (always; written last)
  trace.npz     kvlab trace: attn [S,NL,NH,Q,P], key_norm [S,NL,KV,P], ...
  metrics.npz   kvlab correlate: <metric>_mean/_std/_n [L,H] or [L,H,9], ratios [9]
The scripts read nothing else (no project code, no model files).
Run them with Debian's /usr/bin/python3 (python3-matplotlib, python3-numpy)."""
import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ORDER_STYLE = {   # eviction order -> (label, colour, line style)
    "lownorm": ("keep low norm (L2)", "tab:blue", "-"),
    "highnorm": ("keep high norm", "tab:red", "--"),
    "random": ("random", "tab:gray", ":"),
    "oracle": ("oracle (keep top attention)", "black", "-."),
}


def load_meta(run):
    path = os.path.join(run, "meta.json")
    if not os.path.exists(path):
        sys.exit(f"{run}: no meta.json (not a finished kvlab run directory)")
    with open(path) as f:
        return json.load(f)


def load_npz(run, name):
    path = os.path.join(run, name)
    if not os.path.exists(path):
        return None
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def require_npz(run, name, command):
    """load_npz, or exit with "RUN: no NAME (run `COMMAND -o RUN`)"."""
    z = load_npz(run, name)
    if z is None:
        sys.exit(f"{run}: no {name} (run `{command} -o {run}`)")
    return z


def model_label(meta):
    m = meta.get("model", {})
    path = m.get("path", "?").rstrip("/")
    name = os.path.basename(path)
    if name.endswith(".bin"):
        name = name[:-4]
    return name


def run_label(meta):
    k = meta.get("knobs", {})
    bits = [model_label(meta)]
    if "query" in k:
        bits.append(f"query {k['query']}")
    if "chunks" in k and "chunk" in k:
        bits.append(f"{k['chunks']} x {k['chunk']} tokens")
    return ", ".join(bits)


def skip_set(arg):
    """A --skip argument as collect.py's skip_layers column spells it: "none"
    (no skipped layers) is the empty string there."""
    return "" if arg == "none" else arg


def save(fig, out_dir, name):
    """Write out_dir/name.png (150 dpi) and out_dir/name.pdf; return the paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        p = os.path.join(out_dir, f"{name}.{ext}")
        tmp = p + ".tmp." + ext          # keep the extension so matplotlib picks the format
        fig.savefig(tmp, dpi=150, bbox_inches="tight")
        os.replace(tmp, p)
        paths.append(p)
    plt.close(fig)
    return paths


def finish(fig, out_dir, name, title):
    """The figure's title (fontsize 10), tight layout, then save()."""
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save(fig, out_dir, name)


def run_main(doc, plot, add_args=None, plot_args=lambda a: ()):
    """The command line of a one-run figure: RUN [options] [-o OUT_DIR]. add_args(ap)
    adds the options; plot(RUN, OUT_DIR, *plot_args(parsed)) draws; its paths are printed."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    if add_args:
        add_args(ap)
    ap.add_argument("-o", "--out", help="output directory [RUN/plots]")
    a = ap.parse_args()
    for p in plot(a.run, a.out or os.path.join(a.run, "plots"), *plot_args(a)):
        print(p)


def ratios_pct(metrics):
    return np.round(metrics["ratios"] * 100).astype(int)
