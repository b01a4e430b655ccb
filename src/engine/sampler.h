/* sampler.h — choose the next token from logits: greedy (temperature 0) or
 * temperature + nucleus (top-p) sampling with a seeded generator, so a run is
 * reproducible from its seed. */
#ifndef KVLAB_SAMPLER_H
#define KVLAB_SAMPLER_H

#include <stdint.h>

typedef struct {
    int vocab_size;
    float temperature;   /* 0 = greedy */
    float top_p;         /* 1 = no nucleus cut */
    uint64_t rng_state;
    struct { float prob; int index; } *candidates;   /* [vocab] scratch */
} Sampler;

void sampler_init(Sampler *s, int vocab_size, float temperature, float top_p, uint64_t seed);
void sampler_free(Sampler *s);

/* Greedy: index of the largest logit (the lowest index on ties). */
int argmax(const float *logits, int n);

/* Draw the next token; `logits` is used as scratch (overwritten). */
int sampler_next(Sampler *s, float *logits);

#endif
