/* eval_passkey.c — the evaluation behind `kvlab passkey` (cli/cmd_passkey.c):
 * passkey retrieval with a compressed KV cache (../shared/spec/methods.md §6;
 * the Landmark-attention prompt the L2 paper uses).
 *
 *   prompt = "\n".join([task, garbage_inf[:n_prefix], info, garbage_inf[:n_garbage - n_prefix], question])
 *
 * built in C from the seed. The length asked for is in TOKENS: n_garbage (in
 * characters) is the largest whose tokenized prompt, BOS included, fits
 * (passkey_fit: measured with the model's tokenizer, bisection). The depth is
 * n_prefix / n_garbage: a fixed percentage, or uniform (`random`, the spec's
 * protocol). Protocol of the paper (../shared/spec/methods.md §1): full prefill, the first answer token
 * from the full cache, the cache compressed once (`--schedule prefill`, the
 * default here), greedy decoding of at most --max-new tokens without further
 * eviction. Correct iff the first integer of the answer equals the key;
 * partial = longest common substring / key length (the 64-digit variant).
 *
 * Unit of work = one trial (length, depth, trial), in that nested order. */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lab/eval.h"
#include "lab/runlog.h"
#include "engine/sampler.h"
#include "lab/runmeta.h"

/* ---- the prompt ------------------------------------------------------------------------- */

void passkey_make_key(EvalRng *rng, int digits, char *key, int size) {
    if (digits == 5) {   /* Landmark: random.randint(1, 50000), the spec's [1, 50000) */
        snprintf(key, (size_t)size, "%d", 1 + (int)(eval_uniform(rng) * 49999.0));
        return;
    }
    int n = digits < size - 1 ? digits : size - 1;
    for (int i = 0; i < n; i++) key[i] = (char)('0' + (i == 0 ? 1 + eval_next(rng) % 9 : eval_next(rng) % 10));
    key[n] = '\0';
}

char *passkey_garbage(int n) {
    static const char g[] = PASSKEY_GARBAGE " ";   /* the join's separator after each copy */
    const int period = (int)sizeof g - 1;
    char *s = xmalloc((size_t)n + 1);
    for (int i = 0; i < n; i++) s[i] = g[i % period];
    s[n] = '\0';
    return s;
}

char *passkey_prompt(int n_garbage, int n_prefix, const char *key) {
    char *prefix = passkey_garbage(n_prefix), *suffix = passkey_garbage(n_garbage - n_prefix);
    Buf b = { 0 };
    buf_printf(&b, "%s\n%s\nThe pass key is %s. Remember it. %s is the pass key.\n%s\n%s",
              PASSKEY_TASK, prefix, key, key, suffix, PASSKEY_QUESTION);
    free(prefix);
    free(suffix);
    return b.data;
}

static int prompt_tokens(const Tokenizer *tok, int n_garbage, double depth, const char *key, Err *err) {
    char *p = passkey_prompt(n_garbage, (int)floor(depth * n_garbage), key);
    int n = tokenizer_encode(tok, p, 1, NULL, 0, err);
    free(p);
    return n;
}

/* Token counts grow with n_garbage by about one token per few characters but
 * not strictly monotonically (a cut word can merge differently), so: double an
 * upper bound until it is too long, then bisect to the largest n that fits. */
int passkey_fit(const Tokenizer *tok, int tokens, double depth, const char *key, int *n_tokens, Err *err) {
    int t0 = prompt_tokens(tok, 0, depth, key, err);
    if (t0 < 0) return -1;
    if (t0 > tokens) { *n_tokens = t0; return -1; }
    int lo = 0, lo_tokens = t0, hi = 64;
    for (;;) {
        int t = prompt_tokens(tok, hi, depth, key, err);
        if (t < 0) return -1;
        if (t > tokens) break;
        lo = hi; lo_tokens = t;
        if (hi > (1 << 28)) break;
        hi *= 2;
    }
    while (hi - lo > 1) {
        int mid = lo + (hi - lo) / 2, t = prompt_tokens(tok, mid, depth, key, err);
        if (t < 0) return -1;
        if (t <= tokens) { lo = mid; lo_tokens = t; } else hi = mid;
    }
    *n_tokens = lo_tokens;
    return lo;
}

/* ---- the answer ------------------------------------------------------------------------- */

void passkey_first_integer(const char *text, char *out, int size) {
    const char *p = text;
    while (*p && !isdigit((unsigned char)*p)) p++;
    int n = 0;
    while (isdigit((unsigned char)*p) && n < size - 1) out[n++] = *p++;
    out[n] = '\0';
}

int passkey_correct(const char *answer, const char *key) {
    char first[256];
    passkey_first_integer(answer, first, sizeof first);
    const char *a = first, *k = key;   /* as integers: leading zeros do not count */
    while (*a == '0' && a[1]) a++;
    while (*k == '0' && k[1]) k++;
    return *first && !strcmp(a, k);
}

int longest_common_substring(const char *a, const char *b) {
    int na = (int)strlen(a), nb = (int)strlen(b), best = 0;
    int *prev = xcalloc((size_t)nb + 1, sizeof(int)), *cur = xcalloc((size_t)nb + 1, sizeof(int));
    for (int i = 1; i <= na; i++) {
        for (int j = 1; j <= nb; j++) {
            cur[j] = a[i - 1] == b[j - 1] ? prev[j - 1] + 1 : 0;
            if (cur[j] > best) best = cur[j];
        }
        int *t = prev; prev = cur; cur = t;
    }
    free(prev);
    free(cur);
    return best;
}
