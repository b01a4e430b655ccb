/* test_eval.c — the evaluations' parts: the perplexity protocol
 * against the Hugging Face golden NLL, the reference run, the passkey prompt
 * builder and answer parser, the needle insertion and score, the run log
 * (append, resume, torn last line, refusals), the seeded streams and the
 * progress line. End-to-end runs of the commands are in tests/cli_eval.sh. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "lab/eval.h"
#include "formats/npy.h"
#include "engine/ops.h"
#include "lab/progress.h"
#include "lab/runlog.h"

static char tmpdir[256];

static void load_model(Model *m, const char *rel) {
    char path[512];
    Err err;
    if (model_load(m, shared_path(path, sizeof path, rel), DTYPE_F32, &err) != 0) { fprintf(stderr, "%s\n", err.msg); exit(1); }
}

static Tokenizer *stories_tokenizer(void) {
    char path[512];
    Err err;
    Tokenizer *t = tokenizer_load(shared_path(path, sizeof path, "models/stories260k/tok512.bin"), &err);
    if (!t) { fprintf(stderr, "%s\n", err.msg); exit(1); }
    return t;
}

/* ---- perplexity ------------------------------------------------------------------------- */

/* ../shared/spec/methods.md §6 with the full cache = plain teacher forcing: exp(mean NLL) equals the
 * golden's exp(mean nll) (HF transformers, fp32) to 1e-4 relative. */
static void golden_ppl(const char *model_rel, const char *npz_rel) {
    char npz[512];
    shared_path(npz, sizeof npz, npz_rel);
    Model m;
    load_model(&m, model_rel);
    NpyArray a_ids, a_nll;
    Err err;
    if (npz_read(&a_ids, npz, "ids", &err) || npz_read(&a_nll, npz, "nll", &err)) { fprintf(stderr, "%s\n", err.msg); exit(1); }
    int64_t *ids64 = npy_to_i64(&a_ids);
    float *nll = npy_to_f32(&a_nll);
    int n = (int)a_ids.count;
    int *ids = xmalloc((size_t)n * sizeof(int));
    for (int i = 0; i < n; i++) ids[i] = (int)ids64[i];
    KVCache cache;
    if (forward_cache_init(&m, &cache, n, &err)) { fprintf(stderr, "%s\n", err.msg); exit(1); }
    Forward *f = forward_create(&m, 1);
    PolicyOpts po;
    policy_defaults(&po);             /* full */
    policy_resolve(&po, &err);
    Policy *p = policy_create(&po, &m.cfg, n, &err);
    PplRunner r = { f, NULL, &cache, NULL, p, 1, m.cfg.vocab_size, NULL, NULL };
    PplToken *tok = xmalloc((size_t)n * sizeof(PplToken));
    int rc = ppl_run_sequence(&r, ids, n, tok, NULL, NULL, &err);
    CHECK(rc == 0, "%s", err.msg);
    double mine = 0, gold = 0, worst = 0;
    int kl_zero = 1;
    for (int t = 0; t + 1 < n; t++) {
        mine += tok[t].nll;
        gold += nll[t];
        if (fabs(tok[t].nll - nll[t]) > worst) worst = fabs(tok[t].nll - nll[t]);
        kl_zero &= tok[t].kl == 0 && tok[t].agree == 1 && tok[t].nll == tok[t].nll_ref;
    }
    double ppl = exp(mine / (n - 1)), ppl_gold = exp(gold / (n - 1));
    CHECK(fabs(ppl / ppl_gold - 1) <= 1e-4, "%s: ppl %.8g vs golden %.8g (rel %.3g)", npz_rel, ppl, ppl_gold, fabs(ppl / ppl_gold - 1));
    CHECK(worst <= 1e-3, "%s: worst per-token |nll diff| %.3g", npz_rel, worst);
    CHECK(kl_zero, "full cache as its own reference: KL 0, agreement 1");
    printf("  %s: ppl %.6f, golden %.6f, worst token |dNLL| %.2g\n", npz_rel, ppl, ppl_gold, worst);
    free(tok); policy_free(p); forward_free(f); kvcache_free(&cache);
    free(ids); free(ids64); free(nll); npy_free(&a_ids); npy_free(&a_nll);
    model_free(&m);
}

/* With a reference run: identical to the policy run until the first eviction
 * (threshold:T fires once a layer holds T tokens), different after. */
static void reference_run(void) {
    Model m;
    load_model(&m, "models/stories260k/stories260K.bin");
    Err err;
    const int n = 96, T = 32;
    int ids[96];
    NpyArray a;
    char npz[512];
    if (npz_read(&a, shared_path(npz, sizeof npz, "golden/golden_stories260K_text.npz"), "ids", &err)) exit(1);
    int64_t *ids64 = npy_to_i64(&a);
    for (int i = 0; i < n; i++) ids[i] = (int)ids64[i];
    KVCache c1, c2;
    forward_cache_init(&m, &c1, n, &err);
    forward_cache_init(&m, &c2, n, &err);
    Forward *f1 = forward_create(&m, 1), *f2 = forward_create(&m, 1);
    PolicyOpts po;
    policy_defaults(&po);
    const char *argv[] = { "x", "--policy", "l2", "--keep-ratio", "0.5", "--schedule", "threshold:32" };
    for (int i = 1; i < 7; i++) policy_option(&po, 7, (char **)argv, &i);
    CHECK(policy_resolve(&po, &err) == 0, "%s", err.msg);
    Policy *p = policy_create(&po, &m.cfg, n, &err);
    PplRunner r = { f1, f2, &c1, &c2, p, 0, m.cfg.vocab_size, NULL, NULL };
    PplToken tok[96];
    CHECK(ppl_run_sequence(&r, ids, n, tok, NULL, NULL, &err) == 0, "%s", err.msg);
    int same_before = 1, differs_after = 0;
    for (int t = 0; t + 1 < n; t++) {
        if (t < T - 1) same_before &= tok[t].kl == 0 && tok[t].nll == tok[t].nll_ref && tok[t].agree == 1;
        else differs_after |= tok[t].kl > 1e-6;
    }
    CHECK(same_before, "no eviction before %d tokens: the two runs agree exactly", T);
    CHECK(differs_after, "after the first eviction the KL is positive somewhere");
    /* 3 of 5 layers compressed (l2 skips 0,1): at T tokens they drop to 16 */
    CHECK_CLOSE(tok[T - 1].kv, (2.0 * T + 3.0 * (T / 2)) / 5.0, 1e-9, "kv per head right after the first eviction");
    policy_free(p); forward_free(f1); forward_free(f2); kvcache_free(&c1); kvcache_free(&c2);
    free(ids64); npy_free(&a); model_free(&m);
}

static void token_scores(void) {
    float a[4] = { 1, 2, 3, 4 }, b[4] = { 4, 3, 2, 1 };
    PplToken t;
    ppl_token_score(a, a, 4, 3, &t);
    double lse = log(exp(1) + exp(2) + exp(3) + exp(4));
    CHECK_CLOSE(t.nll, lse - 4, 1e-12, "nll");
    CHECK(t.correct == 1 && t.agree == 1 && t.kl == 0, "same rows");
    ppl_token_score(a, b, 4, 0, &t);
    double kl = 0;
    for (int i = 0; i < 4; i++) kl += exp(b[i] - lse) * ((b[i] - lse) - (a[i] - lse));
    CHECK_CLOSE(t.kl, kl, 1e-12, "KL(ref || policy)");
    CHECK(t.correct == 0 && t.correct_ref == 1 && t.agree == 0, "argmax 3 vs 0");
    ppl_token_score(a, NULL, 4, 0, &t);
    CHECK(isnan(t.kl) && isnan(t.nll_ref) && t.agree == -1, "no reference: NaN / -1");
}

/* ---- passkey ------------------------------------------------------------------------------ */

static void passkey_prompt_cases(void) {
    /* garbage_inf = " ".join([garbage] * 5000): the separator follows each copy */
    char *g = passkey_garbage(200);
    size_t L = strlen(PASSKEY_GARBAGE);
    CHECK(!strncmp(g, PASSKEY_GARBAGE, L) && g[L] == ' ' && !strncmp(g + L + 1, "The grass", 9), "%.120s", g);
    free(g);
    char *p = passkey_prompt(30, 10, "12345");
    const char *want = PASSKEY_TASK "\nThe grass \nThe pass key is 12345. Remember it. 12345 is the pass key.\n"
                       "The grass is green. \nWhat is the pass key? The pass key is";
    CHECK(!strcmp(p, want), "prompt:\n%s\nwant:\n%s", p, want);
    free(p);
    p = passkey_prompt(0, 0, "7");
    CHECK(!strcmp(p, PASSKEY_TASK "\n\nThe pass key is 7. Remember it. 7 is the pass key.\n\n" PASSKEY_QUESTION), "%s", p);
    free(p);
}

static void passkey_keys(void) {
    int lo = 1 << 30, hi = 0;
    for (int u = 0; u < 2000; u++) {
        EvalRng r = eval_rng(7, 1, (uint64_t)u);
        char key[80];
        passkey_make_key(&r, 5, key, sizeof key);
        int k = atoi(key);
        if (k < lo) lo = k;
        if (k > hi) hi = k;
    }
    CHECK(lo >= 1 && hi < 50000 && hi > 45000 && lo < 5000, "5-digit keys in [1, 50000): %d..%d", lo, hi);
    EvalRng r = eval_rng(7, 1, 3);
    char key[80];
    passkey_make_key(&r, 64, key, sizeof key);
    CHECK(strlen(key) == 64 && key[0] != '0' && strspn(key, "0123456789") == 64, "64 digits: %s", key);
    EvalRng a = eval_rng(1, 2, 3), b = eval_rng(1, 2, 3), c = eval_rng(1, 2, 4);
    uint64_t xa = eval_next(&a), xb = eval_next(&b), xc = eval_next(&c);
    CHECK(xa == xb && xa != xc, "streams: same (seed, stream, unit) same numbers, another unit others");
}

static void passkey_answers(void) {
    CHECK(passkey_correct(" 12345. Remember it.", "12345"), "plain");
    CHECK(passkey_correct("is 012345", "12345"), "leading zero: the same integer");
    CHECK(!passkey_correct(" 1234 5", "12345"), "first integer only");
    CHECK(!passkey_correct(" 99, 12345", "12345"), "first integer is 99");
    CHECK(!passkey_correct("no digits", "12345"), "no integer");
    CHECK(passkey_correct("x123456", "123456"), "inside a word");
    char out[16];
    passkey_first_integer("ab 42c7", out, sizeof out);
    CHECK(!strcmp(out, "42"), "%s", out);
    CHECK(longest_common_substring("xx12345yy", "0123456") == 5, "lcs");
    CHECK(longest_common_substring("", "12") == 0 && longest_common_substring("abc", "xyz") == 0, "lcs empty");
}

static void passkey_fit_cases(void) {
    Tokenizer *t = stories_tokenizer();
    Err err;
    for (int L = 200; L <= 480; L += 70) {
        int n_tok, n = passkey_fit(t, L, 0.5, "31415", &n_tok, &err);
        char *p = passkey_prompt(n, n / 2, "31415");
        int check = tokenizer_encode(t, p, 1, NULL, 0, &err);
        free(p);
        CHECK(n > 0 && n_tok == check && n_tok <= L && n_tok >= L - 3, "L=%d: n_garbage %d -> %d tokens", L, n, n_tok);
    }
    int n_tok = 0;
    CHECK(passkey_fit(t, 50, 0.5, "31415", &n_tok, &err) == -1 && n_tok > 50, "too short: -1 (needs %d)", n_tok);
    tokenizer_free(t);
}

/* ---- needle ---------------------------------------------------------------------------------- */

static void needle_scores(void) {
    CHECK_CLOSE(needle_score(NEEDLE_TEXT, NEEDLE_TEXT), 1.0, 0, "the needle itself");
    CHECK_CLOSE(needle_score("", NEEDLE_TEXT), 0.0, 0, "empty answer");
    /* 19 distinct words in the needle */
    CHECK_CLOSE(needle_score("EAT a Sandwich!!", NEEDLE_TEXT), 3.0 / 19, 1e-12, "case and punctuation");
    CHECK_CLOSE(needle_score("sandwich sandwich sandwich", NEEDLE_TEXT), 1.0 / 19, 1e-12, "a word counts once");
}

static void needle_insertion(void) {
    Tokenizer *t = stories_tokenizer();
    Err err;
    const char *text = "Tom ran home. He was sad. Mom gave him a hug. He smiled.";
    int ctx[64], nd[8], out[80], at;
    int n = tokenizer_encode(t, text, 0, ctx, 64, &err);
    int m = tokenizer_encode(t, "Zz", 0, nd, 8, &err)   /* the dummy prefix gives its space */;
    int len = needle_insert(t, ctx, n, nd, m, 1000, 50, out, &at);
    CHECK(len == n + m && at > 0 && at <= n / 2 && needle_is_period(t, ctx[at - 1]), "depth 50: after a period (at %d of %d)", at, n);
    CHECK(!memcmp(out + at, nd, (size_t)m * sizeof(int)) && !memcmp(out + at + m, ctx + at, (size_t)(n - at) * sizeof(int)), "layout");
    char *s = tokenizer_decode(t, out, len, &err);
    CHECK(strstr(s, ". Zz") != NULL, "sentence back-off: %s", s);
    free(s);
    needle_insert(t, ctx, n, nd, m, 1000, 0, out, &at);
    CHECK(at == 0, "depth 0: at the start");
    needle_insert(t, ctx, n, nd, m, 1000, 100, out, &at);
    CHECK(at == n, "depth 100: at the end");
    len = needle_insert(t, ctx, n, nd, m, 10 + m, 100, out, &at);
    CHECK(len == 10 + m && at == 10, "budget: the context is cut to budget - needle");
    tokenizer_free(t);
}

/* ---- run log --------------------------------------------------------------------------------- */

static RunLog *open_log(const char *dir, const char *config, int resume, Err *err) {
    RunLogSpec s = { dir, config, "a,b,text", "pos,x", 4, resume };
    return runlog_open(&s, err);
}

static int file_has(const char *dir, const char *name, const char *want) {
    char path[512], *text;
    size_t size;
    Err err;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (read_file(path, &text, &size, &err)) return 0;
    int ok = !strcmp(text, want);
    if (!ok) fprintf(stderr, "  %s:\n%s", name, text);
    free(text);
    return ok;
}

static void append_raw(const char *dir, const char *name, const char *text) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "a");
    fputs(text, f);
    fclose(f);
}

static void runlog_cases(void) {
    char dir[300];
    Err err;
    snprintf(dir, sizeof dir, "%s/run", tmpdir);
    RunLog *r = open_log(dir, "{\"k\":1}", 0, &err);
    CHECK(r != NULL, "%s", err.msg);
    char *q = csv_quote("hi, \"you\"\nthere");
    CHECK(!strcmp(q, "\"hi, \"\"you\"\"\\nthere\""), "%s", q);
    char row[200];
    snprintf(row, sizeof row, "1,2,%s", q);
    CHECK(runlog_append(r, 2, row, "1,0.5\n2,0.25\n", 0.1, &err) == 0, "%s", err.msg);
    CHECK(runlog_append(r, 0, "3,4,plain", "1,9\n", 0.2, &err) == 0, "%s", err.msg);
    CHECK(runlog_append(r, 0, "3,4,plain", NULL, 0.2, &err) == -1, "a unit is recorded once");
    CHECK(runlog_append(r, 1, "3,4", NULL, 0.2, &err) == -1, "wrong column count refused");
    runlog_close(r);
    /* a kill: the details of unit 1 were written, its row only half */
    append_raw(dir, "log/details.csv", "1,1,7\n1,2,8\n");
    append_raw(dir, "log/units.csv", "1,5,6,tor");
    CHECK(open_log(dir, "{\"k\":1}", 0, &err) == NULL && strstr(err.msg, "--resume"), "no --resume: refused (%s)", err.msg);
    CHECK(open_log(dir, "{\"k\":2}", 1, &err) == NULL && strstr(err.msg, "k: was 1") != NULL, "other config: refused (%s)", err.msg);
    r = open_log(dir, "{\"k\":1}", 1, &err);
    CHECK(r && runlog_count(r) == 2 && runlog_done(r, 0) && runlog_done(r, 2) && !runlog_done(r, 1), "resume: 2 units");
    if (!r) return;
    CHECK(!strcmp(runlog_field(r, 2, "text"), "hi, \"you\"\\nthere") && runlog_number(r, 0, "b") == 4, "fields read back");
    CHECK(runlog_detail_count(r, 2) == 2 && runlog_detail_count(r, 1) == 0, "details of the unfinished unit dropped");
    CHECK(!strcmp(runlog_detail_field(r, 2, 1, runlog_detail_column(r, "x")), "0.25"), "detail field");
    CHECK(runlog_append(r, 1, "5,6,whole", "1,7\n", 0.3, &err) == 0, "%s", err.msg);
    CHECK(runlog_write_results(r, "results.csv", &err) == 0 && runlog_write_details(r, "details.csv", &err) == 0, "%s", err.msg);
    char want[400];
    snprintf(want, sizeof want, "unit,a,b,text\n0,3,4,plain\n1,5,6,whole\n2,1,2,%s\n", q);
    CHECK(file_has(dir, "results.csv", want), "results sorted by unit, no timing column");
    CHECK(file_has(dir, "details.csv", "unit,pos,x\n0,1,9\n1,1,7\n2,1,0.5\n2,2,0.25\n"), "details sorted by unit");
    CHECK(fabs(runlog_compute_seconds(r) - 0.6) < 1e-9, "compute seconds over sessions");
    runlog_close(r);
    free(q);
    char *fields[8], line[] = "a,\"b,c\",\"d\"\"e\",";
    CHECK(csv_split(line, fields, 8) == 4 && !strcmp(fields[1], "b,c") && !strcmp(fields[2], "d\"e") && !*fields[3], "csv_split");
    char bad[] = "\"open";
    CHECK(csv_split(bad, fields, 8) == -1, "unterminated quote");
}

static void progress_cases(void) {
    ProgressLine p;
    progress_line_start(&p, "ppl", "tok", 1000, 400);
    progress_line_group(&p, "chunks", 10, 4);
    p.done = 600;                       /* 200 done by this process in 2 s */
    char buf[256];
    progress_line_format(&p, p.t0 + 2.0, buf, sizeof buf);
    CHECK(!strcmp(buf, "ppl: 4/10 chunks, 600/1000 tok (60%), 100.0 tok/s, ETA 4s"), "%s", buf);
}

static void grid_summary(void) {
    int lengths[2] = { 512, 1024 }, depths[3] = { 0, 50, 100 };
    Grid g;
    grid_init(&g, lengths, 2, depths, 3, 2);
    double a[2] = { 1, 0.5 }, b[2] = { 0, 0.25 }, c[2] = { 1, 1 };
    grid_add(&g, 0, 0, a);
    grid_add(&g, 0, 0, b);
    grid_add(&g, 1, 2, c);   /* (512, 50), (512, 100), (1024, 0), (1024, 50): no units */
    char *csv = grid_csv(&g, "length,depth,trials,accuracy,partial");
    const char *want = "length,depth,trials,accuracy,partial\n"
                       "512,0,2,0.5,0.375\n1024,100,1,1,1\n"
                       "512,all,2,0.5,0.375\n1024,all,1,1,1\n"
                       "all,0,2,0.5,0.375\nall,100,1,1,1\n"
                       "all,all,3,0.666667,0.583333\n";
    CHECK(!strcmp(csv, want), "summary.csv:\n%s", csv);
    CHECK(g.all.n == 3 && g.all.sum[0] == 2.0 && g.all.sum[1] == 1.75, "totals");
    free(csv);
    grid_free(&g);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/kvlab-test-eval-%d", (int)getpid());
    mkdir(tmpdir, 0777);
    ops_set_threads(1);
    CASE("ppl: per-token scores (NLL, KL(full || policy), agreement)") token_scores();
    CASE("ppl: full cache = golden exp(mean nll), stories260K") golden_ppl("models/stories260k/stories260K.bin", "golden/golden_stories260K_text.npz");
    CASE("ppl: full cache = golden exp(mean nll), demo-25m") golden_ppl("models/demo-25m", "golden/golden_demo_wikitext.npz");
    CASE("ppl: reference run equals the policy run until the first eviction") reference_run();
    CASE("passkey: the Landmark prompt, byte for byte") passkey_prompt_cases();
    CASE("passkey: keys and seeded streams") passkey_keys();
    CASE("passkey: answer parser (first integer) and partial match") passkey_answers();
    CASE("passkey: lengths in tokens honoured by sizing the garbage") passkey_fit_cases();
    CASE("needle: word-overlap score") needle_scores();
    CASE("needle: insertion with sentence back-off") needle_insertion();
    CASE("passkey/needle summary: means per cell, length, depth and overall; empty cells left out") grid_summary();
    CASE("runlog: append, torn last line, resume, refusals, final files") runlog_cases();
    CASE("progress: rate and ETA count only this session's work") progress_cases();
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return check_summary();
}
