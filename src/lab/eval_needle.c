/* eval_needle.c — the evaluation behind `kvlab needle` (cli/cmd_needle.c):
 * needle in a haystack with a compressed KV cache 
 * (../shared/spec/methods.md §6: Kamradt's needle, the L2 paper's prompt and word-overlap score).
 *
 * For a length L (tokens) and a depth d (percent): the haystack's first
 * tokens, cut to L - buffer - |needle| (Kamradt's final_context_length_buffer,
 * 200), the needle's tokens inserted at floor(len * d/100) moved back to just
 * after the previous period token (Kamradt insert_needle), decoded back to
 * text and wrapped in the L2 paper's prompt:
 *   "This is a very long story book: <book> {context} </book>.\n Based on the
 *    content of the book, Question: {question}\nAnswer:"
 * Protocol (../shared/spec/methods.md §1): full prefill, the first answer token from the full cache,
 * compress once (`--schedule prefill`, the default here), then greedy decoding
 * of --max-new tokens (50, as the L2 code). Score = |words(answer) ∩
 * words(needle)| / |words(needle)|, lower-cased word sets.
 *
 * Unit of work = one (length, depth) cell; no randomness (a `random` policy
 * has its own seed parameter). */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lab/eval.h"
#include "lab/runlog.h"
#include "lab/runmeta.h"

/* ---- insertion and score ----------------------------------------------------------------- */

int needle_is_period(const Tokenizer *tok, int id) {
    char buf[8];
    const char *p = tokenizer_piece(tok, 3, id, buf);   /* prev 3: not BOS, keep the space */
    while (*p == ' ') p++;
    return !strcmp(p, ".");
}

int needle_insert(const Tokenizer *tok, const int *context, int n_context, const int *needle, int n_needle,
                  int budget, double depth_percent, int *out, int *insert_at) {
    int n = n_context;
    if (n + n_needle > budget) n = budget - n_needle > 0 ? budget - n_needle : 0;
    int at = n;
    if (depth_percent < 100) {
        at = (int)(n * (depth_percent / 100.0));
        while (at > 0 && !needle_is_period(tok, context[at - 1])) at--;
    }
    memcpy(out, context, (size_t)at * sizeof(int));
    memcpy(out + at, needle, (size_t)n_needle * sizeof(int));
    memcpy(out + at + n_needle, context + at, (size_t)(n - at) * sizeof(int));
    *insert_at = at;
    return n + n_needle;
}

/* Lower-cased words (letters, digits, apostrophes), each once. */
static int word_set(const char *s, char ***out) {
    int n = 0, cap = 16;
    char **w = xmalloc((size_t)cap * sizeof(char *));
    for (const char *p = s; *p;) {
        while (*p && !(isalnum((unsigned char)*p) || *p == '\'')) p++;
        const char *b = p;
        while (*p && (isalnum((unsigned char)*p) || *p == '\'')) p++;
        if (p == b) continue;
        char *word = xmalloc((size_t)(p - b) + 1);
        for (int i = 0; i < p - b; i++) word[i] = (char)tolower((unsigned char)b[i]);
        word[p - b] = '\0';
        int seen = 0;
        for (int i = 0; i < n && !seen; i++) seen = !strcmp(w[i], word);
        if (seen) { free(word); continue; }
        if (n == cap) w = xrealloc(w, (size_t)(cap *= 2) * sizeof(char *));
        w[n++] = word;
    }
    *out = w;
    return n;
}

static void free_words(char **w, int n) {
    for (int i = 0; i < n; i++) free(w[i]);
    free(w);
}

double needle_score(const char *answer, const char *needle) {
    char **a, **nd;
    int na = word_set(answer, &a), nn = word_set(needle, &nd), hit = 0;
    for (int i = 0; i < nn; i++)
        for (int j = 0; j < na; j++)
            if (!strcmp(nd[i], a[j])) { hit++; break; }
    free_words(a, na);
    free_words(nd, nn);
    return nn ? (double)hit / nn : 0.0;
}
