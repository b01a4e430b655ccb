/* progress.h — a progress line on stderr for the evaluations:
 *
 *   "ppl: 3/8 chunks, 1840/4088 tok (45%), 96.3 tok/s, ETA 23s"
 *
 * Work is counted in `unit`s (tokens, trials, cells); the rate and the ETA
 * come from the work done by THIS process, so a resumed run (whose earlier
 * units count as done from the start) does not report an absurd rate.
 * On a terminal the line is rewritten in place at most twice a second; when
 * stderr is a file or a pipe, one line every `KVLAB_PROGRESS_SECONDS` seconds
 * (default 5) and nothing at all for runs shorter than that, so logs stay
 * short. progress_line_end prints one closing line (elapsed time, rate).
 * progress_hook feeds one from the forward steps of trace / correlate. */
#ifndef KVLAB_PROGRESS_H
#define KVLAB_PROGRESS_H

#include <stdint.h>

typedef struct {
    const char *what, *unit;    /* "ppl", "tok" */
    int64_t total, done;        /* work, in `unit`s */
    int64_t resumed;            /* work done by an earlier session (not in the rate) */
    const char *group;          /* optional coarse counter, e.g. "chunks" */
    int64_t group_total, group_done;
    double t0, last, interval;
    int tty, printed;
} ProgressLine;

/* Start counting: `done` units of `total` are already finished (resume). */
void progress_line_start(ProgressLine *p, const char *what, const char *unit, int64_t total, int64_t done);
/* Optional "3/8 chunks" before the fine counter. */
void progress_line_group(ProgressLine *p, const char *group, int64_t total, int64_t done);
void progress_line_add(ProgressLine *p, int64_t n);
void progress_line_group_add(ProgressLine *p, int64_t n);
void progress_line_end(ProgressLine *p);

/* The line as it would be printed now (for tests); returns buf. */
const char *progress_line_format(const ProgressLine *p, double now, char *buf, int size);

/* Called after each forward() of a sequence, for progress lines. */
typedef struct { void *ctx; void (*step)(void *ctx, int n_tokens); } StepHook;
/* A StepHook that adds each step's tokens to a progress line. */
StepHook progress_hook(ProgressLine *p);

#endif
