/* progress.c — see progress.h. */
#include "lab/progress.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/util.h"

static double file_interval(void) {
    const char *s = getenv("KVLAB_PROGRESS_SECONDS");
    double v = s && *s ? atof(s) : 5.0;
    return v > 0 ? v : 5.0;
}

void progress_line_start(ProgressLine *p, const char *what, const char *unit, int64_t total, int64_t done) {
    memset(p, 0, sizeof *p);
    p->what = what;
    p->unit = unit;
    p->total = total;
    p->done = p->resumed = done;
    p->t0 = p->last = now_seconds();
    p->tty = isatty(STDERR_FILENO);
    p->interval = p->tty ? 0.5 : file_interval();
}

void progress_line_group(ProgressLine *p, const char *group, int64_t total, int64_t done) {
    p->group = group;
    p->group_total = total;
    p->group_done = done;
}

/* "1m05s" / "42s" / "1h02m" */
static void format_seconds(double s, char *buf, int size) {
    long t = s > 0 ? (long)(s + 0.5) : 0;
    if (t >= 3600) snprintf(buf, (size_t)size, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else if (t >= 60) snprintf(buf, (size_t)size, "%ldm%02lds", t / 60, t % 60);
    else snprintf(buf, (size_t)size, "%lds", t);
}

const char *progress_line_format(const ProgressLine *p, double now, char *buf, int size) {
    double dt = now - p->t0;
    int64_t mine = p->done - p->resumed;
    double rate = dt > 0 ? (double)mine / dt : 0.0;
    char eta[32], group[96] = "";
    if (rate > 0) format_seconds((double)(p->total - p->done) / rate, eta, sizeof eta);
    else snprintf(eta, sizeof eta, "?");
    if (p->group)
        snprintf(group, sizeof group, "%lld/%lld %s, ", (long long)p->group_done, (long long)p->group_total, p->group);
    snprintf(buf, (size_t)size, "%s: %s%lld/%lld %s (%.0f%%), %.1f %s/s, ETA %s", p->what, group,
             (long long)p->done, (long long)p->total, p->unit,
             p->total > 0 ? 100.0 * (double)p->done / (double)p->total : 100.0, rate, p->unit, eta);
    return buf;
}

static void print_now(ProgressLine *p, double now) {
    char line[256];
    progress_line_format(p, now, line, sizeof line);
    if (p->tty) fprintf(stderr, "\r%s\033[K", line);
    else fprintf(stderr, "%s\n", line);
    fflush(stderr);
    p->last = now;
    p->printed = 1;
}

void progress_line_add(ProgressLine *p, int64_t n) {
    p->done += n;
    double now = now_seconds();
    /* files: quiet for short runs, then one line per interval */
    if (now - p->last >= p->interval && (p->tty || now - p->t0 >= p->interval)) print_now(p, now);
}

void progress_line_group_add(ProgressLine *p, int64_t n) { p->group_done += n; }

void progress_line_end(ProgressLine *p) {
    double now = now_seconds(), dt = now - p->t0;
    int64_t mine = p->done - p->resumed;
    char el[32];
    format_seconds(dt, el, sizeof el);
    fprintf(stderr, "%s%s: %lld %s done in %s (%.1f %s/s)%s\n", p->tty && p->printed ? "\r\033[K" : "", p->what,
            (long long)mine, p->unit, el, dt > 0 ? (double)mine / dt : 0.0, p->unit,
            p->resumed ? " after resuming" : "");
    fflush(stderr);
}

static void progress_step(void *ctx, int n) { progress_line_add(ctx, n); }
StepHook progress_hook(ProgressLine *p) { StepHook h = { p, progress_step }; return h; }
