/* splitmix64.h — the one 64-bit mixer every seeded choice in kvlab comes from
 * (Steele, Lea & Flood, "Fast splittable pseudorandom number generators",
 * OOPSLA 2014; the constants of Vigna's splitmix64.c).
 *
 * The generator's state is a counter that steps by SPLITMIX64_GAMMA; each
 * output is the counter pushed through splitmix64_mix, a bijection whose
 * every output bit depends on every input bit. So the same function serves
 * three ways, all integer-exact and the same on every machine:
 *   a stream        x_k = splitmix64_next(&state)   (state += GAMMA, then mix)
 *   random access   splitmix64_at(seed, k)          (= the k-th output, from 0, of
 *                                                    a stream whose state starts at seed)
 *   a hash          splitmix64(x) = splitmix64_at(x, 0): seeds and keys are
 *                   combined as splitmix64(splitmix64(a) ^ b) */
#ifndef KVLAB_SPLITMIX64_H
#define KVLAB_SPLITMIX64_H

#include <stdint.h>

#define SPLITMIX64_GAMMA 0x9e3779b97f4a7c15ull   /* 2^64 / the golden ratio, odd */

/* The finaliser (Stafford's "Mix13" variant of MurmurHash3's fmix64). */
static inline uint64_t splitmix64_mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint64_t splitmix64_at(uint64_t seed, uint64_t k) {
    return splitmix64_mix(seed + SPLITMIX64_GAMMA * (k + 1));
}

static inline uint64_t splitmix64(uint64_t x) { return splitmix64_mix(x + SPLITMIX64_GAMMA); }

static inline uint64_t splitmix64_next(uint64_t *state) { return splitmix64_mix(*state += SPLITMIX64_GAMMA); }

/* A double in [0, 1) from the top 53 bits of one output. */
static inline double splitmix64_unit(uint64_t *state) { return (double)(splitmix64_next(state) >> 11) * 0x1.0p-53; }

#endif
