#!/usr/bin/env bash
# cli_policy.sh — eviction policies on the command line (kvlab generate): every
# policy runs, the knobs reach the run's metadata, bad knobs fail with one line.
source "$(dirname "$0")/lib_cli.sh"
S260=$SHARED/models/stories260k/stories260K.bin
DEMO=$SHARED/models/demo-25m
GEN="$KVLAB generate -m $S260 -p Once --print-ids --threads 1"

# ---- good runs -----------------------------------------------------------------
expect_ok "the l2 paper's setting: l2, ratio 0.5, skip 0,1, step" \
    $KVLAB generate -m "$S260" -p "Once upon a time" -n 64 --policy l2 --compression-ratio 0.5 --skip-layers 0,1 --schedule step
check "stderr reports KV bytes in use" grep -qE "^kv: [0-9.]+ MiB in use" "$TMP/err"
check "stderr reports evictions and decide time per decode step" grep -qE "policy l2: [1-9][0-9]* evicted, decide [0-9.]+ ms/decode step" "$TMP/err"
check "every knob in the JSON metadata" grep -qE '^policy: \{"policy":"l2",.*"budget":\{"kind":"compression_ratio","value":0.5\},"rounding":"floor","schedule":"step","schedule_n":0,"skip_layers":\[0,1\],"protect_sinks":0,"protect_recent":0,"positions":"true","granularity":"head"\}' "$TMP/err"

expect_ok "lagkv with parameters" $GEN -n 300 --policy lagkv:sink=16,lag=64,ratio=0.25
check "lagkv parameters in the metadata" grep -q '"params":{"sink":16,"lag":64,"ratio":0.25,"select":"partition"}' "$TMP/err"
# 301 tokens seen: 16 + 16*(285/64 - 1) + 64 + 285 % 64 = 16 + 48 + 64 + 29 = 157 per head; 5 layers x 4 KV heads
check "lagkv cache length follows the formula (157 slots per head)" grep -q "(3140 slots" "$TMP/err"

for spec in "full" "l2 --budget 32" "l2-high --keep-ratio 0.5" "random:seed=5 --budget 32" "window --budget 32" \
            "h2o:recent=8 --budget 32" "snapkv:window=8 --budget 32" "tova --budget 32" "pyramid:window=8 --budget 32" \
            "zigzag:window=16,score=l2 --budget 32" "lagkv:lag=32" "l2 --keep-ratio 0.5 --schedule threshold:48" \
            "h2o --budget 32 --schedule interval:8 --protect-sinks 4" "window --budget 32 --positions shifted" \
            "vnorm --budget 32" "keydiff --compression-ratio 0.5" "lagkv-l2:lag=32" "lagkv:select=global,lag=16 --compression-ratio 0.5" \
            "zigzag:impl=pr238v1,window=8 --budget 32" "zigzag:impl=pr238v2,window=8 --budget 32" \
            "pyramid:window=8,clamp=official --budget 32" "l2 --target-size 24 --compression-interval 8" \
            "snapkv:window=4 --target-compression-ratio 0.5 --compression-interval 4" "keydiff --budget 16 --budget-alloc adaptive"; do
    expect_ok "policy $spec" $GEN -n 80 --policy $spec
done

expect_ok "no policy" $GEN -n 60
cp "$TMP/out" "$TMP/plain"
expect_ok "full, shifted positions" $GEN -n 60 --policy full --positions shifted
check "shifted positions without eviction: same tokens" cmp "$TMP/out" "$TMP/plain"
expect_ok "h2o with a budget above the length" $GEN -n 60 --policy h2o --budget 512
check "a budget above the length changes nothing" cmp "$TMP/out" "$TMP/plain"

expect_ok "demo-25m (MHA): zigzag after prefill" $KVLAB generate -m "$DEMO" --dtype bf16 -p "The river flows to the sea and the sea flows back to the river" -n 16 --policy zigzag --compression-ratio 0.5

expect_ok "--help" $KVLAB generate --help
for knob in --policy --budget --compression-ratio --keep-ratio --rounding --schedule --skip-layers \
            --protect-sinks --protect-recent --positions --granularity --budget-alloc --head-floor \
            --target-size --target-compression-ratio --compression-interval; do
    check "--help documents $knob" grep -q -- "$knob" "$TMP/out"
done
for name in full l2 l2-high random window h2o snapkv tova pyramid lagkv zigzag vnorm keydiff lagkv-l2; do
    check "--help lists policy $name" grep -qE "^    $name " "$TMP/out"
done
check "--help lists lagkv's parameters with defaults" grep -qE "sink=16 .*lag=1024|lag=1024" "$TMP/out"
check "--help labels zigzag a reconstruction" grep -q "RECONSTRUCTION" "$TMP/out"

# ---- bad knobs: one line naming the option and the value -------------------------
expect_fail "unknown policy" "--policy: unknown policy 'lru'" $GEN --policy lru
expect_fail "unknown parameter" "--policy lagkv: unknown parameter 'size'" $GEN --policy lagkv:size=4
expect_fail "parameter not a number" "--policy lagkv: lag='big' is not a number" $GEN --policy lagkv:lag=big
expect_fail "parameter out of range" "--policy lagkv: ratio=1.5 is out of range" $GEN --policy lagkv:ratio=1.5
expect_fail "parameter not a choice" "--policy snapkv: pool='mean' is not one of max\\|avg" $GEN --policy snapkv:pool=mean --budget 8
expect_fail "parameter without value" "--policy h2o: 'recent' is not key=value" $GEN --policy h2o:recent --budget 8
expect_fail "policy needs a budget" "--policy l2 needs a budget" $GEN --policy l2
expect_fail "two budgets" "--keep-ratio: a budget was already given with --budget" $GEN --policy l2 --budget 8 --keep-ratio 0.5
expect_fail "compression ratio 1" "--compression-ratio: 1 is out of range \\[0, 1\\)" $GEN --policy l2 --compression-ratio 1
expect_fail "keep ratio 0" "--keep-ratio: 0 is out of range \\(0, 1\\]" $GEN --policy l2 --keep-ratio 0
expect_fail "budget not a number" "--budget: 'lots' is not an integer" $GEN --policy l2 --budget lots
expect_fail "bad rounding" "--rounding: 'up' is not floor or ceil" $GEN --policy l2 --budget 8 --rounding up
expect_fail "bad schedule" "--schedule: 'always' is not prefill, step, interval:N or threshold:T" $GEN --policy l2 --budget 8 --schedule always
expect_fail "interval 0" "--schedule interval:N: 0 is out of range" $GEN --policy l2 --budget 8 --schedule interval:0
expect_fail "threshold below the budget" "--schedule threshold:8: --budget 16 must be below the threshold" $GEN --policy l2 --budget 16 --schedule threshold:8
expect_fail "skip a layer the model lacks" "--skip-layers: layer 9 does not exist \\(the model has 5 layers\\)" $GEN --policy l2 --budget 8 --skip-layers 0,9
expect_fail "bad skip list" "--skip-layers: 'x' is not an integer" $GEN --policy l2 --budget 8 --skip-layers 0,x
expect_fail "bad positions" "--positions: 'relative' is not true or shifted" $GEN --positions relative
expect_fail "bad granularity" "--granularity: 'token' is not head or layer" $GEN --granularity token
expect_fail "lagkv refuses --budget" "--policy lagkv: --budget does not apply" $GEN --policy lagkv --budget 8
expect_fail "lagkv refuses layer granularity" "--granularity layer: policy lagkv chooses its tokens per KV head" $GEN --policy lagkv --granularity layer
expect_fail "negative sinks" "--protect-sinks: -1 is out of range" $GEN --policy l2 --budget 8 --protect-sinks -1

# ---- head-wise adaptive budgets: the heads hold different counts, the memory is freed
LONG="Once upon a time there was a little girl who liked to play with her dog in the park every day"
expect_ok "adaptive head budgets: per-head budgets on stderr" $KVLAB generate -m "$S260" -p "$LONG" --print-ids --threads 1 -n 40 --policy l2 --budget 12 --skip-layers none --schedule prefill --budget-alloc adaptive
check "adaptive: JSON records the allocation" grep -q '"budget_alloc":"adaptive","head_floor":0.2}' "$TMP/err"
check "adaptive: per-head budgets differ and sum to 4 x 12 per layer" python3 -c "
import json, re, sys
line = [l for l in open('$TMP/err') if l.startswith('budgets: ')][0]
b = json.loads(line[len('budgets: '):])
assert b['layer'] == [12] * 5, b
assert all(sum(h) == 48 for h in b['head']), b
assert any(len(set(h)) > 1 for h in b['head']), b
"
# 31 prompt tokens cut to 48 per layer, then 39 decode tokens x 20 heads: 240 + 780 slots
check "adaptive: the KV bytes in use are the kept slots" grep -qE "^kv: [0-9.]+ MiB in use, f32 K\+V \(1020 slots" "$TMP/err"
expect_fail "adaptive refused for lagkv's partition rule" "--budget-alloc adaptive: lagkv keeps int.r.L. of each partition, not a budget to share" $GEN --policy lagkv --budget-alloc adaptive
expect_fail "adaptive refused for lagkv-l2" "--budget-alloc adaptive: lagkv-l2 keeps int.r.L." $GEN --policy lagkv-l2 --budget-alloc adaptive
expect_ok "adaptive with lagkv:select=global" $GEN -n 60 --policy lagkv:select=global,lag=8,sink=4 --compression-ratio 0.5 --budget-alloc adaptive
expect_fail "adaptive refused for tova's layer granularity" "add --granularity head" $GEN --policy tova --budget 8 --budget-alloc adaptive
expect_fail "bad --budget-alloc" "--budget-alloc: 'some' is not uniform or adaptive" $GEN --policy l2 --budget 8 --budget-alloc some
expect_fail "bad --head-floor" "--head-floor: 2 is out of range" $GEN --policy l2 --budget 8 --budget-alloc adaptive --head-floor 2
expect_fail "target size and a ratio" "--target-size: a budget was already given with --keep-ratio" $GEN --policy l2 --keep-ratio 0.5 --target-size 8
expect_fail "target compression ratio 1" "--target-compression-ratio: 1 is out of range" $GEN --policy l2 --target-compression-ratio 1
expect_fail "lagkv:select=global needs a budget" "needs a budget" $GEN --policy lagkv:select=global
expect_fail "bad zigzag impl" "--policy zigzag: impl='pr238' is not one of kvlab\|pr238v1\|pr238v2" $GEN --policy zigzag:impl=pr238 --budget 8

# ---- the new policies from every subcommand that takes a policy
TXT=$SHARED/data/tinystories-valid-head.txt
expect_ok "ppl with keydiff, adaptive" $KVLAB ppl -m "$S260" -f "$TXT" --chunk 64 --chunks 1 --threads 1 --policy keydiff --compression-ratio 0.5 --budget-alloc adaptive -o "$TMP/ppl_kd"
check "ppl: config.json records the policy and the allocation" grep -q '"budget_alloc"' "$TMP/ppl_kd/config.json"
check "ppl: meta.json records each head's budget" grep -q '"policy_budgets"' "$TMP/ppl_kd/meta.json"
expect_ok "passkey with lagkv-l2" $KVLAB passkey -m "$S260" --lengths 200 --depths 50 --trials 1 --threads 1 --policy lagkv-l2:lag=16 --compression-ratio 0.5 -o "$TMP/pk_l2"
expect_ok "passkey with adaptive head budgets" $KVLAB passkey -m "$S260" --lengths 200,300 --depths 50 --trials 2 --threads 1 --policy l2 --budget 40 --skip-layers 0 --budget-alloc adaptive -o "$TMP/pk_ada"
check "passkey: head_budgets.csv holds each trial's per-head budgets, summing to the layer's, and the slots kept" python3 -c "
import csv, json, collections
rows = list(csv.DictReader(open('$TMP/pk_ada/head_budgets.csv')))
assert len(rows) == 4 * 5 * 4, len(rows)                      # trials x layers x KV heads
per = collections.defaultdict(list)
for r in rows: per[(r['unit'], r['layer'])].append(r)
for (u, l), hs in per.items():
    if l == '0':                                             # skipped: no budget, every slot kept
        assert all(h['budget'] == '' for h in hs), hs
        continue
    b = [int(h['budget']) for h in hs]
    assert sum(b) == 4 * 40, (u, l, b)
    assert [int(h['slots']) for h in hs] == b, hs            # the prompt is longer than every head's share
assert any(len(set(h['budget'] for h in hs)) > 1 for (u, l), hs in per.items() if l != '0')
m = json.load(open('$TMP/pk_ada/meta.json'))
assert m['head_budgets']['mean_budget'][0] == [None] * 4 and abs(sum(m['head_budgets']['mean_slots'][1]) - 160) < 1e-9, m['head_budgets']
assert 'head_budgets.csv' in json.dumps(m['outputs'])
"
expect_ok "needle with adaptive head budgets" $KVLAB needle -m "$S260" --haystack "$TXT" --lengths 300 --depths 50 --buffer 100 --max-new 8 --threads 1 --policy vnorm --budget 50 --budget-alloc adaptive -o "$TMP/nd_ada"
check "needle: head_budgets.csv per cell" python3 -c "
import csv
rows = list(csv.DictReader(open('$TMP/nd_ada/head_budgets.csv')))
assert len(rows) == 5 * 4 and all(r['unit'] == '0' for r in rows), len(rows)
"
expect_ok "passkey with the full cache" $KVLAB passkey -m "$S260" --lengths 200 --depths 50 --trials 1 --threads 1 -o "$TMP/pk_full"
check "full cache: no head_budgets.csv" test ! -e "$TMP/pk_full/head_budgets.csv"
expect_ok "correlate with vnorm" $KVLAB correlate -m "$S260" -f "$TXT" --chunk 64 --chunks 1 --threads 1 --policy vnorm --compression-ratio 0.5 -o "$TMP/corr_v"
expect_ok "trace with zigzag pr238v2" $KVLAB trace -m "$S260" -p "Once upon a time there was" --gen 2 --threads 1 --policy zigzag:impl=pr238v2,window=4 --compression-ratio 0.5 -o "$TMP/trace_z"
finish
