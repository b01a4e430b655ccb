#!/usr/bin/env bash
# cli_html.sh — `kvlab trace --html` and `kvlab view`: the page of the README's example on sink-26m
# (its size, one file with nothing fetched), the refusals, then the page in headless
# Chromium (tests/browser/page_test.js, playwright-core from npm): no console error,
# the slider and menus work, the values shown equal trace.npz, a screenshot is saved.
# The browser part is skipped, with a line saying why, without /usr/bin/chromium,
# node/npm or numpy; with KVLAB_REQUIRE_BROWSER=1 (CI: .ci/run installs them and sets it)
# that is a failure instead. Run from the repository root.
# PAGE_SCREENSHOT=FILE.png keeps the screenshot (docs/figures/trace_page_sink-26m.png is
# page_test.js's screenshot of the README's runs/watch.html, reduced to 256 colours).
set -u
source "$(dirname "$0")/lib_cli.sh"
MODEL=$SHARED/models/sink-26m
STORIES=$SHARED/models/stories260k/stories260K.bin
PY=/usr/bin/python3
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
BROWSER_DIR=tests/browser
# the README's example (README.md, "Watch the cache"): the tour's pass-key prompt, l2 at 50 %;
# the README states the page's size ("(2.0 MB, N bytes here)") and a limit ("stays under X MB")
README_BYTES=$(grep -oE '\([0-9.]+ MB, [0-9,]+ bytes here\)' README.md | head -n 1 | grep -oE '[0-9,]+ bytes' | tr -d ', bytes')
PAGE_LIMIT=$(grep -oE 'the page stays under [0-9.]+ MB' README.md | head -n 1 | awk '{ printf "%d", $5 * 1000000 }')

R=$TMP/page
expect_ok "trace --html: the README's example on sink-26m (403-token prompt, 8 steps, l2 at 0.5)" \
    "$KVLAB" trace -m "$MODEL" -p "$(cat docs/tour-prompt.txt)" --gen 8 --steps decode \
    --policy l2 --compression-ratio 0.5 -o "$R" --html "$R.html"
size=$(stat -c %s "$R.html" 2>/dev/null || echo 0)
check "the page is one HTML file below the README's limit, ${PAGE_LIMIT:-?} bytes ($size)" \
    bash -c "[ -n '$PAGE_LIMIT' ] && [ $size -gt 100000 ] && [ $size -lt '$PAGE_LIMIT' ] && head -c 15 '$R.html' | grep -qi '<!doctype html>'"
# the README's page but for two paths: the run directory (twice in the command line at the
# page's foot) and the model (in the command line and the title)
readme_run=runs/watch readme_model=../shared/models/sink-26m
as_readme=$((size - 2 * (${#R} - ${#readme_run}) - 2 * (${#MODEL} - ${#readme_model})))
check "the README states this page's size: ${README_BYTES:-?} bytes = $as_readme with the README's paths" \
    test "${README_BYTES:-none}" = "$as_readme"
check "nothing to fetch: no element with src= or href=, no url( or @import; no temporary file left" \
    bash -c "! grep -qiE '<[a-z]+[^>]* (src|href)=|url\\(|@import' '$R.html' && [ -z \"\$(find '$TMP' -name '*.tmp.*')\" ]"
check "meta.json names the page" grep -q '"html":' "$R/meta.json"

# what trace records of the policy (trace.h), checked against the attention rows themselves
if $PY -c 'import numpy' 2>/dev/null; then
    check "numpy: score = -key norm (l2) where cached, NaN in the skipped layers 0,1; evicted_at and kv_bytes agree with the rows" \
        $PY - "$R" <<'EOF'
import sys, numpy as np
z = np.load(sys.argv[1] + "/trace.npz")
a, k, s, e, kb = z["attn"][0], z["key_norm"][0], z["score"][0], z["evicted_at"][0], z["kv_bytes"][0]
qpos, kvh = z["query_pos"], list(z["kv_head"])
NL, NH, Q, P = a.shape
KV = k.shape[1]
assert s.shape == (NL, KV, Q, P) and e.shape == (NL, KV, P) and kb.shape == (Q, 2)
assert np.all(np.isnan(s[:2])) and np.all(e[:2] == -1), "l2 skips layers 0 and 1"
for li in range(NL):
    for hi in range(NH):
        g = kvh[hi]
        for q in range(Q):
            cached = np.isfinite(a[li, hi, q])
            # cached = not evicted before this query and not in its future
            before = (e[li, g] >= 0) & (e[li, g] < qpos[q])
            assert np.array_equal(cached, (np.arange(P) <= qpos[q]) & ~before), (li, hi, q)
            if li < 2:
                continue
            # the score l2 ranks by: -|k| before RoPE; trace's norm is after RoPE (a rotation)
            assert np.array_equal(np.isfinite(s[li, g, q]), cached), (li, hi, q)
            assert np.allclose(s[li, g, q, cached], -k[li, g, cached], rtol=1e-5), (li, hi, q)
slot = 2 * 64 * 4 + 4                         # fp32 key + value of head_dim 64, a position
for q in range(Q):
    gone = int((e == qpos[q]).sum())          # slots evicted after this query's forward, all layers
    assert kb[q, 0] - kb[q, 1] == gone * slot, (q, kb[q], gone)
    held = sum(int(np.isfinite(a[li, kvh.index(g), q]).sum()) for li in range(NL) for g in range(KV))
    assert kb[q, 0] == held * slot, (q, kb[q], held)
assert (e >= 0).sum() > 0
EOF
fi

expect_ok "trace --html without a policy (stories260k, all steps)" \
    "$KVLAB" trace -m "$STORIES" -p "Once upon a time, there was a cat" --gen 6 -o "$TMP/plain" --html "$TMP/plain.html"
check "without a policy the page has no score, evicted_at or kv_bytes data" \
    grep -q '"score":null,"evicted_at":null,"kv_bytes":null' "$TMP/plain.html"

# a bf16 cache: the page's full-cache bytes per token (the "% of the full cache" it shows)
# count a slot as 2 x head_dim bf16 + its position, as the kv_bytes the trace records do
expect_ok "trace --html --kv-dtype bf16 (stories260k, l2)" \
    "$KVLAB" trace -m "$STORIES" -p "Once upon a time, there was a cat" --gen 4 --steps decode \
    --policy l2 --compression-ratio 0.5 --kv-dtype bf16 -o "$TMP/bf16" --html "$TMP/bf16.html"
check "meta.json names the KV dtype, bf16" grep -qE '"kv_dtype":[[:space:]]*"bf16"' "$TMP/bf16/meta.json"
per_token=$($PY -c 'import json,sys; m=json.load(open(sys.argv[1]))["model"]; print(m["n_layers"]*m["n_kv_heads"]*(2*m["head_dim"]*2+4))' "$TMP/bf16/meta.json" 2>/dev/null)
check "the bf16 page's full cache is n_layers x n_kv_heads x (2 x head_dim x 2 + 4) = ${per_token:-?} bytes per token" \
    grep -q "\"kv_bytes_per_token\":${per_token:-none}," "$TMP/bf16.html"

expect_fail "--html-max-bytes too small: says the size needed, per layer x head x step" \
    "--html-max-bytes: this selection makes a page of about [0-9]+ bytes .* per layer x head x step" \
    "$KVLAB" trace -m "$STORIES" -p "Once upon a time" --gen 4 -o "$TMP/x" --html "$TMP/x.html" --html-max-bytes 20K
expect_fail "--html-max-bytes not a size" "--html-max-bytes" \
    "$KVLAB" trace -m "$STORIES" -p "Once upon a time" -o "$TMP/x" --html "$TMP/x.html" --html-max-bytes lots
expect_fail "--html with two sequences" "--html: the page shows one sequence" \
    "$KVLAB" trace -m "$STORIES" -f "$SHARED/data/tinystories-valid-head.txt" --chunk 32 --chunks 2 -o "$TMP/x" --html "$TMP/x.html"
check "refused runs leave no page and no run directory" bash -c "[ ! -e '$TMP/x' ] && [ ! -e '$TMP/x.html' ]"
"$KVLAB" trace --help >"$TMP/help"
check "trace --help documents --html and --html-max-bytes" bash -c "grep -q -- '--html FILE' '$TMP/help' && grep -q -- '--html-max-bytes' '$TMP/help'"

expect_ok "view: the page again from the run directory" "$KVLAB" view "$R" -o "$TMP/view.html"
check "view writes the same bytes as trace --html" cmp "$R.html" "$TMP/view.html"
expect_fail "view --html-max-bytes too small: says the size needed" "--html-max-bytes: this page needs [0-9]+ bytes" \
    "$KVLAB" view "$R" -o "$TMP/y.html" --html-max-bytes 100K
expect_fail "view of a directory without a trace" "meta.json" "$KVLAB" view "$TMP" -o "$TMP/y.html"
expect_fail "view without -o" "-o" "$KVLAB" view "$R"
check "refused views leave no page" test ! -e "$TMP/y.html"
"$KVLAB" view --help >"$TMP/help_view"
check "view --help documents every option" bash -c "for o in RUN_DIR -o -t -m --html-max-bytes; do grep -q -- \"\$o\" '$TMP/help_view' || exit 1; done"

# ---- in a real browser ------------------------------------------------------------------
skip=""
[ -x "$CHROMIUM" ] || skip="$CHROMIUM is not installed (apt-get install chromium)"
[ -z "$skip" ] && ! command -v node >/dev/null && skip="node is not installed (apt-get install nodejs npm)"
[ -z "$skip" ] && ! command -v npm >/dev/null && skip="npm is not installed (apt-get install npm)"
[ -z "$skip" ] && ! $PY -c 'import numpy' 2>/dev/null && skip="$PY has no numpy"
if [ -n "$skip" ] && [ "${KVLAB_REQUIRE_BROWSER:-0}" = 1 ]; then
    fail "the browser test cannot run, and KVLAB_REQUIRE_BROWSER=1 requires it" "$skip"
elif [ -n "$skip" ]; then
    echo "skip  the browser test: $skip"
else
    # playwright-core, pinned by package-lock.json, into the git-ignored tests/browser/node_modules
    if [ ! -d "$BROWSER_DIR/node_modules/playwright-core" ]; then
        (cd "$BROWSER_DIR" && npm ci --no-audit --no-fund --loglevel=error) >"$TMP/npm.log" 2>&1 ||
            fail "npm ci in $BROWSER_DIR (playwright-core)" "$(tail -n 5 "$TMP/npm.log")"
    fi
    if [ -d "$BROWSER_DIR/node_modules/playwright-core" ]; then
        check "numpy reads the values the page must show" $PY "$BROWSER_DIR/expected_values.py" "$R" "$TMP/expected.json"
        shot=${PAGE_SCREENSHOT:-$TMP/page.png}
        CHROMIUM=$CHROMIUM timeout 120 node "$BROWSER_DIR/page_test.js" "$R.html" "$TMP/expected.json" "$shot" >"$TMP/browser.log" 2>&1
        grep -E '^(ok|FAIL|      )' "$TMP/browser.log"
        line=$(grep '^RESULT ' "$TMP/browser.log" | tail -n 1)
        if [[ $line =~ passed=([0-9]+)\ failed=([0-9]+) ]]; then
            PASSED=$((PASSED + BASH_REMATCH[1])); FAILED=$((FAILED + BASH_REMATCH[2]))
        else
            fail "the browser test ran to its end" "$(tail -n 5 "$TMP/browser.log")"
        fi
        check "the screenshot is a PNG" bash -c "[ \"\$(head -c 4 '$shot' | tail -c 3)\" = PNG ] && [ \$(stat -c %s '$shot') -gt 20000 ]"
        # the browser test can fail: the same page with one console error and one image
        # to fetch must fail exactly those two checks
        sed -e 's|^"use strict";$|"use strict"; console.error("an error put in by cli_html.sh");|' \
            -e 's|<footer id="sizes"></footer>|<img src="http://127.0.0.1:9/x.png" alt=""><footer id="sizes"></footer>|' \
            "$R.html" >"$TMP/broken.html"
        CHROMIUM=$CHROMIUM timeout 120 node "$BROWSER_DIR/page_test.js" "$TMP/broken.html" "$TMP/expected.json" "$TMP/broken.png" \
            >"$TMP/broken.log" 2>&1
        check "the browser test fails a page with a console error and a network request (and only those checks)" \
            bash -c "grep -q '^FAIL  no console error' '$TMP/broken.log' && grep -q '^FAIL  no network request' '$TMP/broken.log' &&
                     grep -q '^RESULT page_test passed=[1-9][0-9]* failed=2$' '$TMP/broken.log'"
    fi
fi
# a missing browser: a skip line, or a failure where the browser test is required (CI);
# this script once more without chromium (not when it is that second run)
if [ -z "${CLI_HTML_NO_BROWSER_RUN:-}" ]; then
    CLI_HTML_NO_BROWSER_RUN=1 CHROMIUM=/nonexistent/chromium KVLAB_REQUIRE_BROWSER=0 bash "$0" >"$TMP/skip.log" 2>&1
    check "without chromium: a skip line naming it, no failure" \
        bash -c "grep -q '^skip  the browser test: /nonexistent/chromium is not installed' '$TMP/skip.log' && grep -q '^RESULT .* failed=0$' '$TMP/skip.log'"
    CLI_HTML_NO_BROWSER_RUN=1 CHROMIUM=/nonexistent/chromium KVLAB_REQUIRE_BROWSER=1 bash "$0" >"$TMP/require.log" 2>&1
    check "without chromium and KVLAB_REQUIRE_BROWSER=1: exactly one failure, naming it" \
        bash -c "grep -q '^FAIL  the browser test cannot run' '$TMP/require.log' && grep -q '^RESULT .* failed=1$' '$TMP/require.log'"
    check ".ci/run requires the browser test (KVLAB_REQUIRE_BROWSER=1) where it installs chromium" \
        grep -q '^export KVLAB_REQUIRE_BROWSER=1' .ci/run
fi
finish
