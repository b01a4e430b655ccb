"""expected_values.py — what the trace page must show, read from trace.npz with numpy.

    python3 expected_values.py RUN_DIR OUT.json

Picks a few (layer, head, step) selections and, in each, a few tokens (the first
one, the query, one in between and, with a policy, an evicted one), the cached
token of median attention with its colour, and writes
their attention, key/value norms, policy score and eviction position as the page's
test (page_test.js) compares them: float32 values as the doubles they are, NaN as null.
"""
import json
import sys

import numpy as np


def value(x):
    return None if not np.isfinite(x) else float(np.float32(x))


def average_ranks(v):
    order = np.argsort(v, kind="stable")
    ranks = np.empty(len(v))
    sv = v[order]
    i = 0
    while i < len(v):
        j = i
        while j + 1 < len(v) and sv[j + 1] == sv[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(a, b):
    ra, rb = average_ranks(a.astype(np.float64)), average_ranks(b.astype(np.float64))
    return float(np.corrcoef(ra, rb)[0, 1])


def alr_per_n(norms, attn):
    """ALR/n (../shared/spec/methods.md §5): Y^m = attention of the m highest-norm tokens
    minus that of the m lowest-attention tokens, summed over m = 1..n, over n."""
    a = attn.astype(np.float64)
    by_norm = np.cumsum(a[np.argsort(-norms.astype(np.float64), kind="stable")])
    lowest = np.cumsum(np.sort(a))
    return float((by_norm - lowest).sum() / len(a))


def main():
    run, out = sys.argv[1], sys.argv[2]
    z = np.load(run + "/trace.npz")
    attn, key_norm, value_norm = z["attn"][0], z["key_norm"][0], z["value_norm"][0]
    layers, heads, kv_head, query_pos = z["layers"], z["heads"], z["kv_head"], z["query_pos"]
    policy = "score" in z.files
    NL, NH, Q, P = attn.shape
    picks = [(NL - 1, 0, 0), (min(3, NL - 1), NH - 1, Q // 2), (min(1, NL - 1), min(2, NH - 1), Q - 1)]
    checks = []
    for li, hi, q in picks:
        g, qpos = int(kv_head[hi]), int(query_pos[q])
        row = attn[li, hi, q]
        cached = np.flatnonzero(np.isfinite(row))
        positions = [0, qpos, int(cached[len(cached) // 2])]
        if policy:
            gone = [p for p in range(qpos) if not np.isfinite(row[p])]
            if gone:
                positions.append(gone[len(gone) // 2])
        tokens = []
        for p in sorted(set(positions)):
            t = {"pos": p, "attn": value(row[p]), "key_norm": value(key_norm[li, g, p]),
                 "value_norm": value(value_norm[li, g, p])}
            if policy:
                t["score"] = value(z["score"][0, li, g, q, p])
                t["evicted_at"] = int(z["evicted_at"][0, li, g, p])
            tokens.append(t)
        # the cached token of median attention and its colour in the strip: white to dark red
        # (green 255 -> 20) on a log scale from the row's smallest attention (at least 1e-6) to its largest
        median_pos = int(cached[np.argsort(row[cached], kind="stable")[len(cached) // 2]])
        amax = float(np.float32(row[cached].max()))
        amin = max(1e-6, min(float(np.float32(row[cached][row[cached] > 0].min())), amax))
        t = np.log(float(np.float32(row[median_pos])) / amin) / np.log(amax / amin) if amax > amin else 1.0
        median_green = 255 - 235 * min(1.0, max(0.0, t))
        c = {"li": li, "hi": hi, "q": q, "layer": int(layers[li]), "head": int(heads[hi]), "query_pos": qpos,
             "tokens": tokens, "spearman": spearman(key_norm[li, g, cached], row[cached]),
             "median_pos": median_pos, "median_attn": value(row[median_pos]), "max_attn": value(np.nanmax(row)),
             "median_green": float(median_green),
             "alr_per_n": alr_per_n(key_norm[li, g, cached], row[cached]),
             "first_attn": value(row[0]) if 0 in cached else None,
             "first_norm_ratio": float(key_norm[li, g, 0] / np.median(key_norm[li, g, cached].astype(np.float64)))
                                 if 0 in cached else None,
             # the shortest and the longest key of this layer and KV head seen by this query, away
             # from the outlined columns of the first token and the query
             "short_key_pos": 2 + int(np.nanargmin(key_norm[li, g, 2:qpos - 1])),
             "long_key_pos": 2 + int(np.nanargmax(key_norm[li, g, 2:qpos - 1])),
             "key_min": value(np.nanmin(key_norm[li, g])), "key_max": value(np.nanmax(key_norm[li, g]))}
        c["short_key"], c["long_key"] = value(key_norm[li, g, c["short_key_pos"]]), value(key_norm[li, g, c["long_key_pos"]])
        if policy:
            c["kv_bytes"] = int(z["kv_bytes"][0, q, 0])
        checks.append(c)
    # the screenshot: the layer and head with the most attention on the first token at the last step
    first = attn[:, :, Q - 1, 0]
    li, hi = np.unravel_index(np.nanargmax(np.nan_to_num(first, nan=-1.0)), first.shape)
    with open(out, "w") as f:
        kv_drops = int((z["kv_bytes"][0, :, 1] < z["kv_bytes"][0, :, 0]).sum()) if policy else 0   # steps that evict
        json.dump({"n_positions": int(P), "n_decode_steps": int(P - z["n_prompt"]), "kv_drops": kv_drops, "checks": checks,
                   "screenshot": {"li": int(li), "hi": int(hi), "hover": 0}}, f)


if __name__ == "__main__":
    main()
