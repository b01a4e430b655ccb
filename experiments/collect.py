#!/usr/bin/env python3
"""collect.py — merge every finished kvlab evaluation run directory under the given
roots into one tidy CSV: one row per row of each run's summary.csv, tagged with the
run's task, model, policy, compression ratio, skip-layer set and schedule.

A run directory is finished when it holds meta.json (kvlab writes it last); unfinished
ones are listed on stderr and left out. Standard library only (any python3).

usage: collect.py ROOT [ROOT ...] [-o all.csv] [--positions positions.csv] [--table]

  -o FILE            the tidy CSV [stdout]
  --positions FILE   also merge the per-position perplexity of every ppl run
                     (positions.csv: pos, cum_ppl, cum_ppl_ref, ...) for ppl_vs_length.py
  --table            print a Markdown table of the headline numbers on stderr

Columns: run, task, variant (the sweep's task directory, e.g. ppl@step), model, policy, budget_kind, budget, compression_ratio (fraction
removed; 1 - keep for --keep-ratio), skip_layers ("0,1"), schedule, schedule_n,
positions, then the summary's own columns (ppl: ppl, ppl_ref, kl, ...; passkey:
length, depth, trials, accuracy, partial; needle: length, depth, cells, score)."""
import argparse
import csv
import json
import os
import sys

TAGS = ["run", "task", "variant", "model", "policy", "budget_kind", "budget", "compression_ratio",
        "skip_layers", "schedule", "schedule_n", "positions", "policy_params", "budget_alloc"]


def find_runs(roots):
    """(finished, unfinished) run directories: those with config.json (kvlab evaluations)."""
    done, partial = [], []
    for root in roots:
        if not os.path.isdir(root):
            sys.exit(f"collect.py: {root}: not a directory")
        for d, subdirs, files in os.walk(root):
            subdirs.sort()
            if "config.json" in files and "log" in subdirs:
                (done if "meta.json" in files and "summary.csv" in files else partial).append(d)
    return sorted(done), sorted(partial)


def model_name(path):
    name = os.path.basename(path.rstrip("/"))
    return name[:-4] if name.endswith(".bin") else name


def tags(run):
    with open(os.path.join(run, "meta.json")) as f:
        meta = json.load(f)
    cfg = meta.get("config", {})
    pol = cfg.get("policy") or meta.get("policy") or {}
    budget = pol.get("budget") or {}
    kind, value = budget.get("kind", ""), budget.get("value", "")
    ratio = value if kind == "compression_ratio" else (1 - value if kind == "keep_ratio" else "")
    if pol.get("policy") == "full":
        ratio = 0.0
    if isinstance(ratio, float):
        ratio = round(ratio, 6)
    task = cfg.get("command", meta.get("command", ""))
    parent = os.path.basename(os.path.dirname(os.path.abspath(run)))   # sweep.sh: MODEL/TASK[@VARIANT]/POINT
    return {
        "run": run,
        "task": task,
        "variant": parent if parent == task or parent.startswith(task + "@") else task,
        "model": model_name(cfg.get("model", {}).get("path", "")),
        "policy": pol.get("policy", ""),
        "budget_kind": kind,
        "budget": value,
        "compression_ratio": ratio,
        "skip_layers": ",".join(str(s) for s in pol.get("skip_layers", [])),
        "schedule": pol.get("schedule", ""),
        "schedule_n": pol.get("schedule_n", ""),
        "positions": pol.get("positions", ""),
        # lagkv vs lagkv:select=global, zigzag's impl=...: the resolved parameters
        "policy_params": ",".join(f"{k}={v}" for k, v in (pol.get("params") or {}).items()),
        "budget_alloc": pol.get("budget_alloc", "uniform"),
    }


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def merge(runs, name):
    """Rows of RUN/name for every run, tagged; the union of the columns."""
    rows, cols = [], list(TAGS)
    for run in runs:
        path = os.path.join(run, name)
        if not os.path.exists(path):
            continue
        t = tags(run)
        for r in read_csv(path):
            for k in r:
                if k not in cols:
                    cols.append(k)
            rows.append({**t, **r})
    return rows, cols


def write(rows, cols, path):
    out = open(path, "w", newline="") if path else sys.stdout
    w = csv.DictWriter(out, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    if path:
        out.close()


def fnum(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def table(rows):
    """Headline numbers per (model, task, skip, policy) x ratio, Markdown."""
    head = {}
    for r in rows:
        if r["task"] == "ppl":
            v = fnum(r.get("ppl"))
        elif r.get("length") == "all" and r.get("depth") == "all":
            v = fnum(r.get("accuracy", r.get("score")))
        else:
            continue
        key = (r["model"], r["variant"], r["skip_layers"] if r["policy"] != "full" else "-", r["policy"])
        head.setdefault(key, {})[fnum(r["compression_ratio"])] = v
    ratios = sorted({x for d in head.values() for x in d})
    lines = ["| model | task | skip | policy | " + " | ".join(f"{x:g}" for x in ratios) + " |",
             "|---|---|---|---|" + "---|" * len(ratios)]
    for key in sorted(head):
        vals = [head[key].get(x) for x in ratios]
        lines.append("| " + " | ".join(key) + " | " +
                     " | ".join("" if v is None else f"{v:.4g}" for v in vals) + " |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("roots", nargs="+")
    ap.add_argument("-o", "--output")
    ap.add_argument("--positions")
    ap.add_argument("--table", action="store_true")
    a = ap.parse_args()
    runs, partial = find_runs(a.roots)
    for p in partial:
        print(f"collect.py: {p}: unfinished (no meta.json), left out", file=sys.stderr)
    rows, cols = merge(runs, "summary.csv")
    write(rows, cols, a.output)
    if a.positions:
        prow, pcols = merge([r for r in runs if tags(r)["task"] == "ppl"], "positions.csv")
        write(prow, pcols, a.positions)
    print(f"collect.py: {len(runs)} runs, {len(rows)} rows" + (f" -> {a.output}" if a.output else ""),
          file=sys.stderr)
    if a.table:
        print(table(rows), file=sys.stderr)


if __name__ == "__main__":
    main()
