/* numcheck.h — numerical guards and resource limits.
 *
 * A NaN or Inf in one weight (a bad conversion, a corrupt download, a poked
 * byte) does not crash the forward pass: it spreads through the residual
 * stream and the sampler then picks "tokens" from NaN logits, so the run
 * prints garbage text and exits 0. The guard turns that into an error that
 * says where it started:
 *
 *   NumGuard *g = numguard_attach(f, &m);     // watches every layer's output
 *   forward(f, ...);
 *   if (numguard_check(g, forward_last_logits(f), 1, &err)) die("%s", err.msg);
 *   ... numguard_free(g);
 *
 * The check costs V floats per forward; the per-layer watch n·dim floats per
 * layer (nothing next to the matrix products). Only a failed check scans
 * weights: first those of the layer whose output went non-finite first, then
 * every tensor of the model, and names the tensor in the file's own naming
 * ("model.layers.3.self_attn.q_proj.weight has NaN at [5, 12]").
 *
 * The context limit: the KV cache grows lazily, so a context too large for
 * the machine would fail deep into a run (or get the process killed); the
 * commands refuse it up front instead (numcheck_ctx_fits). */
#ifndef KVLAB_NUMCHECK_H
#define KVLAB_NUMCHECK_H

#include <stddef.h>

#include "engine/forward.h"
#include "model/model.h"
#include "base/util.h"

/* Index of the first NaN/Inf in x[0..n), or -1 if all are finite. */
long numcheck_first_nonfinite(const float *x, size_t n);

/* Where a non-finite weight is. layer = -1 for the embedding, final norm and
 * classifier. */
typedef struct {
    int layer;
    char tensor[96];    /* the name the checkpoint's format uses */
    long row, col;      /* col = -1 for a vector */
    float value;
} NumFinding;

/* Scan one layer's weights (norms and the seven matrices); 1 found, 0 clean. */
int numcheck_scan_layer(const Model *m, int layer, NumFinding *out);
/* Scan every tensor (embedding, layers in order, final norm, classifier). */
int numcheck_scan_model(const Model *m, NumFinding *out);

typedef struct NumGuard NumGuard;

/* Install a per-layer watch on f (forward_set_layer_hook). */
NumGuard *numguard_attach(Forward *f, const Model *m);
/* Remove the watch and free (NULL is fine). */
void numguard_free(NumGuard *g);
/* 0 if logits[0 .. rows*vocab) are all finite; else -1 with one line naming
 * the first layer whose output went non-finite and the non-finite weight
 * tensor, or saying the weights are finite and the activations overflowed. */
int numguard_check(NumGuard *g, const float *logits, int rows, Err *err);

/* Bytes of memory available (MemAvailable of /proc/meminfo), -1 if unknown.
 * KVLAB_MEM_AVAILABLE=BYTES overrides it (tests of the refusal). */
long long numcheck_mem_available(void);

/* Refuse a context whose KV cache (fp32 keys and values, all layers, at full
 * length) plus the weights still to be paged in from the mapped file (only
 * with --mmap; copies were allocated at load) does not
 * fit in `available` bytes (< 0: unknown, always fits). ctx_given: it came
 * from --ctx (else the model's context length; the message says so). */
int numcheck_ctx_fits(const Model *m, int ctx, int ctx_given, long long available, Err *err);

#endif
