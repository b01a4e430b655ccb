/* dtype.c — names and sizes of the weight dtypes. */
#include "base/dtype.h"

#include <strings.h>

const char *dtype_name(DType dt) {
    switch (dt) {
    case DTYPE_F32: return "f32";
    case DTYPE_BF16: return "bf16";
    case DTYPE_F16: return "f16";
    }
    return "?";
}

size_t dtype_size(DType dt) { return dt == DTYPE_F32 ? 4 : 2; }

int dtype_parse(const char *s, DType *out) {
    if (!strcasecmp(s, "f32") || !strcasecmp(s, "fp32") || !strcasecmp(s, "float32")) *out = DTYPE_F32;
    else if (!strcasecmp(s, "bf16") || !strcasecmp(s, "bfloat16")) *out = DTYPE_BF16;
    else if (!strcasecmp(s, "f16") || !strcasecmp(s, "fp16") || !strcasecmp(s, "float16")) *out = DTYPE_F16;
    else return -1;
    return 0;
}
