#!/usr/bin/env bash
# cli_eval.sh — `kvlab ppl`, `kvlab passkey`, `kvlab needle` end to end on stories260k
# (../shared/spec/methods.md §6): outputs checked, determinism, kill + --resume giving the same final files
# as an uninterrupted run (the KVLAB_EVAL_STOP_AFTER hook, a torn last line, a real
# SIGKILL), refusals with one-line errors; experiments/sweep.sh, collect.py and the plots.
#
# stories260k cannot retrieve a passkey (nor can demo-25m: 0/48 in a trial of
# lengths 128..1024), so the passkey *logic* is checked by tests/test_eval.c (prompt
# builder byte for byte, answer parser, token sizing); here the runs are checked for
# shape, sizes, determinism and resumability.
set -u
cd "$(dirname "$0")/.." || exit 1
source tests/lib_cli.sh

M=$SHARED/models/stories260k/stories260K.bin
TXT=$SHARED/data/tinystories-valid-head.txt
PY=/usr/bin/python3
export KVLAB_PLOT_CHECK=1   # every figure drawn is checked (experiments/plots/common.py check_figure)

col() {   # FILE COLUMN [ROW]: a numeric field of a CSV by column name (row 1 = first data row)
    awk -F, -v c="$2" -v r="${3:-1}" 'NR==1{for(i=1;i<=NF;i++) if($i==c) k=i; next} NR==r+1{print $k; exit}' "$1"
}
same_files() {   # DIR_A DIR_B FILE...: byte-identical
    local a=$1 b=$2; shift 2
    for f in "$@"; do cmp -s "$a/$f" "$b/$f" || { echo "$f differs" >&2; return 1; }; done
}
rows() { echo $(( $(wc -l <"$1") - 1 )); }

# ---- ppl ----------------------------------------------------------------------------
PPL=("$KVLAB" ppl -m "$M" -f "$TXT" --chunk 128 --threads 1)
expect_ok "ppl full" "${PPL[@]}" --chunks 3 -o "$TMP/pf"
check "ppl full: files" test -f "$TMP/pf/meta.json" -a -f "$TMP/pf/results.csv" -a -f "$TMP/pf/tokens.csv" \
    -a -f "$TMP/pf/positions.csv" -a -f "$TMP/pf/summary.csv" -a -f "$TMP/pf/summary.json" -a -f "$TMP/pf/config.json"
check "ppl full: 3 chunk rows, 3x127 token rows, 127 positions" \
    test "$(rows "$TMP/pf/results.csv")" = 3 -a "$(rows "$TMP/pf/tokens.csv")" = 381 -a "$(rows "$TMP/pf/positions.csv")" = 127
check "ppl full: its own reference (ppl = ppl_ref, KL 0, agreement 1)" \
    test "$(col "$TMP/pf/summary.csv" ppl)" = "$(col "$TMP/pf/summary.csv" ppl_ref)" -a "$(col "$TMP/pf/summary.csv" kl)" = 0 \
    -a "$(col "$TMP/pf/summary.csv" top1_agree)" = 1
check "ppl full: cumulative ppl of the last position = overall ppl" \
    awk -v a="$(col "$TMP/pf/positions.csv" cum_ppl 127)" -v b="$(col "$TMP/pf/summary.csv" ppl)" 'BEGIN{exit !(a/b-1<1e-6 && b/a-1<1e-6)}'
check "ppl full: meta.json has command line, model, policy, git, cpu, wall time" bash -c '
    for k in command_line git_describe cpu isa threads policy mtime wall_seconds compute_seconds; do
        grep -q "\"$k\"" "$1" || { echo "meta.json lacks $k" >&2; exit 1; }
    done' _ "$TMP/pf/meta.json"

L2=(--policy l2 --keep-ratio 0.5 --schedule threshold:32)
expect_ok "ppl l2 threshold:32" "${PPL[@]}" --chunks 3 "${L2[@]}" -o "$TMP/pl"
check "ppl l2: same full-cache reference as the full run" test "$(col "$TMP/pl/summary.csv" ppl_ref)" = "$(col "$TMP/pf/summary.csv" ppl)"
check "ppl l2: KL > 0, fewer kv slots than the full cache" \
    awk -v kl="$(col "$TMP/pl/summary.csv" kl)" -v a="$(col "$TMP/pl/summary.csv" kv_mean)" -v b="$(col "$TMP/pf/summary.csv" kv_mean)" \
    'BEGIN{exit !(kl>0 && a<b)}'
check "ppl l2: identical to the full run before the first eviction (positions 1..31: KL 0)" \
    awk -F, 'NR>1 && $1<=31 && $9!=0 {bad=1} END{exit bad}' "$TMP/pl/positions.csv"

# --output-error: the policy run's attention output against the full-cache run's
expect_ok "ppl l2 --output-error" "${PPL[@]}" --chunks 2 "${L2[@]}" --output-error -o "$TMP/poe"
# it observes attention, so both runs take the exact path: the same rows as --attention exact
expect_ok "ppl l2 --attention exact" "${PPL[@]}" --chunks 2 "${L2[@]}" --attention exact -o "$TMP/pl_exact"
check "ppl --output-error: the same chunk rows (ppl, KL, ...) as without it (exact attention)" \
    test "$(head -n 3 "$TMP/poe/results.csv")" = "$(head -n 3 "$TMP/pl_exact/results.csv")"
check "ppl: fused (the default) and exact attention agree to 4 digits of the chunk perplexity" \
    bash -c "paste -d, <(cut -d, -f5 '$TMP/pl/results.csv') <(cut -d, -f5 '$TMP/pl_exact/results.csv') | awk -F, 'NR>1 && NR<4 { d = \$1 - \$2; if (d < 0) d = -d; if (d > 1e-4 * \$2) bad = 1; n++ } END { exit bad || n != 2 }'"
# l2 never touches layers 0 and 1, whose inputs do not depend on later layers: their outputs
# stay exactly the full cache's; the others lose attention and drift once l2 evicts
check "ppl --output-error: 0 in layers 0,1 (skipped), > 0 after the first eviction elsewhere, p95 >= mean" \
    awk -F, 'NR>1 && $2=="" { if ($1<2 && ($5!=0 || $7!=0)) bad=1; if ($1>=2 && !($5>0 && $7>=$5)) bad=1; n++ }
             END{exit bad || n!=10}' "$TMP/poe/output_error.csv"
check "ppl --output-error: per position, 0 before the first eviction (positions 1..31)" \
    awk -F, 'NR>1 && $1<=31 && ($2!=0 || $4!=0) {bad=1} NR>1 {n++} END{exit bad || n!=127}' "$TMP/poe/output_error_steps.csv"
expect_ok "ppl --output-error with a budget never reached" "${PPL[@]}" --chunks 1 --policy l2 --budget 1000 --output-error -o "$TMP/poe0"
check "ppl --output-error: a policy that never evicts has output error 0 everywhere" \
    awk -F, 'NR>1 && ($5!=0 || $7!=0) {bad=1} END{exit bad}' "$TMP/poe0/output_error.csv"
check "ppl --output-error: meta.json has the per-layer mean and p95" \
    "$PY" -c "import json, sys; o = json.load(open(sys.argv[1]))['output_error']['layers']; assert len(o) == 5 and all('output_error_p95' in l for l in o)" "$TMP/poe/meta.json"
expect_fail "ppl --output-error --no-reference" "--no-reference" "${PPL[@]}" --policy l2 --budget 8 --output-error --no-reference -o "$TMP/x"
expect_fail "ppl --output-error with full" "never evicts" "${PPL[@]}" --output-error -o "$TMP/x"
expect_fail "ppl --output-error --resume" "--resume" "${PPL[@]}" --policy l2 --budget 8 --output-error --resume -o "$TMP/x"

# resume (1): the test hook stops the process right after its 2nd chunk; a torn row follows
KVLAB_EVAL_STOP_AFTER=2 "${PPL[@]}" --chunks 3 "${L2[@]}" -o "$TMP/pr" >"$TMP/out" 2>"$TMP/err"
check "ppl: STOP_AFTER=2 exits 75, no meta.json, 2 units logged" \
    test $? = 75 -a ! -f "$TMP/pr/meta.json" -a "$(rows "$TMP/pr/log/units.csv")" = 2
printf '2,1,0.5\n2,2,0.7\n2,3,0.' >>"$TMP/pr/log/details.csv"
printf '2,254,127,1.2' >>"$TMP/pr/log/units.csv"
expect_ok "ppl: --resume after a kill with a torn last line" "${PPL[@]}" --chunks 3 "${L2[@]}" -o "$TMP/pr" --resume
check "ppl: the torn line was reported and dropped" grep -q "dropped a partial last line" "$TMP/err"
check "ppl: resumed = uninterrupted (results, tokens, positions, summary)" \
    same_files "$TMP/pl" "$TMP/pr" results.csv tokens.csv positions.csv summary.csv summary.json
check "ppl: only the missing chunk was computed" test "$(rows "$TMP/pr/log/units.csv")" = 3

# resume (2): a real SIGKILL in the middle of a chunk
"${PPL[@]}" --chunk 256 --chunks 10 --no-reference -o "$TMP/pk" "${L2[@]}" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 1 400); do
    [ -f "$TMP/pk/log/units.csv" ] && [ "$(rows "$TMP/pk/log/units.csv")" -ge 2 ] && break
    sleep 0.05
done
kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
check "ppl: killed with SIGKILL before the end" test ! -f "$TMP/pk/meta.json"
expect_ok "ppl: --resume after SIGKILL" "${PPL[@]}" --chunk 256 --chunks 10 --no-reference -o "$TMP/pk" "${L2[@]}" --resume
expect_ok "ppl: the same run uninterrupted" "${PPL[@]}" --chunk 256 --chunks 10 --no-reference -o "$TMP/pk2" "${L2[@]}"
check "ppl: after SIGKILL + resume = uninterrupted" same_files "$TMP/pk" "$TMP/pk2" results.csv tokens.csv positions.csv summary.csv
check "ppl --no-reference: empty reference columns" test -z "$(col "$TMP/pk2/summary.csv" kl)"

lines_before=$(wc -l <"$TMP/pf/log/units.csv")
expect_ok "ppl: --resume of a finished run recomputes nothing" "${PPL[@]}" --chunks 3 -o "$TMP/pf" --resume
check "ppl: finished run: log unchanged" test "$(wc -l <"$TMP/pf/log/units.csv")" = "$lines_before"
expect_fail "ppl: a finished run is not overwritten without --resume" "--resume" "${PPL[@]}" --chunks 3 -o "$TMP/pf"
expect_fail "ppl: --resume with other options" "other options .*policy" "${PPL[@]}" --chunks 3 -o "$TMP/pf" --resume --policy l2 --compression-ratio 0.5
expect_fail "ppl: unknown policy" "unknown policy 'nope'" "${PPL[@]}" -o "$TMP/x" --policy nope
expect_fail "ppl: bad ratio" "compression-ratio" "${PPL[@]}" -o "$TMP/x" --policy l2 --compression-ratio 1.5
expect_fail "ppl: l2 without a budget" "needs a budget" "${PPL[@]}" -o "$TMP/x" --policy l2
expect_fail "ppl: missing text" "no such file" "$KVLAB" ppl -m "$M" -f "$TMP/none.txt" -o "$TMP/x"
expect_fail "ppl: missing model" "." "$KVLAB" ppl -m "$TMP/none.bin" -f "$TXT" -o "$TMP/x"
expect_fail "ppl: no -o" "-o RUN_DIR is required" "$KVLAB" ppl -m "$M" -f "$TXT"
expect_fail "ppl: chunk longer than the context" "longer than the context" "${PPL[@]}" --chunk 9999 -o "$TMP/x"
expect_fail "ppl: unknown option" "unknown option '--bogus'" "${PPL[@]}" -o "$TMP/x" --bogus
check "ppl: refused runs leave no run directory" test ! -e "$TMP/x"

# ---- passkey -------------------------------------------------------------------------
PK=("$KVLAB" passkey -m "$M" --lengths 200,300 --depths 0,100 --trials 2 --threads 1)
expect_ok "passkey full" "${PK[@]}" -o "$TMP/k1"
check "passkey: 8 trial rows, summary with per-cell and 'all' rows" \
    test "$(rows "$TMP/k1/results.csv")" = 8 -a "$(grep -c '^all,all,8,' "$TMP/k1/summary.csv")" = 1
check "passkey: prompts sized to the lengths in tokens (L-3 <= tokens <= L)" \
    awk -F, 'NR>1 && ($9>$2 || $9<$2-3) {bad=1} END{exit bad}' "$TMP/k1/results.csv"
check "passkey: depth 0 puts the key first, depth 100 last" \
    awk -F, 'NR>1 && (($3==0 && $8!=0) || ($3==100 && $8!=100)) {bad=1} END{exit bad}' "$TMP/k1/results.csv"
check "passkey: 5-digit keys in [1, 50000)" awk -F, 'NR>1 && ($5<1 || $5>=50000) {bad=1} END{exit bad}' "$TMP/k1/results.csv"
check "passkey: full cache keeps every prompt token" awk -F, 'NR>1 && $10!=$9 {bad=1} END{exit bad}' "$TMP/k1/results.csv"
expect_ok "passkey: same seed again" "${PK[@]}" -o "$TMP/k2"
check "passkey: deterministic for a seed" same_files "$TMP/k1" "$TMP/k2" results.csv summary.csv
expect_ok "passkey: another seed" "${PK[@]}" -o "$TMP/k3" --seed 2
check "passkey: another seed, other keys" bash -c "! cmp -s '$TMP/k1/results.csv' '$TMP/k3/results.csv'"
expect_ok "passkey l2 90% (schedule prefill by default)" "${PK[@]}" -o "$TMP/k4" --policy l2 --compression-ratio 0.9
check "passkey l2: config says schedule prefill" grep -q '"schedule":"prefill"' "$TMP/k4/config.json"
check "passkey l2 90%: (2 full + 3 x 10%) / 5 layers of the prompt kept" \
    awk -F, 'NR>1 { want=(2*$9 + 3*int($9*0.1+1e-9))/5; if ($10 < want-0.01 || $10 > want+0.01) bad=1 } END{exit bad}' "$TMP/k4/results.csv"
KVLAB_EVAL_STOP_AFTER=3 "${PK[@]}" -o "$TMP/k5" --policy l2 --compression-ratio 0.9 >/dev/null 2>&1
check "passkey: stopped after 3 trials" test $? = 75 -a ! -f "$TMP/k5/meta.json"
expect_ok "passkey: --resume" "${PK[@]}" -o "$TMP/k5" --policy l2 --compression-ratio 0.9 --resume
check "passkey: resumed = uninterrupted" same_files "$TMP/k4" "$TMP/k5" results.csv summary.csv summary.json
expect_ok "passkey: 64 digits, random depths" "$KVLAB" passkey -m "$M" --lengths 300 --trials 3 --digits 64 --threads 1 -o "$TMP/k6"
check "passkey 64: 64-digit keys, depth deciles in the summary" \
    awk -F, 'NR>1 && length($5)!=64 {bad=1} END{exit bad}' "$TMP/k6/results.csv"
# --dump-prompts: the prompts a run scores, as files a user can read and feed to generate
expect_ok "passkey --dump-prompts (no -o, runs nothing)" "${PK[@]}" --dump-prompts "$TMP/kd"
check "passkey --dump-prompts: 8 prompt files + prompts.csv" \
    test "$(ls "$TMP"/kd/passkey_L*_D*_T*.txt | wc -l)" = 8 -a "$(rows "$TMP/kd/prompts.csv")" = 8 -a ! -e "$TMP/kd/results.csv"
check "passkey --dump-prompts: the keys and prompt sizes of the run (same seed)" bash -c "
    diff <(cut -d, -f2,3,4,5,6,7,8 '$TMP/kd/prompts.csv' | tail -n +2) \
         <(awk -F, -v OFS=, 'NR>1 {print \$2,\$3,\$4,\$5,\$6,\$7,\$9}' '$TMP/k1/results.csv')"
check "passkey --dump-prompts: a prompt file holds its key and encodes to its token count" bash -c "
    f=\$(sed -n 2p '$TMP/kd/prompts.csv'); file=\${f%%,*}; key=\$(echo \"\$f\" | cut -d, -f5); n=\${f##*,}
    grep -q \"The pass key is \$key. Remember it.\" '$TMP/kd/'\$file &&
    [ \$('$KVLAB' tokenize -m '$M' -f '$TMP/kd/'\$file | tr ',' '\n' | grep -c .) = \$n ]"
expect_fail "passkey: --digits 7" "--digits: 7 is not 5 or 64" "${PK[@]}" -o "$TMP/x" --digits 7
expect_fail "passkey: length too short for the prompt" "--lengths 50: shorter than the passkey prompt" \
    "$KVLAB" passkey -m "$M" --lengths 50 -o "$TMP/x"
expect_fail "passkey: length + answer over the context" "longer than the context" "$KVLAB" passkey -m "$M" --lengths 510 -o "$TMP/x"
expect_fail "passkey: depth over 100" "--depths: 101 is out of range" "${PK[@]}" --depths 0,101 -o "$TMP/x"
expect_fail "passkey: bad skip layers" "--skip-layers" "${PK[@]}" -o "$TMP/x" --policy l2 --compression-ratio 0.5 --skip-layers 0,x

# ---- needle --------------------------------------------------------------------------
ND=("$KVLAB" needle -m "$M" --haystack "$TXT" --lengths 300,400 --depths 0,50,100 --buffer 100 --max-new 16 --threads 1)
expect_ok "needle full" "${ND[@]}" -o "$TMP/n1"
check "needle: 6 cells + 2 + 3 + 1 summary rows" test "$(rows "$TMP/n1/results.csv")" = 6 -a "$(rows "$TMP/n1/summary.csv")" = 12
check "needle: depth 0 at the start, depth 100 at the end, scores in [0, 1]" \
    awk -F, 'NR>1 { if (($3==0 && $6!=0) || ($3==100 && $7!=100) || $NF<0 || $NF>1) bad=1 } END{exit bad}' "$TMP/n1/results.csv"
KVLAB_EVAL_STOP_AFTER=2 "${ND[@]}" -o "$TMP/n2" >/dev/null 2>&1
expect_ok "needle: --resume" "${ND[@]}" -o "$TMP/n2" --resume
# every evaluation's meta.json carries the sink profile of its first prompt / chunk
check "meta.json of ppl, passkey, needle: a sink profile per layer and head" "$PY" - "$TMP/pf" "$TMP/k1" "$TMP/n1" <<'EOF'
import json, sys
for run in sys.argv[1:]:
    s = json.load(open(run + "/meta.json"))["sinks"]
    assert s["threshold"] == 0.3 and 1 <= s["tokens"] <= 1024, run
    assert len(s["layers"]) == 5, run                     # stories260K: 5 layers, 8 heads, 4 KV heads
    for l in s["layers"]:
        h = l["head_first_token_attn"]
        assert len(h) == 8 and len(l["kv_key_norm_ratio"]) == 4 and all(0 < a <= 1 for a in h), run
        assert abs(l["first_token_attn"] - sum(h) / 8) < 1e-9, run
        assert l["sink_head_share"] == sum(a > 0.3 for a in h) / 8, run
EOF
check "needle: resumed = uninterrupted" same_files "$TMP/n1" "$TMP/n2" results.csv summary.csv
expect_ok "needle --dump-prompts (no -o, runs nothing)" "${ND[@]}" --dump-prompts "$TMP/nd"
check "needle --dump-prompts: 6 prompt files, the prompt sizes and needle positions of the run" bash -c "
    [ \$(ls '$TMP'/nd/needle_L*_D*.txt | wc -l) = 6 ] && [ ! -e '$TMP/nd/results.csv' ] &&
    diff <(cut -d, -f2- '$TMP/nd/prompts.csv' | tail -n +2) \
         <(awk -F, -v OFS=, 'NR>1 {print \$2,\$3,\$4,\$5,\$6}' '$TMP/n1/results.csv')"
check "needle --dump-prompts: the needle sentence is in the prompt, the question at its end" bash -c "
    grep -q 'The best thing to do in San Francisco is eat a sandwich' '$TMP/nd/needle_L300_D50.txt' &&
    tail -n 2 '$TMP/nd/needle_L300_D50.txt' | grep -q 'Question: What is the best thing to do in San Francisco?'"
expect_fail "needle: no --haystack" "--haystack FILE is required" "$KVLAB" needle -m "$M" -o "$TMP/x"
expect_fail "needle: missing haystack" "no such file" "$KVLAB" needle -m "$M" --haystack "$TMP/none" -o "$TMP/x"
expect_fail "needle: no room for the haystack" "--lengths 120: no room" "${ND[@]}" --lengths 120 -o "$TMP/x"
expect_fail "needle: prompt over the context" "longer than the context" "${ND[@]}" --lengths 512 -o "$TMP/x"

for c in ppl passkey needle; do
    expect_ok "$c --help" "$KVLAB" "$c" --help
    check "$c --help: documents RUN_DIR and the policies" grep -q "^RUN_DIR: .*results.csv" "$TMP/out"
done
"$KVLAB" ppl --help >"$TMP/out"
check "ppl --help documents --output-error and its files" \
    bash -c 'grep -q -- "--output-error" "$1" && grep -q "output_error_steps.csv" "$1"' _ "$TMP/out"

# ---- sweep, collect, plots ------------------------------------------------------------
expect_ok "sweep.sh --help" experiments/sweep.sh --help
SW=(experiments/sweep.sh -c /dev/null --models "s=$M" --tasks ppl,passkey --policies "full l2 random" --ratios 0.5
    --skips "0,1 0" --out "$TMP/sw" --kvlab "$KVLAB")
cat >"$TMP/sw.conf" <<EOF
args.ppl = -f $TXT --chunk 64 --chunks 1 --schedule threshold:16
args.passkey.s = --lengths 200 --depths 50 --trials 1
EOF
SW[2]=$TMP/sw.conf
expect_ok "sweep: 2 tasks x (full + 2 policies x 1 ratio x 2 skip sets), -j 2" "${SW[@]}" -j 2
check "sweep: 10 run directories finished" test "$(ls -d "$TMP"/sw/s/*/*/meta.json | wc -l)" = 10
check "sweep: point directory naming" test -f "$TMP/sw/s/ppl/l2_r0.5_s0-1/meta.json" -a -f "$TMP/sw/s/passkey/full/meta.json"
expect_ok "sweep: again" "${SW[@]}"
check "sweep: again: nothing to run" grep -q "10 finished, 0 to run" "$TMP/err"
rm -rf "$TMP/sw/s/ppl/random_r0.5_s0"
expect_ok "sweep --dry-run lists the missing point only" "${SW[@]}" --dry-run
check "sweep --dry-run: one command" test "$(grep -c 'random_r0.5_s0' "$TMP/out")" -ge 1 -a "$(wc -l <"$TMP/out")" = 1
expect_ok "sweep --slurm" "${SW[@]}" --slurm "$TMP/sw.sbatch" -j 4
check "sweep --slurm: a job array of 1 task" grep -q -- "--array=1-1%4" "$TMP/sw.sbatch"
check "sweep --slurm: commands file" test "$(wc -l <"$TMP/sw.sbatch.commands")" = 1
# args.all.MODEL: options for every task of one model, before the task's own
printf 'args.all.s = --dtype bf16\nargs.ppl = --chunk 64\n' >"$TMP/sw2.conf"
expect_ok "sweep: args.all.MODEL" experiments/sweep.sh -c "$TMP/sw2.conf" --models "s=$M" --tasks ppl,passkey \
    --policies full --out "$TMP/sw2" --kvlab "$KVLAB" --dry-run
check "sweep: args.all.MODEL reaches every task of that model" \
    test "$(grep -c -- "-m $M --dtype bf16 " "$TMP/out")" = 2 -a "$(grep -c -- "--dtype bf16 --chunk 64 --policy full" "$TMP/out")" = 1
# points that cannot fit the model's context (stories260k: 512 tokens) are found before
# anything runs: listed with the reason, refused, or left out with --skip-impossible
printf 'args.ppl = -f %s --chunk 1024 --chunks 1\nargs.passkey = --lengths 200,508 --trials 1\nargs.needle = --haystack %s --lengths 256\n' \
    "$TXT" "$TXT" >"$TMP/sw3.conf"
SW3=(experiments/sweep.sh -c "$TMP/sw3.conf" --models "s=$M" --tasks ppl,passkey,needle --policies "full l2"
     --ratios "0.1 0.5" --skips 0,1 --out "$TMP/sw3" --kvlab "$KVLAB" --dry-run)
check "sweep: points longer than the context refused before anything runs" bash -c "
    out=\$(\"\$@\" 2>&1); rc=\$?; [ \$rc -eq 2 ] || exit 1
    echo \"\$out\" | grep -q '3 point(s) of s ppl: --chunk 1024 needs 1024 tokens, the context is 512' &&
    echo \"\$out\" | grep -q '3 point(s) of s passkey: --lengths 200,508 + 10 answer tokens needs 518 tokens, the context is 512' &&
    echo \"\$out\" | grep -q '6 of 9 points cannot fit' && ! echo \"\$out\" | grep -q 'needle:' && [ ! -e '$TMP/sw3' ]" _ "${SW3[@]}"
expect_ok "sweep --skip-impossible" "${SW3[@]}" --skip-impossible
check "sweep --skip-impossible: only the needle points remain" test "$(wc -l <"$TMP/out")" = 3 -a "$(grep -c ' needle ' "$TMP/out")" = 3
check "sweep: --ctx in a point's args is the context it is checked against" bash -c "
    printf 'args.ppl = --ctx 256 --chunk 300\n' >'$TMP/sw4.conf'
    out=\$(experiments/sweep.sh -c '$TMP/sw4.conf' --models 's=$M' --tasks ppl --out '$TMP/sw4' --kvlab '$KVLAB' --dry-run 2>&1)
    [ \$? -eq 2 ] && echo \"\$out\" | grep -q 'needs 300 tokens, the context is 256'"
expect_ok "sweep: policies with parameters" experiments/sweep.sh -c /dev/null --models "s=$M" --tasks ppl \
    --policies "full,lagkv:select=global,sink=4 l2,zigzag:impl=pr238v2" --ratios 0.5 --skips 0 --out "$TMP/sw5" --kvlab "$KVLAB" --dry-run
check "sweep: a NAME:k=v,k=v spec stays one policy (4 points)" test "$(wc -l <"$TMP/out")" = 4
check "sweep: the spec reaches kvlab whole" grep -q -- '--policy lagkv:select=global\\,sink=4 ' "$TMP/out"
check "sweep: unknown task refused" bash -c "out=\$(experiments/sweep.sh -c /dev/null --models '$M' --tasks nope --kvlab '$KVLAB' 2>&1); [ \$? -eq 2 ] && echo \"\$out\" | grep -q 'unknown task'"
if [ -x "$PY" ]; then
    expect_ok "collect.py" "$PY" experiments/collect.py "$TMP/sw" -o "$TMP/all.csv" --positions "$TMP/pos.csv" --table
    check "collect.py: tidy rows tagged with task, policy, ratio, skip" \
        "$PY" -c "
import csv, sys
rows = list(csv.DictReader(open('$TMP/all.csv')))
assert {r['task'] for r in rows} == {'ppl', 'passkey'}, rows
l2 = [r for r in rows if r['task'] == 'ppl' and r['policy'] == 'l2']
assert len(l2) == 2 and {r['skip_layers'] for r in l2} == {'0,1', '0'} and l2[0]['compression_ratio'] == '0.5', l2
assert len(list(csv.DictReader(open('$TMP/pos.csv')))) == 4 * 63
"
    if "$PY" -c 'import matplotlib, numpy' 2>/dev/null; then
        expect_ok "plots: ppl vs length" "$PY" experiments/plots/ppl_vs_length.py "$TMP/pos.csv" -o "$TMP/plots"
        expect_ok "plots: accuracy vs ratio" "$PY" experiments/plots/accuracy_vs_ratio.py "$TMP/all.csv" -o "$TMP/plots"
        expect_ok "plots: needle heat map" "$PY" experiments/plots/needle_heatmap.py "$TMP/all.csv" -o "$TMP/plots" --allow-empty
        expect_ok "plots: passkey heat map" "$PY" experiments/plots/needle_heatmap.py "$TMP/all.csv" -o "$TMP/plots" --task passkey --skip 0
        check "plots: passkey heat map files" test -s "$TMP/plots/passkey_heatmap_stories260K.png" -a -s "$TMP/plots/passkey_heatmap_stories260K.pdf"
        expect_ok "plots: every policy compared (--name, --title)" "$PY" experiments/plots/accuracy_vs_ratio.py "$TMP/all.csv" \
            -o "$TMP/plots" --skip 0 --name compare --title "every policy"
        check "plots: compare figure" test -s "$TMP/plots/compare_stories260K.png" -a -s "$TMP/plots/compare_stories260K.pdf"
        check "plots: PNG files" test "$(ls "$TMP"/plots/*.png | wc -l)" -ge 4
        check "plots: the figure checks catch a bad figure; a narrow log axis is given readable ticks" "$PY" -c "
import sys; sys.path.insert(0, 'experiments/plots')
import common, matplotlib.pyplot as plt
def fails(fig):
    try: common.check_figure(fig)
    except AssertionError: return True
    return False
fig, ax = plt.subplots(); ax.plot([1, 2], [2, 40]); ax.set_yscale('log'); ax.set_ylim(2, 40)
assert fails(fig), 'a log axis over 2..40 has fewer than 2 labelled ticks'
common.readable_log_axes(fig); assert not fails(fig)
fig, ax = plt.subplots(); ax.plot([0, 1], [0, 1]); ax.set_ylabel('passkey accuracy'); ax.set_ylim(-0.05, 1)
assert fails(fig), 'an accuracy axis below 0'
fig, ax = plt.subplots(); ax.plot([0, 1], [0, 1], label='l2'); ax.fill_between([0, 1], [0, 0], [1, 1]); ax.legend()
assert fails(fig), 'a band nobody explains'
common.band_legend(ax, 'band: ± 1 std'); assert not fails(fig)
"
    fi
fi
finish
