/* runlog.h — the run directory of an evaluation: results appended per
 * finished unit, resumable after a kill, final files written atomically
 * (../shared/spec/formats.md "Outputs").
 *
 *   RUN_DIR/config.json       what defines the results: the evaluation's knobs,
 *                             the policy (policy_json), the seed, the identity
 *                             (path, size, mtime) of the model and the data.
 *                             Written at the start; --resume refuses a run
 *                             directory whose config differs.
 *   RUN_DIR/log/units.csv     "unit,<columns>,seconds": one row per finished
 *                             unit, each appended with ONE write() and fsync'ed,
 *                             so a kill leaves at most a partial last line;
 *                             runlog_open drops it on resume.
 *   RUN_DIR/log/details.csv   optional "unit,<columns>" rows (e.g. one per
 *                             token), written and fsync'ed BEFORE the unit's
 *                             row: rows of a unit without a row in units.csv
 *                             are dropped on resume and recomputed.
 *   RUN_DIR/results.csv       final: the unit rows sorted by unit, without the
 *                             timing column, so an interrupted-and-resumed run
 *                             and an uninterrupted one give the same bytes.
 *   RUN_DIR/<details>.csv     final: the detail rows, sorted by unit.
 *   RUN_DIR/summary.csv/.json final, written by the evaluation.
 *   RUN_DIR/meta.json         written LAST (runlog_finish): command line,
 *                             model + size/mtime, policy, seed, git describe,
 *                             CPU/ISA, threads, wall and compute time. A run
 *                             directory without meta.json is unfinished.
 *
 * A unit is the evaluation's smallest piece of work that is never split: a
 * perplexity chunk, a passkey trial, a needle (length, depth) cell. Units are
 * numbered 0..n_units-1 in the evaluation's deterministic order.
 *
 * Test hook: KVLAB_EVAL_STOP_AFTER=N makes the process _exit(75) right after
 * its N-th appended unit, as if it had been killed there. */
#ifndef KVLAB_RUNLOG_H
#define KVLAB_RUNLOG_H

#include <stdio.h>

#include "base/buf.h"
#include "model/model.h"
#include "policy/policy.h"
#include "base/util.h"

struct cJSON;

typedef struct {
    const char *dir;
    const char *config_json;     /* compact JSON; compared byte for byte on --resume */
    const char *columns;         /* columns after "unit", e.g. "length,depth,correct" */
    const char *detail_columns;  /* NULL: no detail log */
    long n_units;
    int resume;
} RunLogSpec;

typedef struct RunLog RunLog;

/* Creates RUN_DIR (and log/), or reopens it with spec->resume. Refuses a
 * directory that holds results when not resuming, and one whose config.json
 * differs when resuming (the message names the first differing key). */
RunLog *runlog_open(const RunLogSpec *spec, Err *err);
void runlog_close(RunLog *r);

int  runlog_done(const RunLog *r, long unit);
long runlog_count(const RunLog *r);            /* finished units */
long runlog_units(const RunLog *r);            /* units of the run, done or not */

/* Record a finished unit: `details` (NULL or rows "fields\n", without the unit
 * column) first, then "unit,fields,seconds". Fields are CSV already (see
 * csv_quote). Returns -1 if the disk refuses the write. */
int runlog_append(RunLog *r, long unit, const char *fields, const char *details, double seconds, Err *err);

/* Read back a finished unit (from this session or an earlier one). */
const char *runlog_field(const RunLog *r, long unit, const char *column);   /* NULL if absent */
double runlog_number(const RunLog *r, long unit, const char *column);       /* NaN if absent/empty */
int runlog_detail_count(const RunLog *r, long unit);
int runlog_detail_column(const RunLog *r, const char *column);              /* index, -1 if absent */
const char *runlog_detail_field(const RunLog *r, long unit, int row, int column);

/* Final files (atomic). */
int runlog_write_results(const RunLog *r, const char *name, Err *err);
int runlog_write_details(const RunLog *r, const char *name, Err *err);
double runlog_compute_seconds(const RunLog *r);   /* Σ unit seconds, every session */
const char *runlog_dir(const RunLog *r);

/* meta.json: runmeta_new (runmeta.h: command line, argv, model with size and
 * mtime, git describe, ISA, threads, host) plus the CPU model, the policy's
 * every knob and a copy of config.json. The caller adds outputs / numbers. */
struct cJSON *runlog_meta_new(const char *command, int argc, char **argv, const Model *m,
                              const PolicyOpts *po, const char *config_json);
/* Adds units, compute_seconds and wall_seconds; writes meta.json LAST (atomic);
 * frees meta. */
int runlog_finish(RunLog *r, struct cJSON *meta, double t_start, Err *err);

/* {"path","bytes","mtime"} of a file or directory, for config.json. */
struct cJSON *runlog_file_identity(const char *path);

/* A CSV field: quoted if it holds a comma, a quote or a leading/trailing space;
 * control characters become \n, \r, \t or \xHH so a field never spans lines.
 * Returns a malloc'ed string. */
char *csv_quote(const char *s);
/* Split a CSV line (no newline) into at most max fields, unquoting in place;
 * returns the number of fields, or -1 on a malformed quote. */
int csv_split(char *line, char **fields, int max);

#endif
