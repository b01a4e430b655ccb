/* cmd_bench.c — `kvlab bench`: how fast, against what this machine can do.
 *
 * Machine limits (measured by kvlab itself, `--machine`):
 *   read bandwidth  = bytes / time of a streaming dot product over a buffer far
 *                     larger than the caches (1 GiB), all threads; the better
 *                     of one stream per thread and several rows at a time
 *   peak FMA rate   = the FMA loop of simd/peak.h on every thread
 * Model figures, per dtype x thread count, median and spread over --repeat runs:
 *   prefill tok/s and GFLOP/s (2 flops per weight per token + attention)
 *   decode tok/s, weight bytes read per token, and GB/s = (weight bytes + the
 *   KV bytes attention reads) per token x tok/s, also as a fraction of the read
 *   bandwidth of the same run (read between its decode steps, or just before
 *   it for small models; probe_between_steps), the median over the runs
 * A decode token must read every weight matrix once, so decode speed is bounded
 * by bandwidth / bytes-per-token; prefill reuses each weight for many tokens and
 * is bounded by the FMA rate. */
#include <cjson/cJSON.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/commands.h"
#include "engine/forward.h"
#include "simd/kernels.h"
#include "engine/ops.h"
#include "simd/peak.h"
#include "policy/policy.h"
#include "engine/sampler.h"
#include "base/splitmix64.h"

static void help(void) {
    printf("usage: kvlab bench -m MODEL [options]     or     kvlab bench --machine\n\n"
           "  --prompt N          prompt tokens for the prefill figure [512]\n"
           "  --gen N             decode steps for the decode figure [128]\n"
           "  --threads LIST      thread counts to run, e.g. 1,2 [all cores]\n"
           "  --dtype LIST        weight dtypes to run, e.g. f32,bf16,bf16d [f32]; bf16d: bf16\n"
           "                      weights through the bf16 dot kernel (as --bf16-dot)\n"
           "  --attention LIST    attention paths to run: exact, fused or both, e.g. exact,fused [fused]\n"
           "                      (fused: one pass per tile of queries, online softmax; prefill\n"
           "                      at long prompts, e.g. --prompt 4096 or 8192, shows the difference)\n"
           "  --kv-dtype LIST     KV cache storage to run: f32, bf16 or both [f32]\n"
           "  --isa NAME          kernel set (auto, scalar, avx2, avx512, neon) [auto]\n"
           "  --repeat N          runs per configuration; the median is reported [5]\n"
           "  --json FILE         also write every figure as JSON (atomically)\n"
           "  --machine           only measure the machine: read bandwidth and peak FMA rate\n"
           "  --no-machine        skip the machine measurement (no fractions printed)\n"
           "  --interleave        load every --dtype model first, then run the configurations'\n"
           "                      repeats in turn (1st of each, 2nd of each, ...), so a drift of\n"
           "                      the machine hits them alike; needs memory for all the models\n"
           "  --seed S            seed of the random prompt [1]\n"
           "  -m, --model PATH    model (HF directory, llama2.c .bin or .gguf)\n"
           "  --ctx N             context length [prompt + gen]\n"
           "  --mmap              weights in place from the mapped file, not copied to huge pages\n"
           "  --bf16-dot          bf16 rows become bf16d: activations rounded to bf16, summed by\n"
           "                      the CPU's bf16 dot instruction (avx512_bf16)\n"
           "Decode cost against context length (--context): instead of the table above, for each\n"
           "context length and each cache policy, decode tok/s, the KV bytes in use and read per\n"
           "token, and the bytes read per token (weights + KV) over the time, against the read\n"
           "bandwidth (%%bw, as below). At each context the caches of every\n"
           "--kv-dtype run interleaved: round r runs every (KV dtype, cache)'s r-th repeat back\n"
           "to back, and column x full is the median over the rounds of a row's tok/s over the\n"
           "full cache's of the first --kv-dtype in the same round, so --kv-dtype f32,bf16\n"
           "compares the two storages (JSON: decode_tok_s_per_round, vs_full_per_round,\n"
           "vs_full_median):\n"
           "  --context LIST      cached tokens before decoding, e.g. 512,2048,4096,8192\n"
           "  --sweep-policies L  the caches compared, NAME or NAME:COMPRESSION, e.g. full,l2:0.9\n"
           "                      [full,l2:0.5,l2:0.9,window:0.5,window:0.9,h2o:0.5]; they evict\n"
           "                      every decode step (--schedule step), sinks and the recent\n"
           "                      tokens as the policy's defaults\n"
           "  --fill random|prefill  how the cache reaches the context length: random keys and\n"
           "                      values appended directly (fast; decode cost does not depend on\n"
           "                      the numbers) or a prefill of a random prompt [random]\n"
           "  --gen N (decode steps timed per point, after 2 untimed) and --repeat N apply.\n"
           "Every row also reports the share of the weights and of the KV cache arrays of\n"
           "2 MiB and more on transparent huge pages (/proc/self/smaps), and warns below 95 %%.\n"
           "Prefill GFLOP/s is compared with the peak FMA rate. Decode MB/tok is the weights\n"
           "plus the keys and values attention reads per step (mean); GB/s is that over the\n"
           "decode time, and %%bw the median over the runs of each run's GB/s over the read\n"
           "bandwidth of that run (column bw GB/s: their median). A shared machine's bandwidth\n"
           "drifts within seconds, so for weights of 256 MiB and more it is read between the\n"
           "decode steps (256 MiB after each step, one stream and rows in turn, the better of\n"
           "the two; not counted in the decode time); for smaller models, whose weights such a\n"
           "read would evict from the caches, just before the run (each configuration, or\n"
           "with --interleave each run). The same holds for --context's %%bw.\n"
           "With a policy (options below), decode runs through it and the cost of deciding\n"
           "(scoring + selection) and of compaction per decode step is reported, also as a\n"
           "share of the decode step.\n");
    printf(POLICY_OPTS_HELP);
}

typedef struct { double read_gbs, peak_gflops; int threads; } MachineLimits;

/* Read bandwidth: the threads read a buffer >> caches in chunks of 4 MiB,
 * taken as they finish (as decode takes its rows: src/engine/ops.c), in two
 * ways, and the faster one is the machine's figure:
 *   one stream  - a dot product of each chunk with itself, front to back;
 *   rows        - each chunk as a [256, 4096] fp32 matrix times a vector with
 *                 the fp32 mat-vec kernel, the way decode reads weights.
 * Which is faster depends on the machine and the day (a 2-vCPU EPYC VM, 2
 * threads: rows 72-77 GB/s against one stream 67-74 on one day, 26-39
 * against 31-55 on another; 1 thread, one stream 28-31 against rows 18-21).
 * Chunks taken as the threads finish, not one fixed half per thread: on a VM
 * one vCPU is often slowed for a moment, and a fixed split then waits for it
 * while decode, whose threads share the work the same way, does not (shares
 * of 110-157 % of a fixed-split read were seen). */
#define BW_COLS 4096
#define BW_CHUNK_ROWS 256                     /* 4 MiB of fp32 */
static volatile float read_sink;   /* keeps the sums, so the reads are not optimized away */

/* One pass over buf[0, n) (floats): GB/s. */
static double read_pass_gbs(const float *buf, size_t n, int threads, int as_rows) {
    const Kernels *k = kernels_get();
    static float x[BW_COLS];
    for (int i = 0; i < BW_COLS; i++) x[i] = 1e-3f * (float)(i & 255);
    const long n_chunks = (long)(n / ((size_t)BW_CHUNK_ROWS * BW_COLS));
    double t0 = now_seconds();
    float total = 0;
    #pragma omp parallel for schedule(dynamic, 1) num_threads(threads) reduction(+:total)
    for (long c = 0; c < n_chunks; c++) {
        const float *p = buf + (size_t)c * BW_CHUNK_ROWS * BW_COLS;
        if (as_rows) {
            float y[BW_CHUNK_ROWS];
            k->matmul_f32(y, BW_CHUNK_ROWS, x, BW_COLS, p, 1, BW_CHUNK_ROWS, BW_COLS);
            total += y[0];
        } else {
            total += k->dot(p, p, BW_CHUNK_ROWS * BW_COLS);
        }
    }
    double dt = now_seconds() - t0;
    read_sink += total;
    return (double)n_chunks * BW_CHUNK_ROWS * BW_COLS * sizeof(float) / dt / 1e9;
}

/* The best of 4 passes. */
static double read_rate_gbs(const float *buf, size_t n, int threads, int as_rows) {
    double best = 0;
    for (int rep = 0; rep < 4; rep++) {
        double gbs = read_pass_gbs(buf, n, threads, as_rows);
        if (gbs > best) best = gbs;
    }
    return best;
}

static double measure_read_bandwidth(int threads) {
    size_t n = (size_t)1 << 28;   /* 2^28 floats = 1 GiB */
    /* huge pages, like the weights (model.c), so both are read the same way */
    float *buf = big_alloc(n * sizeof(float));
    if (!buf) die("bench: cannot allocate 1 GiB for the bandwidth test");
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (size_t i = 0; i < n; i++) buf[i] = (float)(i & 1023) * 1e-3f;   /* touch: fault pages in */
    double one_stream = read_rate_gbs(buf, n, threads, 0), as_rows = read_rate_gbs(buf, n, threads, 1);
    if (getenv("KVLAB_BENCH_VERBOSE"))
        fprintf(stderr, "  read, %d threads: one stream %.1f GB/s, rows %.1f GB/s\n", threads, one_stream, as_rows);
    big_free(buf, n * sizeof(float));
    return one_stream > as_rows ? one_stream : as_rows;
}

static double measure_peak_gflops(int threads) {
    const char *isa = kernels_get()->name;
    long iters = 1000;
    double seconds = 0;
    volatile float sink = 0;
    /* grow the loop until it runs ~0.2 s, then take the best of 3 */
    for (;;) {
        double t0 = now_seconds();
        sink += peak_fma_run(isa, iters);
        seconds = now_seconds() - t0;
        if (seconds > 0.05) break;
        iters *= 4;
    }
    iters = (long)(iters * (0.2 / seconds)) + 1;
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = now_seconds();
        float total = 0;
        #pragma omp parallel num_threads(threads) reduction(+:total)
        total += peak_fma_run(isa, iters);
        double dt = now_seconds() - t0;
        sink += total;
        double gflops = peak_fma_flops(isa, iters) * threads / dt / 1e9;
        if (gflops > best) best = gflops;
    }
    (void)sink;
    return best;
}

/* The machine's limits do not depend on --isa: they are measured with the
 * best kernels this CPU has (best_kernels_begin), then the chosen set is
 * restored (best_kernels_end, given what begin saved). */
typedef struct { char name[32]; } ChosenKernels;
static ChosenKernels best_kernels_begin(void) {
    ChosenKernels c;
    char msg[256];
    snprintf(c.name, sizeof c.name, "%s", kernels_get()->name);
    kernels_select("auto", msg, sizeof msg);
    return c;
}
static void best_kernels_end(ChosenKernels c) {
    char msg[256];
    kernels_select(c.name, msg, sizeof msg);
}

static MachineLimits measure_limits(int threads, int with_peak, int announce) {
    MachineLimits m = { 0, 0, threads };
    ChosenKernels chosen = best_kernels_begin();
    if (announce)
        fprintf(stderr, "measuring the machine's %s (%s kernels, %d threads)...\n",
                with_peak ? "limits" : "read bandwidth", kernels_get()->name, threads);
    m.read_gbs = measure_read_bandwidth(threads);
    if (with_peak) m.peak_gflops = measure_peak_gflops(threads);
    best_kernels_end(chosen);
    return m;
}
static MachineLimits measure_machine(int threads) { return measure_limits(threads, 1, 1); }

/* The bandwidth during a decode, read between its steps. A VM's bandwidth
 * drifts within seconds (here: 22 to 57 GB/s from one run to the next), so
 * a probe before a run says little about the run. Instead, after every decode
 * step one short pass reads 256 MiB of a 512 MiB buffer, the two ways above
 * in turn (one stream, rows), and the run's bandwidth is the better of the
 * two ways' bytes over their time: the probe and the decode sample the same
 * seconds. Only for models whose weights are >= 256 MiB (beyond every cache):
 * smaller ones would find their weights evicted by the probe. */
#define PROBE_BYTES ((size_t)512 << 20)
#define PROBE_MIN_WEIGHT_BYTES ((size_t)256 << 20)
typedef struct { double bytes[2], secs[2]; } ReadSample;

static void probe_between_steps(ReadSample *s, int threads, int step) {
    static float *buf;
    const size_t n = PROBE_BYTES / sizeof(float), half = n / 2;
    if (!buf) {
        if (!(buf = big_alloc(PROBE_BYTES))) die("bench: cannot allocate 512 MiB for the bandwidth probe");
        #pragma omp parallel for schedule(static) num_threads(threads)
        for (size_t i = 0; i < n; i++) buf[i] = (float)(i & 1023) * 1e-3f;
    }
    ChosenKernels chosen = best_kernels_begin();
    const int kind = step & 1;                      /* one stream, rows, in turn */
    const float *part = buf + (size_t)(step / 2 % 2) * half;
    double gbs = read_pass_gbs(part, half, threads, kind);
    best_kernels_end(chosen);
    s->bytes[kind] += (double)half * sizeof(float);
    s->secs[kind] += (double)half * sizeof(float) / (gbs * 1e9);
}

static double sample_gbs(const ReadSample *s) {
    double best = 0;
    for (int k = 0; k < 2; k++)
        if (s->secs[k] > 0 && s->bytes[k] / s->secs[k] / 1e9 > best) best = s->bytes[k] / s->secs[k] / 1e9;
    return best;
}

/* ---- model figures ------------------------------------------------------- */

static size_t mat_bytes(const Mat *a) { return (size_t)a->rows * a->cols * dtype_size(a->dtype); }

/* Weight bytes one decode step reads: every matrix once (the embedding only one row). */
static size_t decode_weight_bytes(const Model *m) {
    size_t b = mat_bytes(&m->w.classifier) + (size_t)m->cfg.dim * dtype_size(m->compute_dtype);
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const LayerWeights *w = &m->w.layers[l];
        b += mat_bytes(&w->wq) + mat_bytes(&w->wk) + mat_bytes(&w->wv) + mat_bytes(&w->wo) +
             mat_bytes(&w->w_gate) + mat_bytes(&w->w_up) + mat_bytes(&w->w_down);
    }
    return b;
}

/* Flops of a prefill of P tokens that outputs the last token's logits. */
static double prefill_flops(const Model *m, int P) {
    const Config *c = &m->cfg;
    double per_token_matmul = 0;
    for (int l = 0; l < c->n_layers; l++) {
        const LayerWeights *w = &m->w.layers[l];
        per_token_matmul += (double)w->wq.rows * w->wq.cols + (double)w->wk.rows * w->wk.cols +
                            (double)w->wv.rows * w->wv.cols + (double)w->wo.rows * w->wo.cols +
                            (double)w->w_gate.rows * w->w_gate.cols + (double)w->w_up.rows * w->w_up.cols +
                            (double)w->w_down.rows * w->w_down.cols;
    }
    double attention = 2.0 * 2.0 * c->n_layers * c->n_heads * c->head_dim * ((double)P * (P + 1) / 2);
    return 2.0 * per_token_matmul * P + attention + 2.0 * c->vocab_size * c->dim;
}

/* `value` printed with `fmt` ("%.1f", "%.1f%%"), or "-" where there is no
 * figure (NaN or <= 0: no machine measurement, --no-machine). */
static void figure_or_dash(char *buf, size_t size, const char *fmt, double value) {
    if (isfinite(value) && value > 0) snprintf(buf, size, fmt, value);
    else snprintf(buf, size, "-");
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct { double median, min, max; } Stat;

static Stat stat_of(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    Stat s = { n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]), v[0], v[n - 1] };
    return s;
}

/* A configuration's label: the compute dtype, or bf16d for bf16 weights
 * through the bf16 dot kernel. */
static const char *config_name(DType dtype, int bf16_dot) { return bf16_dot ? "bf16d" : dtype_name(dtype); }

/* A row's label: the weight dtype (config_name), then the attention path and
 * the KV dtype where they are not the defaults: "f32", "bf16/exact/kv-bf16". */
static const char *row_label(char *buf, size_t size, DType dtype, int bf16_dot, AttentionPath attention, DType kv_dtype) {
    snprintf(buf, size, "%s%s%s", config_name(dtype, bf16_dot), attention == ATTENTION_EXACT ? "/exact" : "",
             kv_dtype == DTYPE_BF16 ? "/kv-bf16" : "");
    return buf;
}

/* Weights and KV cache on transparent huge pages (huge_page_share). */
typedef struct {
    double weight_bytes, weight_huge;     /* weight tensors of 2 MiB and more (copied, or in place from the file) */
    double kv_bytes, kv_huge;             /* the KV arrays of 2 MiB and more (big_alloc'ed) */
} HugeReport;

static HugeReport huge_report(const Model *m, const KVCache *c) {
    HugeReport r = { 0, 0, 0, 0 };
    HugePageShare hs;
    const void **ptrs = xmalloc(((size_t)m->n_bigs + 1) * sizeof *ptrs);
    size_t *sizes = xmalloc(((size_t)m->n_bigs + 1) * sizeof *sizes);
    int n = 0;
    const size_t two_mib = (size_t)2 << 20;   /* smaller buffers are malloc'ed (big_alloc), never on huge pages */
    for (int i = 0; i < m->n_bigs; i++)
        if (m->bigs[i].n_bytes >= two_mib) {
            ptrs[n] = m->bigs[i].p;
            sizes[n++] = m->bigs[i].n_bytes;
            r.weight_bytes += (double)m->bigs[i].n_bytes;
        }
    r.weight_bytes += (double)m->in_place_bytes;     /* file pages (--mmap): never anonymous huge pages */
    if (n > 0 && huge_page_share(ptrs, sizes, n, &hs) == 0) r.weight_huge = (double)hs.huge_bytes;
    free(ptrs); free(sizes);
    int n_heads = c->n_layers * c->n_kv_heads;
    n = 0;
    ptrs = xmalloc(2 * (size_t)n_heads * sizeof *ptrs);
    sizes = xmalloc(2 * (size_t)n_heads * sizeof *sizes);
    for (int i = 0; i < n_heads; i++) {
        const KVHead *h = &c->heads[i];
        size_t bytes = (size_t)h->cap * c->head_dim * dtype_size(c->kv_dtype);
        if (bytes < two_mib) continue;
        ptrs[n] = c->kv_dtype == DTYPE_F32 ? (const void *)h->keys : (const void *)h->keys_bf16; sizes[n++] = bytes;
        ptrs[n] = c->kv_dtype == DTYPE_F32 ? (const void *)h->values : (const void *)h->values_bf16; sizes[n++] = bytes;
        r.kv_bytes += 2.0 * (double)bytes;
    }
    if (n > 0 && huge_page_share(ptrs, sizes, n, &hs) == 0) r.kv_huge = (double)hs.huge_bytes;
    free(ptrs); free(sizes);
    if (r.weight_huge > r.weight_bytes) r.weight_huge = r.weight_bytes;   /* a mapping may hold more than the ranges */
    if (r.kv_huge > r.kv_bytes) r.kv_huge = r.kv_bytes;
    return r;
}

/* One line of shares, and a one-line warning with what to do below 95 %. */
static void print_huge_report(const HugeReport *h, int weights_in_place) {
    double w = h->weight_bytes > 0 ? 100 * h->weight_huge / h->weight_bytes : 0;
    double k = h->kv_bytes > 0 ? 100 * h->kv_huge / h->kv_bytes : 100;
    printf("      huge pages: weights %.1f%% of %.0f MB (tensors of 2 MiB and more)", w, h->weight_bytes / 1e6);
    if (h->kv_bytes > 0) printf(", KV cache %.1f%% of %.0f MB (arrays of 2 MiB and more)", k, h->kv_bytes / 1e6);
    printf("\n");
    if (h->weight_bytes > 0 && w < 95)
        fprintf(stderr, "kvlab: bench: warning: only %.0f%% of the weights are on huge pages, so decode reads them slower: %s\n",
                w, weights_in_place ? "drop --mmap (weights copied to huge pages)"
                                    : "free memory (drop the page cache: sync; echo 1 | sudo tee /proc/sys/vm/drop_caches) "
                                      "or allow compaction (echo defer+madvise | sudo tee /sys/kernel/mm/transparent_hugepage/defrag), then rerun");
    if (h->kv_bytes > 0 && k < 95)
        fprintf(stderr, "kvlab: bench: warning: only %.0f%% of the KV cache arrays are on huge pages: free memory "
                "(sync; echo 1 | sudo tee /proc/sys/vm/drop_caches) or allow compaction "
                "(echo defer+madvise | sudo tee /sys/kernel/mm/transparent_hugepage/defrag), then rerun\n", k);
}

typedef struct {
    DType dtype;
    int bf16_dot;                 /* bf16 weights through the bf16 dot kernel (row label bf16d) */
    AttentionPath attention;
    DType kv_dtype;
    HugeReport huge;
    int threads;
    Stat prefill_tps, decode_tps;
    double prefill_gflops, weight_bytes;
    double kv_bytes;              /* KV bytes attention read per decode step (mean) */
    double decode_gbs;            /* median over the runs of (weight + KV bytes) / decode time */
    double decode_bw_frac;        /* median over the runs of decode GB/s / the run's bandwidth (0: none) */
    double decide_ms, apply_ms;   /* per decode step, with a policy (else 0) */
    cJSON *per_run;               /* the runs in order: decode tok/s, GB/s, bandwidth, share */
    int probe;                    /* bandwidth read between the decode steps (else just before each run) */
} BenchResult;

/* One configuration (a loaded model x a thread count) being measured: the
 * prompt, cache and forward state live across its runs, so runs of several
 * configurations can be interleaved (--interleave). */
typedef struct {
    const Model *m;
    int bf16_dot;                    /* set for the runs of this configuration (ops_set_bf16_dot) */
    AttentionPath attention;
    DType kv_dtype;
    int threads, P, G, repeat, runs_done;
    int *prompt;
    KVCache cache;
    Forward *f;
    Policy *pol;
    double *pre, *dec, *bw;          /* per run: tok/s, tok/s, GB/s read just before */
    double *dec_gbs, *kv_read;       /* per run: decode GB/s (weights + KV), KV bytes per step */
    int probe;                       /* read the bandwidth between decode steps (probe_between_steps) */
    double decide_s, apply_s;
    long decode_steps;
} BenchRun;

static void bench_start(BenchRun *b, const Model *m, int bf16_dot, AttentionPath attention, DType kv_dtype, int threads,
                        int P, int G, int repeat, uint64_t seed, const PolicyOpts *po) {
    memset(b, 0, sizeof *b);
    b->m = m; b->bf16_dot = bf16_dot; b->attention = attention; b->kv_dtype = kv_dtype; b->threads = threads; b->P = P; b->G = G; b->repeat = repeat;
    Err err;
    b->prompt = xmalloc((size_t)P * sizeof(int));
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    b->prompt[0] = m->cfg.bos_id;
    for (int i = 1; i < P; i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        b->prompt[i] = 3 + (int)(s % (uint64_t)(m->cfg.vocab_size - 3));
    }
    if (forward_cache_init(m, &b->cache, P + G + 1, &err) != 0 || kvcache_set_dtype(&b->cache, kv_dtype, &err) != 0)
        die("%s", err.msg);
    b->f = forward_create(m, P);
    forward_set_attention(b->f, attention);
    if (po && !(b->pol = policy_create(po, &m->cfg, P + G + 1, &err))) die("%s", err.msg);
    b->pre = xmalloc((size_t)repeat * sizeof(double));
    b->dec = xmalloc((size_t)repeat * sizeof(double));
    b->bw = xcalloc((size_t)repeat, sizeof(double));
    b->dec_gbs = xmalloc((size_t)repeat * sizeof(double));
    b->kv_read = xmalloc((size_t)repeat * sizeof(double));
}

/* Bytes of keys and values attention reads in one decode step now (every
 * slot of every head, before the step's own token). */
static double kv_read_bytes(const KVCache *c) {
    return (double)kvcache_slots_used(c) * 2.0 * c->head_dim * (double)dtype_size(c->kv_dtype);
}

/* One run: prefill the prompt, then G greedy decode steps. warm_up: a run whose
 * figures are dropped (it faults in caches and page tables). The run's
 * bandwidth: read between its decode steps (b->probe), else bw_before. */
static void bench_run(BenchRun *b, int warm_up, double bw_before) {
    Err err;
    ops_set_threads(b->threads);
    ops_set_bf16_dot(b->bf16_dot);
    kvcache_reset(&b->cache);
    double t0 = now_seconds();
    /* policy_forward with p == NULL is plain forward() */
    if (policy_forward(b->pol, b->f, &b->cache, b->prompt, b->P, NULL, &err) != 0) die("%s", err.msg);
    double t1 = now_seconds();
    if (b->pol) policy_timing_reset(b->pol);
    int tok = argmax(forward_last_logits(b->f), b->m->cfg.vocab_size);
    double kv_read = 0, decode_s = 0;
    ReadSample sample = { { 0, 0 }, { 0, 0 } };
    for (int g = 0; g < b->G; g++) {
        kv_read += kv_read_bytes(&b->cache);
        double ts = now_seconds();
        if (policy_forward(b->pol, b->f, &b->cache, &tok, 1, NULL, &err) != 0) die("%s", err.msg);
        tok = argmax(forward_last_logits(b->f), b->m->cfg.vocab_size);
        decode_s += now_seconds() - ts;
        if (b->probe && !warm_up) probe_between_steps(&sample, b->threads, g);
    }
    if (warm_up) return;
    if (b->pol) {
        PolicyTiming pt = policy_timing(b->pol);
        b->decide_s += pt.decide_decode_s;
        b->apply_s += pt.apply_s;
        b->decode_steps += pt.decode_forwards;
    }
    int r = b->runs_done++;
    b->pre[r] = b->P / (t1 - t0);
    b->dec[r] = b->G / decode_s;
    b->bw[r] = b->probe ? sample_gbs(&sample) : bw_before;
    b->kv_read[r] = kv_read / b->G;
    b->dec_gbs[r] = ((double)decode_weight_bytes(b->m) * b->G + kv_read) / decode_s / 1e9;
    char label[48];
    fprintf(stderr, "\r  %s %d threads: run %d/%d  prefill %.1f tok/s  decode %.2f tok/s   ",
            row_label(label, sizeof label, b->m->compute_dtype, b->bf16_dot, b->attention, b->kv_dtype), b->threads, r + 1, b->repeat, b->pre[r], b->dec[r]);
}

/* The figures of the runs done (medians), and free the state. *bw_median: the
 * median of the bandwidths measured before the runs (0 if none were). */
static BenchResult bench_finish(BenchRun *b, double *bw_median) {
    const Model *m = b->m;
    BenchResult r = { .dtype = m->compute_dtype, .bf16_dot = b->bf16_dot, .attention = b->attention,
                      .kv_dtype = b->kv_dtype, .huge = huge_report(m, &b->cache), .threads = b->threads,
                      .weight_bytes = (double)decode_weight_bytes(m), .probe = b->probe };
    r.prefill_tps = stat_of(b->pre, b->runs_done);
    r.per_run = cJSON_CreateObject();     /* before stat_of sorts the arrays */
    cJSON_AddItemToObject(r.per_run, "decode_tok_s_per_run", cJSON_CreateDoubleArray(b->dec, b->runs_done));
    cJSON_AddItemToObject(r.per_run, "decode_gb_s_per_run", cJSON_CreateDoubleArray(b->dec_gbs, b->runs_done));
    cJSON_AddItemToObject(r.per_run, "read_gb_s_per_run", cJSON_CreateDoubleArray(b->bw, b->runs_done));
    r.decode_tps = stat_of(b->dec, b->runs_done);
    double *share = xmalloc((size_t)b->runs_done * sizeof(double));
    for (int i = 0; i < b->runs_done; i++) share[i] = b->bw[i] > 0 ? b->dec_gbs[i] / b->bw[i] : 0;
    cJSON_AddItemToObject(r.per_run, "decode_frac_of_bandwidth_per_run", cJSON_CreateDoubleArray(share, b->runs_done));
    r.decode_bw_frac = stat_of(share, b->runs_done).median;    /* each run against its own bandwidth */
    free(share);
    *bw_median = stat_of(b->bw, b->runs_done).median;
    r.decode_gbs = stat_of(b->dec_gbs, b->runs_done).median;
    r.kv_bytes = stat_of(b->kv_read, b->runs_done).median;
    r.prefill_gflops = prefill_flops(m, b->P) / b->P * r.prefill_tps.median / 1e9;
    if (b->decode_steps > 0) {
        r.decide_ms = b->decide_s / b->decode_steps * 1e3;
        r.apply_ms = b->apply_s / b->decode_steps * 1e3;
    }
    policy_free(b->pol);
    free(b->pre); free(b->dec); free(b->bw); free(b->dec_gbs); free(b->kv_read); free(b->prompt);
    forward_free(b->f);
    kvcache_free(&b->cache);
    return r;
}

static cJSON *result_json(const BenchResult *r) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "dtype", dtype_name(r->dtype));
    cJSON_AddStringToObject(o, "attention", attention_path_name(r->attention));
    cJSON_AddStringToObject(o, "kv_dtype", dtype_name(r->kv_dtype));
    cJSON_AddNumberToObject(o, "threads", r->threads);
    cJSON_AddNumberToObject(o, "weights_huge_page_frac", r->huge.weight_bytes > 0 ? r->huge.weight_huge / r->huge.weight_bytes : -1);
    cJSON_AddNumberToObject(o, "kv_huge_page_frac", r->huge.kv_bytes > 0 ? r->huge.kv_huge / r->huge.kv_bytes : -1);
    cJSON_AddNumberToObject(o, "prefill_tok_s_median", r->prefill_tps.median);
    cJSON_AddNumberToObject(o, "prefill_tok_s_min", r->prefill_tps.min);
    cJSON_AddNumberToObject(o, "prefill_tok_s_max", r->prefill_tps.max);
    cJSON_AddNumberToObject(o, "prefill_gflop_s", r->prefill_gflops);
    cJSON_AddNumberToObject(o, "decode_tok_s_median", r->decode_tps.median);
    cJSON_AddNumberToObject(o, "decode_tok_s_min", r->decode_tps.min);
    cJSON_AddNumberToObject(o, "decode_tok_s_max", r->decode_tps.max);
    cJSON_AddNumberToObject(o, "decode_weight_bytes_per_token", r->weight_bytes);
    cJSON_AddNumberToObject(o, "decode_kv_bytes_per_token", r->kv_bytes);
    cJSON_AddNumberToObject(o, "decode_gb_s", r->decode_gbs);
    for (const cJSON *e = r->per_run ? r->per_run->child : NULL; e; e = e->next)
        cJSON_AddItemToObject(o, e->string, cJSON_Duplicate(e, 1));
    if (r->decide_ms > 0 || r->apply_ms > 0) {
        cJSON_AddNumberToObject(o, "policy_decide_ms_per_step", r->decide_ms);
        cJSON_AddNumberToObject(o, "policy_apply_ms_per_step", r->apply_ms);
        cJSON_AddNumberToObject(o, "policy_decide_frac_of_step", r->decide_ms * r->decode_tps.median / 1e3);
    }
    return o;
}

static void write_json(const char *path, cJSON *root) {
    Err err;
    AtomicFile af;
    char *text = cJSON_Print(root);
    if (atomic_open(&af, path, &err) != 0) die("--json %s", err.msg);
    fputs(text, af.f);
    fputc('\n', af.f);
    if (atomic_commit(&af, &err) != 0) die("--json %s", err.msg);
    free(text);
}

static void load_bench_model(const CommonOpts *o, DType dtype, int P, int G, Model *m) {
    CommonOpts od = *o;
    od.dtype = dtype;
    common_load_model(&od, m);
    if (P + G + 1 > m->cfg.max_seq_len)
        die("bench: --prompt %d + --gen %d exceeds the model's context (%d)", P, G, m->cfg.max_seq_len);
}

/* One row of the table (stdout) and of the JSON "runs". */
static void report_row(const BenchResult *r, double bw_now, const MachineLimits *lim, const PolicyOpts *po,
                       int weights_in_place, cJSON *runs) {
    char label[48];
    double peak_frac = lim->peak_gflops > 0 ? r->prefill_gflops / lim->peak_gflops * 100 : NAN;
    double bw_frac = r->decode_bw_frac > 0 ? r->decode_bw_frac * 100 : NAN;
    char peak_s[16], bw_s[16], bw_now_s[16];
    figure_or_dash(peak_s, sizeof peak_s, "%.1f%%", peak_frac);
    figure_or_dash(bw_s, sizeof bw_s, "%.1f%%", bw_frac);
    figure_or_dash(bw_now_s, sizeof bw_now_s, "%.1f", bw_now);
    printf("%-5s %3d | %10.1f (%6.1f..%6.1f) %8.1f %6s | %9.2f (%6.2f..%6.2f) %8.1f %8.2f %6s %8s\n",
           row_label(label, sizeof label, r->dtype, r->bf16_dot, r->attention, r->kv_dtype), r->threads, r->prefill_tps.median, r->prefill_tps.min, r->prefill_tps.max,
           r->prefill_gflops, peak_s, r->decode_tps.median, r->decode_tps.min, r->decode_tps.max,
           (r->weight_bytes + r->kv_bytes) / 1e6, r->decode_gbs, bw_s, bw_now_s);
    if (po)
        printf("      policy %s: decide %.3f ms + compaction %.3f ms per decode step = %.2f%% + %.2f%% of the step\n",
               po->name, r->decide_ms, r->apply_ms, r->decide_ms * r->decode_tps.median / 10,
               r->apply_ms * r->decode_tps.median / 10);
    print_huge_report(&r->huge, weights_in_place);
    fflush(stdout);
    cJSON *rj = result_json(r);
    cJSON_Delete(r->per_run);
    cJSON_AddBoolToObject(rj, "bf16_dot", r->bf16_dot);
    cJSON_AddNumberToObject(rj, "prefill_frac_of_peak", lim->peak_gflops > 0 ? peak_frac / 100 : -1);
    cJSON_AddNumberToObject(rj, "decode_frac_of_bandwidth", r->decode_bw_frac > 0 ? r->decode_bw_frac : -1);
    cJSON_AddNumberToObject(rj, "read_gb_s", bw_now > 0 ? bw_now : -1);
    cJSON_AddBoolToObject(rj, "bandwidth_read_between_steps", r->probe);
    cJSON_AddItemToArray(runs, rj);
}

/* ---- the command ------------------------------------------------------------ */

typedef struct {
    CommonOpts o;
    int P, G, repeat, machine_only, no_machine, interleave;
    int n_dtypes, n_threads, n_attention, n_kv_dtypes;
    DType dtypes[4];
    int dots[4];                  /* per --dtype entry: bf16 weights through the bf16 dot kernel (bf16d) */
    AttentionPath attention[2];   /* --attention LIST */
    DType kv_dtypes[2];           /* --kv-dtype LIST */
    int *contexts, n_contexts;    /* --context LIST: the decode-vs-context sweep instead of the table */
    const char *sweep_policies;   /* --sweep-policies */
    int fill_prefill;             /* --fill prefill (else random) */
    int *thread_list;
    const char *json_path;
    uint64_t seed;
    PolicyOpts po;
    const PolicyOpts *policy;     /* &po when a policy option was given, else NULL */
} BenchArgs;

static void parse_dtypes(BenchArgs *a, const char *v) {
    char buf[64];
    snprintf(buf, sizeof buf, "%s", v);
    a->n_dtypes = 0;
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        const int dot = !strcmp(tok, "bf16d");
        DType dt = DTYPE_BF16;
        if (a->n_dtypes == 4 || (!dot && (dtype_parse(tok, &dt) != 0 || dt == DTYPE_F16)))
            die("--dtype: '%s' is not a list of up to 4 compute dtypes (f32, bf16, bf16d)", v);
        a->dtypes[a->n_dtypes] = dt;
        a->dots[a->n_dtypes++] = dot;
    }
}

/* --attention exact,fused and --kv-dtype f32,bf16: each a list of up to 2. */
static void parse_attention_list(BenchArgs *a, const char *v) {
    char buf[64];
    snprintf(buf, sizeof buf, "%s", v);
    a->n_attention = 0;
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ","))
        if (a->n_attention == 2 || attention_path_parse(tok, &a->attention[a->n_attention++]) != 0)
            die("--attention: '%s' is not a list of exact and fused", v);
}
static void parse_kv_dtype_list(BenchArgs *a, const char *v) {
    char buf[64];
    snprintf(buf, sizeof buf, "%s", v);
    a->n_kv_dtypes = 0;
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        DType dt;
        if (a->n_kv_dtypes == 2 || dtype_parse(tok, &dt) != 0 || dt == DTYPE_F16)
            die("--kv-dtype: '%s' is not a list of KV cache dtypes (f32, bf16)", v);
        a->kv_dtypes[a->n_kv_dtypes++] = dt;
    }
}

/* The options, then what follows from them: the default dtype and thread
 * count, the policy resolved, --bf16-dot spread over the bf16 entries, and
 * the kernels set up (common_setup). */
static void parse_args(int argc, char **argv, BenchArgs *a) {
    memset(a, 0, sizeof *a);
    common_defaults(&a->o);
    a->P = 512; a->G = 128; a->repeat = 5; a->seed = 1;
    policy_defaults(&a->po);
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (policy_option(&a->po, argc, argv, &i)) { a->policy = &a->po; continue; }
        if (!strcmp(s, "--prompt")) a->P = (int)cli_int(s, cli_value(argc, argv, &i), 1, 1 << 20);
        else if (!strcmp(s, "--gen")) a->G = (int)cli_int(s, cli_value(argc, argv, &i), 1, 1 << 20);
        else if (!strcmp(s, "--repeat")) a->repeat = (int)cli_int(s, cli_value(argc, argv, &i), 1, 1000);
        else if (!strcmp(s, "--threads")) a->thread_list = cli_int_list(s, cli_value(argc, argv, &i), 1, 1024, &a->n_threads);
        else if (!strcmp(s, "--dtype")) parse_dtypes(a, cli_value(argc, argv, &i));
        else if (!strcmp(s, "--attention")) parse_attention_list(a, cli_value(argc, argv, &i));
        else if (!strcmp(s, "--kv-dtype")) parse_kv_dtype_list(a, cli_value(argc, argv, &i));
        else if (!strcmp(s, "--context")) a->contexts = cli_int_list(s, cli_value(argc, argv, &i), 1, 1 << 22, &a->n_contexts);
        else if (!strcmp(s, "--sweep-policies")) a->sweep_policies = cli_value(argc, argv, &i);
        else if (!strcmp(s, "--fill")) {
            const char *v = cli_value(argc, argv, &i);
            if (!strcmp(v, "prefill")) a->fill_prefill = 1;
            else if (!strcmp(v, "random")) a->fill_prefill = 0;
            else die("--fill: '%s' is not random or prefill", v);
        }
        else if (!strcmp(s, "--json")) a->json_path = cli_value(argc, argv, &i);
        else if (!strcmp(s, "--machine")) a->machine_only = 1;
        else if (!strcmp(s, "--no-machine")) a->no_machine = 1;
        else if (!strcmp(s, "--interleave")) a->interleave = 1;
        else if (!strcmp(s, "--seed")) a->seed = (uint64_t)cli_int(s, cli_value(argc, argv, &i), 0, 1L << 62);
        else if (!common_option(&a->o, argc, argv, &i)) die("bench: unknown option '%s' (kvlab bench --help)", s);
    }
    if (a->n_dtypes == 0) { a->dtypes[0] = a->o.dtype; a->n_dtypes = 1; }
    if (a->n_attention == 0) { a->attention[0] = ATTENTION_FUSED; a->n_attention = 1; }
    if (a->n_kv_dtypes == 0) { a->kv_dtypes[0] = DTYPE_F32; a->n_kv_dtypes = 1; }
    if (!a->sweep_policies) a->sweep_policies = "full,l2:0.5,l2:0.9,window:0.5,window:0.9,h2o:0.5";
    if (a->contexts && a->policy) die("bench: --context compares its own policies (--sweep-policies), not --policy");
    if (a->policy) policy_cli_finish(&a->po);
    int any_dot = 0;
    for (int d = 0; d < a->n_dtypes; d++) {
        if (a->o.bf16_dot && a->dtypes[d] == DTYPE_BF16) a->dots[d] = 1;   /* --bf16-dot: every bf16 entry */
        any_dot |= a->dots[d];
    }
    a->o.bf16_dot = 0;
    common_setup(&a->o);
    if (any_dot) common_enable_bf16_dot("--dtype bf16d / --bf16-dot");
    if (!a->thread_list) {
        a->thread_list = xmalloc(sizeof(int));
        a->thread_list[0] = a->o.threads ? a->o.threads : omp_get_num_procs();
        a->n_threads = 1;
    }
}

/* The machine's limits for each thread count (so 1-thread figures are compared
 * with what one thread can do), printed and added to root's "machine"; all
 * zero with --no-machine. */
static MachineLimits *measure_machine_all(const BenchArgs *a, cJSON *root) {
    MachineLimits *lim = xcalloc((size_t)a->n_threads, sizeof *lim);
    if (a->no_machine && !a->machine_only) return lim;
    cJSON *mj = cJSON_AddArrayToObject(root, "machine");
    for (int t = 0; t < a->n_threads; t++) {
        lim[t] = measure_machine(a->thread_list[t]);
        printf("machine: %d thread(s): read bandwidth %.1f GB/s, peak FMA %.1f GFLOP/s (%s kernels)\n",
               a->thread_list[t], lim[t].read_gbs, lim[t].peak_gflops, kernels_detected());
        cJSON *one = cJSON_CreateObject();
        cJSON_AddNumberToObject(one, "threads", a->thread_list[t]);
        cJSON_AddNumberToObject(one, "read_gb_s", lim[t].read_gbs);
        cJSON_AddNumberToObject(one, "peak_gflop_s", lim[t].peak_gflops);
        cJSON_AddItemToArray(mj, one);
    }
    return lim;
}

/* Whether runs read the bandwidth between their decode steps
 * (probe_between_steps): with a machine measurement, for weights beyond every cache. */
static int probe_during_decode(const BenchArgs *a, const Model *m) {
    return !a->no_machine && decode_weight_bytes(m) >= PROBE_MIN_WEIGHT_BYTES;
}

/* The variants of a configuration besides the thread count: weight dtype x
 * attention path x KV dtype, in that order (v = (d * n_attention + at) * n_kv_dtypes + kd). */
static int n_variants(const BenchArgs *a) { return a->n_dtypes * a->n_attention * a->n_kv_dtypes; }
static int variant_dtype(const BenchArgs *a, int v) { return v / (a->n_attention * a->n_kv_dtypes); }
static AttentionPath variant_attention(const BenchArgs *a, int v) { return a->attention[v / a->n_kv_dtypes % a->n_attention]; }
static DType variant_kv_dtype(const BenchArgs *a, int v) { return a->kv_dtypes[v % a->n_kv_dtypes]; }

/* Every model loaded at once (one per weight dtype: bf16 and bf16d share one),
 * then the configurations' runs in turn (1st of each, 2nd of each, ...), so a
 * drift in the machine's bandwidth hits them all alike. Configurations are
 * variant-major, then thread count: c = v * n_threads + t. */
static void run_interleaved(const BenchArgs *a, const MachineLimits *lim, cJSON *runs) {
    const int n_configs = n_variants(a) * a->n_threads;
    Model *models = xcalloc((size_t)a->n_dtypes, sizeof *models);
    BenchRun *state = xcalloc((size_t)n_configs, sizeof *state);
    int model_of[4];
    for (int d = 0; d < a->n_dtypes; d++) {
        model_of[d] = d;
        for (int e = 0; e < d; e++)
            if (a->dtypes[e] == a->dtypes[d]) { model_of[d] = model_of[e]; break; }
        if (model_of[d] == d) load_bench_model(&a->o, a->dtypes[d], a->P, a->G, &models[d]);
    }
    for (int c = 0; c < n_configs; c++) {
        int v = c / a->n_threads, t = c % a->n_threads, d = variant_dtype(a, v);
        bench_start(&state[c], &models[model_of[d]], a->dots[d], variant_attention(a, v), variant_kv_dtype(a, v),
                    a->thread_list[t], a->P, a->G, a->repeat, a->seed, a->policy);
        state[c].probe = probe_during_decode(a, &models[model_of[d]]);
        bench_run(&state[c], 1, 0);
    }
    for (int rep = 0; rep < a->repeat; rep++)
        for (int c = 0; c < n_configs; c++) {
            int t = c % a->n_threads;
            double bw_now = a->no_machine || state[c].probe ? 0 : measure_limits(a->thread_list[t], 0, 0).read_gbs;
            bench_run(&state[c], 0, bw_now);
        }
    fprintf(stderr, "\n");
    for (int c = 0; c < n_configs; c++) {
        int t = c % a->n_threads;
        double bw_now;
        BenchResult r = bench_finish(&state[c], &bw_now);
        report_row(&r, bw_now, &lim[t], a->policy, a->o.mmap_weights, runs);
    }
    for (int d = 0; d < a->n_dtypes; d++)
        if (model_of[d] == d) model_free(&models[d]);
    free(models);
    free(state);
}

/* One model at a time, each configuration's runs back to back. */
static void run_sequential(const BenchArgs *a, const MachineLimits *lim, cJSON *runs) {
    for (int d = 0; d < a->n_dtypes; d++) {
        Model m;
        load_bench_model(&a->o, a->dtypes[d], a->P, a->G, &m);
        for (int v = 0; v < n_variants(a); v++) {
            if (variant_dtype(a, v) != d) continue;
            for (int t = 0; t < a->n_threads; t++) {
                /* On a shared machine (a VM) the bandwidth left to us drifts by tens
                 * of percent over minutes: measure it again right before each
                 * configuration and compare the decode rate with that (bw GB/s). */
                const int probe = probe_during_decode(a, &m);
                double bw_now = a->no_machine || probe ? 0 : measure_limits(a->thread_list[t], 0, 1).read_gbs, bw_median;
                BenchRun b;
                bench_start(&b, &m, a->dots[d], variant_attention(a, v), variant_kv_dtype(a, v), a->thread_list[t],
                            a->P, a->G, a->repeat, a->seed, a->policy);
                b.probe = probe;
                for (int rep = 0; rep < a->repeat + 1; rep++) bench_run(&b, rep == 0, bw_now);
                fprintf(stderr, "\n");
                BenchResult r = bench_finish(&b, &bw_median);
                report_row(&r, bw_median, &lim[t], a->policy, a->o.mmap_weights, runs);
            }
        }
        model_free(&m);
    }
}

/* ---- decode cost against context length (--context) ---------------------------- */

/* One cache of the sweep: "full", or NAME:COMPRESSION (e.g. l2:0.9) evicting
 * every decode step to keep 1 - COMPRESSION of the tokens seen. */
typedef struct { char label[32], name[24]; double compression; } SweepPolicy;

static int parse_sweep_policies(const char *list, SweepPolicy *out, int max) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", list);
    int n = 0;
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        if (n == max) die("--sweep-policies: more than %d entries", max);
        SweepPolicy *sp = &out[n++];
        snprintf(sp->label, sizeof sp->label, "%s", tok);
        char *colon = strchr(tok, ':');
        sp->compression = 0;
        if (colon) {
            *colon = '\0';
            sp->compression = cli_float("--sweep-policies", colon + 1, 0.0, 0.999);
        }
        snprintf(sp->name, sizeof sp->name, "%s", tok);
        if (strcmp(sp->name, "full") != 0 && !colon)
            die("--sweep-policies: '%s' needs a compression, e.g. %s:0.5", sp->name, sp->name);
    }
    return n;
}

/* The policy of a sweep entry (NULL for full), through the command-line parser. */
static Policy *sweep_policy_create(const SweepPolicy *sp, const Config *cfg, int max_tokens) {
    if (!strcmp(sp->name, "full")) return NULL;
    char ratio[32];
    snprintf(ratio, sizeof ratio, "%.6g", sp->compression);
    char *argv[] = { "bench", "--policy", (char *)sp->name, "--compression-ratio", ratio, "--schedule", "step" };
    int argc = (int)(sizeof argv / sizeof argv[0]);
    PolicyOpts o;
    policy_defaults(&o);
    for (int i = 1; i < argc; i++)
        if (!policy_option(&o, argc, argv, &i)) die("--sweep-policies: cannot set up '%s'", sp->label);
    policy_cli_finish(&o);
    Err err;
    Policy *p = policy_create(&o, cfg, max_tokens, &err);
    if (!p) die("--sweep-policies: %s", err.msg);
    return p;
}

/* Bring an empty cache to C tokens without a forward pass: random keys and
 * values in [-1, 1) appended layer by layer, in blocks of 256 tokens, through
 * the policy's two halves (its side columns get their fills; the eviction
 * after the "prefill" happens as after a real one). */
static void fill_random(KVCache *c, Policy *p, int C, uint64_t seed) {
    Err err;
    if (policy_before_forward(p, c, C, &err) != 0) die("%s", err.msg);
    const size_t row = (size_t)c->n_kv_heads * c->head_dim, block = 256;
    float *k = xmalloc(block * row * sizeof(float)), *v = xmalloc(block * row * sizeof(float));
    uint64_t state = seed;
    for (int t0 = 0; t0 < C; t0 += (int)block) {
        int n = C - t0 < (int)block ? C - t0 : (int)block;
        for (int l = 0; l < c->n_layers; l++) {
            for (size_t i = 0; i < (size_t)n * row; i++) {
                k[i] = (float)(2.0 * splitmix64_unit(&state) - 1.0);
                v[i] = (float)(2.0 * splitmix64_unit(&state) - 1.0);
            }
            if (kvcache_append(c, l, k, v, n, &err) != 0) die("%s", err.msg);
        }
        c->next_pos += n;
    }
    free(k); free(v);
    if (policy_after_forward(p, c, 0, &err) != 0) die("%s", err.msg);
}

/* One repeat at context C: a fresh cache, forward and policy; fill, 2 untimed
 * decode steps, then G timed ones. Returns decode tok/s; *kv_read = the KV
 * bytes attention read per timed step, *kv_in_use = the cache's bytes after;
 * with a sample, the bandwidth is read after every timed step into it
 * (probe_between_steps). */
static double sweep_run(const BenchArgs *a, const Model *m, AttentionPath attention, DType kv_dtype, int C,
                        const SweepPolicy *sp, int r, double *kv_read, double *kv_in_use, ReadSample *sample) {
    Err err;
    const int G = a->G, ctx = C + G + 3;
    KVCache cache;
    if (forward_cache_init(m, &cache, ctx, &err) != 0 || kvcache_set_dtype(&cache, kv_dtype, &err) != 0)
        die("%s", err.msg);
    Forward *f = forward_create(m, a->fill_prefill ? (C < 512 ? C : 512) : 1);
    forward_set_attention(f, attention);
    Policy *p = sweep_policy_create(sp, &m->cfg, ctx);
    if (a->fill_prefill) {
        int *prompt = xmalloc((size_t)C * sizeof(int));
        uint64_t s = a->seed;
        prompt[0] = m->cfg.bos_id;
        for (int i = 1; i < C; i++) prompt[i] = 3 + (int)(splitmix64_next(&s) % (uint64_t)(m->cfg.vocab_size - 3));
        if (policy_forward(p, f, &cache, prompt, C, NULL, &err) != 0) die("%s", err.msg);
        free(prompt);
    } else {
        fill_random(&cache, p, C, a->seed + (uint64_t)r);
    }
    int tok = m->cfg.bos_id;
    double decode_s = 0, read = 0;
    for (int g = -2; g < G; g++) {
        if (g >= 0) read += kv_read_bytes(&cache);
        double ts = now_seconds();
        if (policy_forward(p, f, &cache, &tok, 1, NULL, &err) != 0) die("%s", err.msg);
        tok = argmax(forward_last_logits(f), m->cfg.vocab_size);
        if (g >= 0) decode_s += now_seconds() - ts;
        if (g >= 0 && sample) probe_between_steps(sample, ops_threads(), g);
    }
    double tps = G / decode_s;
    *kv_read = read / G;
    *kv_in_use = (double)kvcache_bytes_used(&cache);
    policy_free(p);
    forward_free(f);
    kvcache_free(&cache);
    return tps;
}

/* The sweep: per weight dtype / attention path and thread count, every context
 * x KV dtype x cache; one table row and one JSON object ("context_sweep") each.
 * At each context the caches of every KV dtype run interleaved: round r runs
 * the r-th repeat of each (KV dtype, cache) back to back, after a bandwidth
 * measurement, so a drift of the machine hits them alike; "x full" is the
 * median over the rounds of the row's tok/s over the full cache's of the first
 * --kv-dtype in the same round (so a bf16 KV cache is compared with fp32). */
static void run_context_sweep(const BenchArgs *a, cJSON *root) {
    SweepPolicy sps[16];
    int n_sp = parse_sweep_policies(a->sweep_policies, sps, 16), full = -1;
    for (int j = 0; j < n_sp; j++)
        if (!strcmp(sps[j].name, "full") && full < 0) full = j;
    cJSON *rows = cJSON_AddArrayToObject(root, "context_sweep");
    cJSON_AddStringToObject(root, "fill", a->fill_prefill ? "prefill" : "random");
    cJSON_AddNumberToObject(root, "gen_tokens", a->G);
    cJSON_AddNumberToObject(root, "repeat", a->repeat);
    printf("decode against context (%s fill, %d timed decode steps, median of %d, caches interleaved)\n",
           a->fill_prefill ? "prefill" : "random", a->G, a->repeat);
    printf("%-18s %3s %7s %-12s | %10s %10s | %9s %17s %8s %6s %8s %7s\n", "config", "thr", "context", "cache",
           "KV MiB", "KV MB/tok", "decode", "(min..max) tok/s", "GB/s", "%bw", "bw GB/s", "x full");
    fflush(stdout);
    const int R = a->repeat, n_units = a->n_kv_dtypes * n_sp;   /* unit u = KV dtype u / n_sp, cache u % n_sp */
    double *tps = xmalloc((size_t)n_units * R * sizeof(double)), *kv_read = xcalloc((size_t)n_units, sizeof(double));
    double *kv_in_use = xcalloc((size_t)n_units, sizeof(double)), *bws = xmalloc((size_t)R * sizeof(double));
    double *tmp = xmalloc((size_t)R * sizeof(double)), *unit_bw = xcalloc((size_t)n_units * R, sizeof(double));
    for (int d = 0; d < a->n_dtypes; d++) {
        Model m;
        load_bench_model(&a->o, a->dtypes[d], 1, 1, &m);
        for (int i = 0; i < a->n_contexts; i++)
            if (a->contexts[i] + a->G + 3 > m.cfg.max_seq_len)
                die("bench: --context %d + --gen %d exceeds the model's context (%d; kvlab synth --shape ...,seq=N "
                    "writes a longer one)", a->contexts[i], a->G, m.cfg.max_seq_len);
        ops_set_bf16_dot(a->dots[d]);
        double weight_bytes = (double)decode_weight_bytes(&m);
        const int probe = probe_during_decode(a, &m);
        for (int at = 0; at < a->n_attention; at++)
            for (int t = 0; t < a->n_threads; t++)
                for (int i = 0; i < a->n_contexts; i++) {
                    const int C = a->contexts[i];
                    for (int u = 0; u < n_units; u++) kv_read[u] = 0;
                    for (int r = 0; r < R; r++) {
                        bws[r] = a->no_machine || probe ? 0 : measure_limits(a->thread_list[t], 0, 0).read_gbs;
                        ops_set_threads(a->thread_list[t]);
                        for (int u = 0; u < n_units; u++) {
                            double read;
                            const SweepPolicy *sp = &sps[u % n_sp];
                            ReadSample sample = { { 0, 0 }, { 0, 0 } };
                            tps[u * R + r] = sweep_run(a, &m, a->attention[at], a->kv_dtypes[u / n_sp], C, sp, r,
                                                       &read, &kv_in_use[u], probe ? &sample : NULL);
                            unit_bw[u * R + r] = probe ? sample_gbs(&sample) : bws[r];
                            kv_read[u] += read / R;
                            fprintf(stderr, "\r  context %d, round %d/%d: %s%s decode %.2f tok/s          ", C, r + 1,
                                    R, sp->label, a->kv_dtypes[u / n_sp] == DTYPE_BF16 ? "/kv-bf16" : "",
                                    tps[u * R + r]);
                        }
                    }
                    fprintf(stderr, "\r%80s\r", "");
                    for (int u = 0; u < n_units; u++) {
                        const SweepPolicy *sp = &sps[u % n_sp];
                        const DType kv_dtype = a->kv_dtypes[u / n_sp];
                        char label[48];
                        row_label(label, sizeof label, a->dtypes[d], a->dots[d], a->attention[at], kv_dtype);
                        double *run = tps + (size_t)u * R, vs_full = NAN;
                        cJSON *per_round = cJSON_CreateDoubleArray(run, R), *ratio_rounds = NULL;
                        if (full >= 0) {   /* the JSON takes the rounds in order, before stat_of sorts tmp */
                            for (int r = 0; r < R; r++) tmp[r] = run[r] / tps[(size_t)full * R + r];
                            ratio_rounds = cJSON_CreateDoubleArray(tmp, R);
                            vs_full = stat_of(tmp, R).median;
                        }
                        /* the share of the bandwidth: each round's GB/s over the bandwidth read in that round */
                        double frac = NAN, bw = 0;
                        if (!a->no_machine) {
                            for (int r = 0; r < R; r++) tmp[r] = (weight_bytes + kv_read[u]) * run[r] / 1e9 / unit_bw[u * R + r];
                            frac = stat_of(tmp, R).median;
                            for (int r = 0; r < R; r++) tmp[r] = unit_bw[u * R + r];
                            bw = stat_of(tmp, R).median;
                        }
                        for (int r = 0; r < R; r++) tmp[r] = run[r];
                        Stat st = stat_of(tmp, R);
                        double gbs = (weight_bytes + kv_read[u]) * st.median / 1e9;
                        char bw_s[16], frac_s[16], vs_s[16];
                        figure_or_dash(bw_s, sizeof bw_s, "%.1f", bw);
                        figure_or_dash(frac_s, sizeof frac_s, "%.1f%%", 100 * frac);
                        figure_or_dash(vs_s, sizeof vs_s, "%.2f", vs_full);
                        printf("%-18s %3d %7d %-12s | %10.2f %10.2f | %9.2f (%6.2f..%6.2f) %8.2f %6s %8s %7s\n", label,
                               a->thread_list[t], C, sp->label, kv_in_use[u] / 1048576.0, kv_read[u] / 1e6,
                               st.median, st.min, st.max, gbs, frac_s, bw_s, vs_s);
                        fflush(stdout);
                        cJSON *o = cJSON_CreateObject();
                        cJSON_AddStringToObject(o, "config", label);
                        cJSON_AddStringToObject(o, "dtype", dtype_name(a->dtypes[d]));
                        cJSON_AddStringToObject(o, "attention", attention_path_name(a->attention[at]));
                        cJSON_AddStringToObject(o, "kv_dtype", dtype_name(kv_dtype));
                        cJSON_AddNumberToObject(o, "threads", a->thread_list[t]);
                        cJSON_AddNumberToObject(o, "context", C);
                        cJSON_AddStringToObject(o, "cache", sp->label);
                        cJSON_AddStringToObject(o, "policy", sp->name);
                        cJSON_AddNumberToObject(o, "compression", sp->compression);
                        cJSON_AddNumberToObject(o, "kv_bytes_in_use", kv_in_use[u]);
                        cJSON_AddNumberToObject(o, "kv_bytes_read_per_token", kv_read[u]);
                        cJSON_AddNumberToObject(o, "weight_bytes_per_token", weight_bytes);
                        cJSON_AddNumberToObject(o, "decode_tok_s_median", st.median);
                        cJSON_AddNumberToObject(o, "decode_tok_s_min", st.min);
                        cJSON_AddNumberToObject(o, "decode_tok_s_max", st.max);
                        cJSON_AddItemToObject(o, "decode_tok_s_per_round", per_round);
                        if (ratio_rounds) {
                            cJSON_AddItemToObject(o, "vs_full_per_round", ratio_rounds);
                            cJSON_AddNumberToObject(o, "vs_full_median", vs_full);
                        }
                        cJSON_AddNumberToObject(o, "achieved_gb_s", gbs);
                        cJSON_AddNumberToObject(o, "read_gb_s", bw > 0 ? bw : -1);
                        cJSON_AddNumberToObject(o, "frac_of_bandwidth", isfinite(frac) ? frac : -1);
                        cJSON_AddBoolToObject(o, "bandwidth_read_between_steps", probe);
                        cJSON_AddItemToArray(rows, o);
                    }
                }
        model_free(&m);
    }
    free(tps); free(kv_read); free(kv_in_use); free(bws); free(tmp); free(unit_bw);
}

int cmd_bench(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) { help(); return 0; }
    BenchArgs a;
    parse_args(argc, argv, &a);
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "isa", kernels_get()->name);
    MachineLimits *lim = measure_machine_all(&a, root);
    if (!a.machine_only && a.contexts) {
        if (!a.o.model_path) die("bench: -m MODEL is required (or --machine)");
        cJSON_AddStringToObject(root, "model", a.o.model_path);
        run_context_sweep(&a, root);
    } else if (!a.machine_only) {
        if (!a.o.model_path) die("bench: -m MODEL is required (or --machine)");
        cJSON *runs = cJSON_AddArrayToObject(root, "runs");
        cJSON_AddStringToObject(root, "model", a.o.model_path);
        cJSON_AddNumberToObject(root, "prompt_tokens", a.P);
        cJSON_AddNumberToObject(root, "gen_tokens", a.G);
        cJSON_AddNumberToObject(root, "repeat", a.repeat);
        cJSON_AddBoolToObject(root, "interleave", a.interleave);
        if (a.policy) {
            char *pj = policy_json(a.policy);
            cJSON *pobj = cJSON_Parse(pj);
            cJSON_AddItemToObject(root, "policy", pobj ? pobj : cJSON_CreateString(pj));
            free(pj);
        }
        printf("%-5s %3s | %10s %17s %8s %6s | %9s %17s %8s %8s %6s %8s\n", "dtype", "thr", "prefill", "(min..max) tok/s",
               "GFLOP/s", "%peak", "decode", "(min..max) tok/s", "MB/tok", "GB/s", "%bw", "bw GB/s");
        if (a.interleave) run_interleaved(&a, lim, runs);
        else run_sequential(&a, lim, runs);
    }
    if (a.json_path) write_json(a.json_path, root);
    cJSON_Delete(root);
    free(a.thread_list);
    free(a.contexts);
    free(lim);
    return 0;
}
