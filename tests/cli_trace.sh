#!/usr/bin/env bash
# cli_trace.sh — `kvlab trace` and `kvlab correlate` end to end on stories260K,
# then every plot of experiments/plots from those runs (PNG + PDF checked by
# magic bytes and size). Run from the repository root; KVLAB=path overrides ./kvlab.
# The plot part is skipped (with a message) when /usr/bin/python3 lacks matplotlib.
set -u
KVLAB=${KVLAB:-./kvlab}
SHARED=${KVLAB_SHARED:-../shared}
MODEL=$SHARED/models/stories260k/stories260K.bin
TEXT=$SHARED/data/tinystories-valid-head.txt
PY=/usr/bin/python3
export KVLAB_PLOT_CHECK=1   # every figure drawn is checked (experiments/plots/common.py check_figure)
passed=0; failed=0
tmp=$(mktemp -d /tmp/kvlab_cli_trace.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

ok()   { passed=$((passed + 1)); echo "ok    $1"; }
fail() { failed=$((failed + 1)); echo "FAIL  $1"; [ $# -gt 1 ] && echo "      $2"; }
check() { local name=$1; shift; if "$@" >"$tmp/out" 2>&1; then ok "$name"; else fail "$name" "$(tail -n 3 "$tmp/out")"; fi; }

# a bad invocation: non-zero exit, exactly one line on stderr, naming the option
check_error() {
    local name=$1 want=$2; shift 2
    "$@" >/dev/null 2>"$tmp/err"; local rc=$?
    local lines; lines=$(wc -l <"$tmp/err")
    if [ $rc -ne 0 ] && [ "$lines" -eq 1 ] && grep -q -- "$want" "$tmp/err"; then ok "$name"
    else fail "$name" "rc=$rc, $lines line(s): $(head -c 300 "$tmp/err")"; fi
}

# ---- trace --------------------------------------------------------------------------
T=$tmp/trace
check "trace -f (2 chunks x 64, --gen 8, layers 0,2,4, heads 1,3)" \
    "$KVLAB" trace -m "$MODEL" -f "$TEXT" --chunk 64 --chunks 2 --gen 8 --layers 0,2,4 --heads 1,3 -o "$T"
check "trace wrote trace.npz (a zip) and meta.json, no temporary files left" \
    bash -c "[ \"\$(head -c 2 '$T/trace.npz')\" = PK ] && grep -q '\"command\":[[:space:]]*\"trace\"' '$T/meta.json' && ! ls '$T' | grep -q tmp"
T2=$tmp/trace_prompt
check "trace -p --steps decode --every 2 --heads all" \
    "$KVLAB" trace -m "$MODEL" -p "Once upon a time, there was a cat" --gen 6 --steps decode --every 2 -o "$T2"

TP=$tmp/trace_policy
check "trace --policy l2 --compression-ratio 0.5 --steps decode" \
    "$KVLAB" trace -m "$MODEL" -f "$TEXT" --chunk 64 --gen 6 --policy l2 --compression-ratio 0.5 --steps decode -o "$TP"

check "trace meta.json: the sink profile of the first prompt, per layer and head" \
    "$PY" -c "import json, sys; s = json.load(open(sys.argv[1] + '/meta.json'))['sinks']; assert len(s['layers']) == 5 and all(len(l['head_first_token_attn']) == 8 for l in s['layers'])" "$T"

# ---- correlate -------------------------------------------------------------------------
C=$tmp/corr
check "correlate -f --chunk 128 --chunks 4 (first-gen)" \
    bash -c "'$KVLAB' correlate -m '$MODEL' -f '$TEXT' --chunk 128 --chunks 4 -o '$C' 2>'$tmp/corr_err'"
rows=$(($(wc -l <"$C/metrics.csv" 2>/dev/null || echo 0) - 1))
if [ "$rows" -eq $((5 * 8 * 69 + 5 * 3)) ] && head -n 1 "$C/metrics.csv" | grep -qx 'layer,head,kv_head,metric,ratio,mean,std,n'; then
    ok "metrics.csv: header + one row per layer x head x metric (2760) + 3 sink rows per layer"
else fail "metrics.csv: header + one row per layer x head x metric (2760) + 3 sink rows per layer" "$rows rows"; fi
# stories260K puts < 0.01 of its attention on the first token: no sink head, one warning line
if [ "$(grep -c 'warning: no attention sink' "$tmp/corr_err")" = 1 ] && grep -q 'heads > 0.3' "$tmp/corr_err"; then
    ok "stories260K: the table has the sink columns, one 'no attention sink' warning"
else fail "stories260K: the table has the sink columns, one 'no attention sink' warning" "$(tail -n 3 "$tmp/corr_err")"; fi

# sink-26m has attention sinks in layers 1-6 (../shared/README.md); 2 x 512 tokens measure
# (layer: first-token attention, heads > 0.3): 0: .002 0/6; 1-6: .17-.47, 1-5 of 6;
# first key norm / median: 1.57 in layer 0, .36-.75 in layers 1-4
SINK=$SHARED/models/sink-26m
CS=$tmp/corr_sink
check "correlate sink-26m (2 x 512 tokens of wikitext-2)" \
    bash -c "'$KVLAB' correlate -m '$SINK' -f '$SHARED/data/wikitext-2-raw-test.txt' --chunk 512 --chunks 2 -o '$CS' 2>'$tmp/sink_err'"
! grep -q 'no attention sink' "$tmp/sink_err" && ok "sink-26m: no 'no attention sink' warning" ||
    fail "sink-26m: no 'no attention sink' warning" "$(tail -n 2 "$tmp/sink_err")"
check "sink-26m metrics.csv: layer 0 no sink; layers 1-6 first-token attention .15-.5, >= 1 sink head each, >= 12 in all; key norm ratio < .8 in layers 1-4, > 1 in layer 0" \
    awk -F, '$2 == "" && $4 == "sink_first_token_attn" { a[$1] = $6 }
             $2 == "" && $4 == "sink_head_share" { s[$1] = $6 * $8 }
             $2 == "" && $4 == "sink_key_norm_ratio" { r[$1] = $6 }
             END {
                 bad = !(a[0] < 0.05 && s[0] == 0 && r[0] > 1)
                 for (l = 1; l <= 6; l++) { bad += !(a[l] >= 0.15 && a[l] <= 0.5 && s[l] >= 1); heads += s[l] }
                 for (l = 1; l <= 4; l++) bad += !(r[l] < 0.8)
                 exit bad || heads < 12
             }' "$CS/metrics.csv"
check "correlate --query all-decode --gen 8" \
    "$KVLAB" correlate -m "$MODEL" -f "$TEXT" --chunk 96 --chunks 2 --query all-decode --gen 8 -o "$tmp/corr_dec"
CSC=$tmp/corr_score
check "correlate --score l2,tova,h2o: one table per score on stdout" \
    bash -c "'$KVLAB' correlate -m '$MODEL' -f '$TEXT' --chunk 96 --chunks 2 --score l2,tova,h2o -o '$CSC' 2>/dev/null >'$tmp/score_out' && [ \$(grep -c '^score ' '$tmp/score_out') = 3 ]"
rows=$(($(wc -l <"$CSC/metrics.csv" 2>/dev/null || echo 0) - 1))
[ "$rows" -eq $((5 * 8 * 69 + 5 * 3 + 3 * 5 * 8 * (4 + 4 * 9))) ] && ok "--score: metrics.csv gains 3 x 40 x 40 score rows" \
    || fail "--score: metrics.csv gains 3 x 40 x 40 score rows" "$rows rows"
check_error "--score with last-prefill" "--score" "$KVLAB" correlate -m "$MODEL" -f "$TEXT" --chunk 64 --score l2 --query last-prefill -o "$tmp/x"
check_error "--score with a policy" "--score" "$KVLAB" correlate -m "$MODEL" -f "$TEXT" --chunk 64 --score l2 --policy l2 --compression-ratio 0.5 -o "$tmp/x"
check "correlate --score lagkv,vnorm,keydiff: a table each, lagkv's ranks correlate with attention (rho > 0 in some layer)" \
    bash -c "'$KVLAB' correlate -m '$MODEL' -f '$TEXT' --chunk 96 --chunks 2 --score lagkv:lag=16,sink=4,vnorm,keydiff -o '$tmp/corr_lag' 2>/dev/null >'$tmp/lag_out' && [ \$(grep -c '^score ' '$tmp/lag_out') = 3 ] && grep -q '^score lagkv:lag=16,sink=4 ' '$tmp/lag_out' && awk -F, '\$4 == \"score_lagkv_lag_16_sink_4_spearman\" && \$6 > 0 { found = 1 } END { exit !found }' '$tmp/corr_lag/metrics.csv'"
check_error "--score lagkv-l2 (no score of its own)" "ranks tokens by its own selection" "$KVLAB" correlate -m "$MODEL" -f "$TEXT" --chunk 64 --score lagkv-l2 -o "$tmp/x"
check "correlate --help lists every score" bash -c "'$KVLAB' correlate --help | grep -qE '^Scores for --score: .*lagkv.* vnorm keydiff'"
check_error "--score unknown" "nosuch" "$KVLAB" correlate -m "$MODEL" -f "$TEXT" --chunk 64 --score l2,nosuch -o "$tmp/x"
check "correlate --query last-prefill --ids" \
    "$KVLAB" correlate -m "$MODEL" --ids 1,403,407,261,378,410,262,283,306,429 --query last-prefill -o "$tmp/corr_ids"
check "all-decode: n = 2 chunks x 8 steps per (layer, head)" \
    bash -c "grep -q '^3,5,2,spearman,,[^,]*,[^,]*,16\$' '$tmp/corr_dec/metrics.csv'"

PR=$tmp/probe
check "correlate --policy l2 --compression-ratio 0.5 (policy vs full cache)" \
    "$KVLAB" correlate -m "$MODEL" -f "$TEXT" --chunk 96 --chunks 2 --gen 12 --policy l2 --compression-ratio 0.5 -o "$PR"
check "policy run: policy_loss.csv, policy_steps.csv (12 steps), policy.npz, meta.json with the policy" \
    bash -c "[ \$(wc -l <'$PR/policy_steps.csv') -eq 13 ] && [ \$(wc -l <'$PR/policy_loss.csv') -eq $((1 + 5 * 8 * 4)) ] && [ \"\$(head -c 2 '$PR/policy.npz')\" = PK ] && grep -q '\"policy\":[[:space:]]*\"l2\"' '$PR/meta.json'"
check "policy full loses nothing" \
    bash -c "'$KVLAB' correlate -m '$MODEL' -f '$TEXT' --chunk 64 --chunks 1 --gen 4 --policy full -o '$tmp/probe_full' 2>/dev/null && awk -F, 'NR > 1 && \$4 == \"attention_loss\" && \$5 != 0 { bad = 1 } END { exit bad }' '$tmp/probe_full/policy_loss.csv'"

# ---- errors: one line naming the option ----------------------------------------------
check_error "--steps bogus" "--steps" "$KVLAB" trace -m "$MODEL" -p hi --steps bogus -o "$tmp/x"
check_error "--max-bytes too small: says the size needed" "needs .* bytes" \
    "$KVLAB" trace -m "$MODEL" -f "$TEXT" --chunk 64 --max-bytes 1000 -o "$tmp/x"
check_error "--max-bytes not a size" "--max-bytes" "$KVLAB" trace -m "$MODEL" -p hi --max-bytes 12Q -o "$tmp/x"
check_error "--layers out of range" "--layers" "$KVLAB" trace -m "$MODEL" -p hi --layers 0,9 -o "$tmp/x"
check_error "--heads not ascending" "--heads" "$KVLAB" trace -m "$MODEL" -p hi --heads 3,1 -o "$tmp/x"
check_error "--every 0" "--every" "$KVLAB" trace -m "$MODEL" -p hi --every 0 -o "$tmp/x"
check_error "--query bogus" "--query" "$KVLAB" correlate -m "$MODEL" -f "$TEXT" --query bogus -o "$tmp/x"
check_error "--chunk longer than the context" "--chunk" "$KVLAB" correlate -m "$MODEL" -f "$TEXT" -o "$tmp/x"
check_error "--policy unknown" "--policy" "$KVLAB" correlate -m "$MODEL" -f "$TEXT" --chunk 64 --policy nosuch -o "$tmp/x"
check_error "correlate without -o" "-o" "$KVLAB" correlate -m "$MODEL" -f "$TEXT" --chunk 64
check_error "--gen beyond the context" "--gen" "$KVLAB" trace -m "$MODEL" -f "$TEXT" --chunk 500 --gen 100 -o "$tmp/x"
[ ! -e "$tmp/x" ] && ok "refused runs leave no output directory" || fail "refused runs leave no output directory"

# ---- every option is documented in --help ----------------------------------------------
missing=""
"$KVLAB" trace --help >"$tmp/h_trace"
for o in -p --ids -f --chunk --chunks --gen --layers --heads --steps --every --max-bytes -o --batch --threads --ctx; do
    grep -q -- "$o" "$tmp/h_trace" || missing="$missing trace:$o"; done
"$KVLAB" correlate --help >"$tmp/h_corr"
for o in -f --chunk --chunks -p --ids --query first-gen all-decode last-prefill --gen --seed --score -o --batch --threads --policy --compression-ratio; do
    grep -q -- "$o" "$tmp/h_corr" || missing="$missing correlate:$o"; done
[ -z "$missing" ] && ok "--help documents every option" || fail "--help documents every option" "missing:$missing"

# ---- numpy reads the artifacts, and the numbers make sense --------------------------------
if $PY -c 'import numpy' 2>/dev/null; then
    check "numpy: trace shapes, NaN = causal future, visible rows sum to 1, norms > 0" $PY - "$T" <<'EOF'
import sys, numpy as np
z = np.load(sys.argv[1] + "/trace.npz")
a, k, q = z["attn"], z["key_norm"], z["query_pos"]
S, NL, NH, Q, P = a.shape
assert (S, NL, NH, P) == (2, 3, 2, 72), a.shape
assert list(z["layers"]) == [0, 2, 4] and list(z["heads"]) == [1, 3] and list(z["kv_head"]) == [0, 1]
assert Q == 72 and int(z["n_prompt"]) == 64 and z["ids"].shape == (2, 72) and z["ids"][0, 0] == 1
for i, qp in enumerate(q):
    assert np.all(np.isnan(a[:, :, :, i, qp + 1:])), "future must be NaN"
    assert np.allclose(np.nansum(a[:, :, :, i, :qp + 1], axis=-1), 1, atol=1e-4)
assert k.shape == (2, 3, 4, 72) and np.all(k > 0) and np.all(z["value_norm"] > 0)
EOF
    check "numpy: trace with l2: layers 0,1 see everything, the others the kept half + the new token" $PY - "$TP" <<'EOF'
import sys, numpy as np
z = np.load(sys.argv[1] + "/trace.npz")
a = z["attn"]
assert a.shape == (1, 5, 8, 6, 70), a.shape
seen = np.isfinite(a).sum(axis=-1)                       # [1, 5, 8, 6]
for l in range(5):
    for qi, q in enumerate(z["query_pos"]):
        # l2 skips layers 0, 1; elsewhere each forward ends cut back to floor(n/2) of the n seen
        want = q + 1 if l < 2 else q // 2 + 1
        assert np.all(seen[0, l, :, qi] == want), (l, q, seen[0, l, :, qi])
assert not np.isnan(z["key_norm"]).any()                 # norms of evicted tokens too
EOF
    check "numpy: metrics.npz shapes and ranges" $PY - "$C" <<'EOF'
import sys, numpy as np
z = np.load(sys.argv[1] + "/metrics.npz")
assert z["spearman_mean"].shape == (5, 8) and z["loss_lownorm_mean"].shape == (5, 8, 9)
assert np.all(np.abs(z["spearman_mean"]) <= 1) and np.all(z["spearman_n"] == 4)
o = z["loss_oracle_mean"]
for name in ("lownorm", "highnorm", "random"):
    assert np.all(z["loss_" + name + "_mean"] >= o - 1e-9), name   # nothing beats the oracle
assert np.all(np.diff(o, axis=-1) >= -1e-12)                      # more eviction, more loss
assert np.all(z["alr_mean"] >= -1e-9)
assert z["sink_head_share"].shape == (5,) and np.all(z["sink_head_share"] == 0)     # no sink in stories260K
fa = z["first_token_attn_mean"]
assert fa.shape == (5, 8) and np.all((fa >= 0) & (fa <= 1))
assert np.allclose(z["sink_first_token_attn"], fa.mean(axis=1))
assert np.allclose(z["sink_key_norm_ratio"], z["first_key_norm_ratio_mean"][:, ::2].mean(axis=1))   # 4 KV heads of 2
EOF
    check "numpy: --score members: shapes, every query measured, no score beats the oracle" $PY - "$CSC" <<'EOF'
import sys, numpy as np
z = np.load(sys.argv[1] + "/metrics.npz")
for key in ("l2", "tova", "h2o"):
    rho, loss = z[f"score_{key}_spearman_mean"], z[f"score_{key}_loss_mean"]
    assert rho.shape == (5, 8) and loss.shape == (5, 8, 9), key
    assert np.all(np.abs(rho) <= 1) and np.all(z[f"score_{key}_spearman_n"] == 2), key
    assert np.all(loss >= z[f"score_{key}_loss_oracle_mean"] - 1e-9), key
    assert np.array_equal(z[f"score_{key}_loss_oracle_mean"], z["score_l2_loss_oracle_mean"]), key
EOF
else
    echo "skip  numpy checks: $PY has no numpy (apt-get install python3-numpy)"
fi

# ---- plots ------------------------------------------------------------------------------
if $PY -c 'import matplotlib, numpy' 2>/dev/null; then
    check "make plots RUN=\"trace correlate policy\" renders every figure" \
        make -s plots RUN="$T $C $CS $PR $CSC" PLOTS_OUT="$tmp/plots"
    for f in fig1_attention_vs_norm_trace fig1_per_layer_trace fig2_alr_heatmap_corr loss_vs_ratio_corr rho_per_layer sink_diagnostics policy_loss_probe score_tova_corr_score score_l2_corr_score; do
        png=$tmp/plots/$f.png pdf=$tmp/plots/$f.pdf
        if [ "$(head -c 8 "$png" 2>/dev/null | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] &&
           [ "$(stat -c %s "$png" 2>/dev/null || echo 0)" -gt 20000 ] &&
           [ "$(head -c 5 "$pdf" 2>/dev/null)" = "%PDF-" ] && tail -c 64 "$pdf" | grep -q '%%EOF' &&
           [ "$(stat -c %s "$pdf" 2>/dev/null || echo 0)" -gt 5000 ]; then
            ok "plot $f: valid PNG and PDF"
        else fail "plot $f: valid PNG and PDF" "$(ls -la "$tmp/plots" 2>&1 | tr '\n' ' ')"; fi
    done
    check "rho_per_layer with two runs (one line per run)" \
        $PY experiments/plots/rho_per_layer.py "$C" "$tmp/corr_dec" -o "$tmp/plots2"
else
    echo "skip  plots: $PY lacks matplotlib (apt-get install python3-matplotlib python3-numpy) — 0 passed for this part"
fi

echo "RESULT cli_trace.sh passed=$passed failed=$failed"
[ "$failed" -eq 0 ]
