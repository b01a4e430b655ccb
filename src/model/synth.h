/* synth.h — write a random-weight Hugging Face Llama checkpoint of any shape:
 *
 *   DIR/config.json                        LlamaForCausalLM config
 *   DIR/model.safetensors                  (shards == 1), or
 *   DIR/model-0000i-of-0000N.safetensors   + DIR/model.safetensors.index.json
 *   DIR/tokenizer.model                    only if a tokenizer file was given
 *
 * The fp32 value of element i of tensor NAME is a pure function of (seed, NAME,
 * i), so the same seed and shape give the same values whatever the dtype, the
 * sharding or the write order: tests compare an f32 file with a bf16 one of the
 * same seed. Values: matrices ~ N(0, 0.02)-ish (o_proj/down_proj scaled down by
 * 1/sqrt(2 layers) so the residual stream stays tame), norm weights 1.0.
 *
 * Writing streams tensor by tensor in chunks (a 13.5 GB llama2-7b needs a few MB
 * of memory) into DIR.tmp.PID, renamed to DIR only when complete. */
#ifndef KVLAB_SYNTH_H
#define KVLAB_SYNTH_H

#include <stdint.h>

#include "model/model.h"

typedef struct {
    Config cfg;             /* shape, tied_embeddings, eps, theta, bos/eos */
    DType dtype;            /* on disk: f32, bf16 or f16 */
    int shards;             /* 1: model.safetensors; N: N shards + index */
    uint64_t seed;
    int round_to_bf16;      /* store bf16-rounded values (an f32 file equal to a bf16 one) */
    float norm_std;         /* 0: norm weights exactly 1.0; else 1 + norm_std*noise (tests) */
    int force;              /* replace an existing checkpoint directory */
    const char *tokenizer;  /* copied into DIR (NULL: none) */
    int progress;           /* progress lines on stderr for big outputs */
} SynthOpts;

#define SYNTH_MAX_SHARDS MODEL_MAX_FILES

/* Defaults: bf16, 1 shard, seed 0, no tokenizer, progress on; cfg zeroed. */
void synth_defaults(SynthOpts *o);

/* "llama2-7b", "llama2-13b", "llama2-70b", "demo-25m", or
 * "dim=..,layers=..,heads=..,ffn=..,vocab=..[,kv_heads=..,head_dim=..,seq=..]".
 * Fills cfg (eps 1e-5, theta 10000, bos 1, eos 2; tied only for demo-25m).
 * Errors name "--shape". */
int synth_shape_parse(const char *spec, Config *cfg, Err *err);

/* Write the checkpoint into dir (atomically; see above). */
int synth_write(const SynthOpts *o, const char *dir, Err *err);

/* The fp32 values of tensor `name`, elements [start, start+n) in row-major
 * order, before any rounding to the file's dtype (round_to_bf16 excluded). */
void synth_values(const SynthOpts *o, const char *name, uint64_t start, size_t n, float *out);

/* Number of tensors and total data bytes the checkpoint will have. */
int synth_tensor_count(const Config *c);
uint64_t synth_data_bytes(const SynthOpts *o);

#endif
