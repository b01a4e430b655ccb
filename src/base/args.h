/* args.h — argv helpers: strict parsing of one option's value. For the
 * command line (and the option parsers of the policies and evaluations):
 * every bad value dies with one line naming the option. */
#ifndef KVLAB_ARGS_H
#define KVLAB_ARGS_H

/* Strict number parsing: the whole string must be a number within [min, max],
 * otherwise die("--OPT: 'VALUE' is not ..."). */
long   cli_int(const char *opt, const char *value, long min, long max);
double cli_float(const char *opt, const char *value, double min, double max);
/* "1,2,3" -> malloc'ed array; count in *n. Each element checked like cli_int. */
int   *cli_int_list(const char *opt, const char *value, long min, long max, int *n);

/* The value after an option, or die("OPT needs a value"). */
const char *cli_value(int argc, char **argv, int *i);

/* Parse "--ids 1,2,3" ids against a vocabulary size. */
int *cli_ids(const char *opt, const char *value, int vocab_size, int *n);

/* True if argv has -h or --help. */
int cli_wants_help(int argc, char **argv);

#endif
