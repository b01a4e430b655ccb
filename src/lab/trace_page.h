/* trace_page.h — one self-contained HTML page to watch a trace decode step by
 * step (`kvlab trace --html FILE`): the text, and per layer, query head and
 * recorded query the attention row over the cached tokens beside their key and
 * value norms, the policy's scores and evictions, the KV bytes in use and the
 * per-layer metrics of metrics.h. Script, style and data are inlined: the page
 * opens from file:// with no network.
 *
 * The data are the arrays of trace.npz (trace.h), read back from the file the
 * tracer wrote, as base64 little-endian float32/int32 (so the page shows
 * exactly the values in trace.npz), plus the tokens' texts and, per (layer,
 * head, query), Spearman ρ, ALR/n and the sink numbers of metrics_row().
 * The template is trace_page.html beside this file, built into the binary. */
#ifndef KVLAB_TRACE_PAGE_H
#define KVLAB_TRACE_PAGE_H

#include <stddef.h>
#include <stdint.h>

#include "lab/trace.h"
#include "model/model.h"
#include "model/tokenizer.h"

typedef struct {
    const char *model;          /* shown in the title */
    const char *command_line;   /* the command that made the page (shown at the foot; may be NULL) */
    const char *policy_json;    /* policy_json() of the run, NULL without a policy */
    const Tokenizer *tok;       /* the tokens' texts (NULL: shown as #id) */
    int64_t kv_bytes_per_token; /* KV bytes one token takes in the full cache, all layers */
} TracePageInfo;

/* Bytes of the attention row of one (layer, head, step) in the page: P float32 in base64. */
size_t trace_page_row_bytes(int n_positions);
/* The page's size for a plan (an estimate within a few KiB: the tokens' texts
 * are counted at 24 bytes each), to refuse a selection before tracing it. */
size_t trace_page_bytes(const TracePlan *plan, const Config *cfg);

/* Write the page of the one-sequence trace in npz_path to html_path (atomically);
 * refused (err names the size) when it would exceed max_bytes. */
int trace_page_write(const char *npz_path, const TracePageInfo *info, size_t max_bytes, const char *html_path, Err *err);

/* The same for a run directory's trace.npz and its meta.json object (lab/runmeta.h):
 * the model, command line and policy (when trace.npz holds its scores) come from
 * meta, the tokens' texts from tok (may be NULL). `kvlab trace --html` and
 * `kvlab view` both write their page this way, so the two pages are the same. */
struct cJSON;
int trace_page_write_run(const char *run_dir, const struct cJSON *meta, const Tokenizer *tok, size_t max_bytes,
                         const char *html_path, Err *err);

#endif
