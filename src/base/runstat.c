/* runstat.c — see runstat.h. */
#include "base/runstat.h"

#include <math.h>

void runstat_add(RunStat *s, double x) {
    if (isnan(x)) return;
    s->n++;
    double d = x - s->mean;
    s->mean += d / (double)s->n;
    s->m2 += d * (x - s->mean);
}

double runstat_mean(const RunStat *s) { return s->n > 0 ? s->mean : NAN; }

double runstat_std(const RunStat *s) { return s->n > 1 ? sqrt(s->m2 / (double)(s->n - 1)) : NAN; }
