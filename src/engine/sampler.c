/* sampler.c — see sampler.h. */
#include "engine/sampler.h"

#include <math.h>
#include <stdlib.h>

#include "base/util.h"

void sampler_init(Sampler *s, int vocab_size, float temperature, float top_p, uint64_t seed) {
    s->vocab_size = vocab_size;
    s->temperature = temperature;
    s->top_p = top_p;
    s->rng_state = seed ? seed : 0x9E3779B97F4A7C15ull;   /* xorshift must not start at 0 */
    s->candidates = xmalloc((size_t)vocab_size * sizeof *s->candidates);
}

void sampler_free(Sampler *s) { free(s->candidates); s->candidates = NULL; }

int argmax(const float *logits, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) if (logits[i] > logits[best]) best = i;
    return best;
}

/* xorshift64* -> a float in [0, 1) with 24 random bits */
static float random_unit(uint64_t *state) {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    uint64_t r = *state * 0x2545F4914F6CDD1Dull;
    return (float)(r >> 40) / 16777216.0f;
}

static int by_prob_desc(const void *a, const void *b) {
    float pa = *(const float *)a, pb = *(const float *)b;
    return (pa < pb) - (pa > pb);
}

int sampler_next(Sampler *s, float *logits) {
    int n = s->vocab_size;
    if (s->temperature <= 0.0f) return argmax(logits, n);
    /* softmax(logits / T) in double for a stable normaliser */
    float max = logits[argmax(logits, n)];
    double sum = 0.0;
    for (int i = 0; i < n; i++) { logits[i] = expf((logits[i] - max) / s->temperature); sum += logits[i]; }
    for (int i = 0; i < n; i++) logits[i] = (float)(logits[i] / sum);
    float coin = random_unit(&s->rng_state);
    if (s->top_p >= 1.0f) {
        float cdf = 0.0f;
        for (int i = 0; i < n; i++) { cdf += logits[i]; if (coin < cdf) return i; }
        return n - 1;
    }
    /* nucleus: the smallest set of most likely tokens whose mass reaches top_p.
     * Tokens below (1 - top_p)/(n - 1) cannot be in it, which keeps the sort short. */
    float cutoff = (1.0f - s->top_p) / (float)(n - 1);
    int m = 0;
    for (int i = 0; i < n; i++)
        if (logits[i] >= cutoff) { s->candidates[m].prob = logits[i]; s->candidates[m].index = i; m++; }
    qsort(s->candidates, (size_t)m, sizeof *s->candidates, by_prob_desc);
    float mass = 0.0f;
    int last = m - 1;
    for (int i = 0; i < m; i++) {
        mass += s->candidates[i].prob;
        if (mass > s->top_p) { last = i; break; }
    }
    float r = coin * mass, cdf = 0.0f;
    for (int i = 0; i <= last; i++) { cdf += s->candidates[i].prob; if (r < cdf) return s->candidates[i].index; }
    return s->candidates[last].index;
}
