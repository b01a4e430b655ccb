/* runmeta.h — what every run directory needs, whichever command writes it
 * (trace, correlate, ppl, passkey, needle): text cut into chunks, byte sizes,
 * meta.json, the lock that keeps it to one writer. */
#ifndef KVLAB_RUNMETA_H
#define KVLAB_RUNMETA_H

#include <stddef.h>
#include <stdint.h>

#include "base/outguard.h"
#include "base/util.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "policy/policy.h"

/* Text -> n_chunks sequences of `chunk` tokens, each [BOS] + the next chunk-1
 * tokens of the file (consecutive, non-overlapping). Only whole chunks are
 * returned: *n_got may be smaller than asked (never 0: that is an error). */
int *text_chunks(const Tokenizer *tok, const char *path, int chunk, int n_chunks, int *n_got, Err *err);

/* "1G", "512M", "64k", "1000" -> bytes (K = 1024). -1 on a bad value. */
int64_t parse_bytes(const char *s);
/* Human size: "1.5 GiB". */
const char *format_bytes(double bytes, char *buf, size_t size);

/* meta.json: the run's command line, model (path, format, size, mtime, shape),
 * git describe of kvlab, ISA, threads, start time; the caller adds "knobs" and
 * "outputs" (cJSON objects: see cJSON.h) and then writes it LAST, so a run
 * directory without meta.json is unfinished. */
struct cJSON;
struct cJSON *runmeta_new(const char *command, int argc, char **argv, const Model *m);
struct cJSON *runmeta_knobs(struct cJSON *meta);       /* the "knobs" object */
void runmeta_add_output(struct cJSON *meta, const char *file, const char *what);
/* meta's "policy": policy_json of the options. */
void runmeta_add_policy(struct cJSON *meta, const PolicyOpts *po);
/* meta's "policy_budgets": the per-layer and per-(layer, KV head) budgets of
 * the policy's most recent decision (policy_budgets_json); nothing if it never
 * decided (full, or no eviction ran in this process). */
void runmeta_add_budgets(struct cJSON *meta, const Policy *p);
/* Adds wall_seconds (now − t_start), writes RUN_DIR/meta.json atomically, frees meta. */
int runmeta_write(struct cJSON *meta, const char *run_dir, double t_start, Err *err);

/* Lock the run directory `dir` for this process (outguard.h): its parent
 * directories are created first, since the lock file sits beside it. */
int run_dir_lock(OutLock *lock, const char *dir, Err *err);

#endif
