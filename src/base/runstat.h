/* runstat.h — running mean and sample standard deviation in one pass
 * (Welford 1962), numerically stable where the textbook Σx² − (Σx)²/n
 * cancels: for each x,
 *     mean_k = mean_{k-1} + (x − mean_{k-1}) / k
 *     M2_k   = M2_{k-1} + (x − mean_{k-1}) (x − mean_k)        std = sqrt(M2 / (n − 1))
 * A NaN is not a value (a metric undefined for that row): it is skipped. */
#ifndef KVLAB_RUNSTAT_H
#define KVLAB_RUNSTAT_H

#include <stdint.h>

typedef struct { int64_t n; double mean, m2; } RunStat;   /* {0} is empty */

void runstat_add(RunStat *s, double x);
double runstat_mean(const RunStat *s);   /* NaN when n = 0 */
double runstat_std(const RunStat *s);    /* sample std (n − 1); NaN when n < 2 */

#endif
