/* dtype.h — the element types of weights on disk and in memory.
 * A container format (safetensors, GGUF) and the model both name tensors'
 * dtypes with these, so they live below both. */
#ifndef KVLAB_DTYPE_H
#define KVLAB_DTYPE_H

#include <stddef.h>

typedef enum { DTYPE_F32 = 0, DTYPE_BF16 = 1, DTYPE_F16 = 2 } DType;

const char *dtype_name(DType dt);             /* "f32", "bf16", "f16" */
size_t dtype_size(DType dt);
int dtype_parse(const char *s, DType *out);    /* "f32"/"fp32"/"F32", "bf16"/"BF16", "f16"/"fp16"/"F16" */

#endif
