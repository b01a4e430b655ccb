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


def _labelled_ticks(axis, lo, hi):
    """The tick labels matplotlib will print on an axis inside [lo, hi] (after a draw)."""
    ticks = axis.get_major_ticks() + axis.get_minor_ticks()
    lo, hi = lo * (1 - 1e-9), hi * (1 + 1e-9)
    return [t for t in ticks if t.label1.get_visible() and t.label1.get_text() and lo <= t.get_loc() <= hi]


def _labels_hidden(axis):
    """Tick labels switched off on purpose (an inner panel sharing its axis with one that
    shows them)."""
    return not any(t.label1.get_visible() for t in axis.get_major_ticks())


def readable_log_axes(fig):
    """A log axis spanning less than a decade may show one labelled tick (or none): then
    a reader cannot tell its scale. Give such an axis 3-6 plainly written ticks."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter
    fig.canvas.draw()
    for ax in fig.axes:
        for axis, lim in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            if axis.get_scale() != "log":
                continue
            lo, hi = sorted(lim)
            if _labels_hidden(axis) or len(_labelled_ticks(axis, lo, hi)) >= 2:
                continue
            ticks = [t for t in MaxNLocator(nbins=5, min_n_ticks=3).tick_values(lo, hi) if lo <= t <= hi and t > 0]
            if len(ticks) < 2:
                ticks = list(np.geomspace(lo, hi, 4))
            axis.set_major_locator(FixedLocator(ticks))
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
            axis.set_minor_formatter(NullFormatter())


def band_legend(ax, text, **legend_kw):
    """The axes' legend with one more entry: a grey patch saying what the shaded bands are."""
    from matplotlib.patches import Patch
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Patch(facecolor="0.5", alpha=0.3, lw=0))
    labels.append(text)
    ax.legend(handles, labels, **legend_kw)


def check_figure(fig):
    """What every figure must satisfy (tests set KVLAB_PLOT_CHECK=1; raises AssertionError):
    a log axis shows at least 2 labelled ticks; an accuracy axis stays within [0, 1] (or
    [0, 100] for percent); shaded bands are explained in a legend entry or the title."""
    from matplotlib.collections import PolyCollection
    fig.canvas.draw()
    for ax in fig.axes:
        for axis, lim in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            if axis.get_scale() == "log" and not _labels_hidden(axis):
                lo, hi = sorted(lim)
                n = len(_labelled_ticks(axis, lo, hi))
                assert n >= 2, f"'{ax.get_title()}': a log axis with {n} labelled tick(s) over [{lo:g}, {hi:g}]"
        if "accuracy" in ax.get_ylabel():
            lo, hi = ax.get_ylim()
            top = 100.5 if "%" in ax.get_ylabel() else 1.05
            assert lo >= 0 and hi <= top, f"'{ax.get_ylabel()}' axis spans [{lo:g}, {hi:g}], beyond [0, {top:g}]"
        if any(isinstance(c, PolyCollection) for c in ax.collections):
            legend = ax.get_legend()
            words = [t.get_text() for t in legend.get_texts()] if legend else []
            words += [ax.get_title(), fig._suptitle.get_text() if fig._suptitle else ""]
            assert any("band" in w or "±" in w for w in words), \
                f"'{ax.get_title()}': shaded bands with no legend entry or title saying what they are"


def save(fig, out_dir, name):
    """Write out_dir/name.png (150 dpi) and out_dir/name.pdf; return the paths."""
    readable_log_axes(fig)
    if os.environ.get("KVLAB_PLOT_CHECK"):
        check_figure(fig)
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
