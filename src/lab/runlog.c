/* runlog.c — see runlog.h. */
#include "lab/runlog.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lab/runmeta.h"

/* One parsed CSV line: the raw text (for byte-exact final files) and its
 * unquoted fields (in `buf`). */
typedef struct {
    char *raw;       /* the line, without newline */
    char *buf;       /* unquoted copy; fields point into it */
    char **f;
    int n;
} Row;

typedef struct {
    int done;
    Row row;               /* unit,<columns>,seconds */
    double seconds;
    Row *details;
    int n_details, cap_details;
} Unit;

struct RunLog {
    char dir[4096], units_path[4200], details_path[4200];
    char *columns;                 /* "unit,<columns>,seconds" header line */
    char *detail_columns;          /* "unit,<columns>" or NULL */
    Row header, detail_header;
    long n_units, n_done;
    Unit *units;
    int fd_units, fd_details;
    long appended;                 /* by this process (test hook) */
    long stop_after;
    OutLock lock;                  /* one writer per run directory */
};

/* ---- small strings ---------------------------------------------------------------- */

char *csv_quote(const char *s) {
    Buf b = { 0 };
    size_t n = strlen(s);
    int quote = n > 0 && (s[0] == ' ' || s[n - 1] == ' ');
    for (const char *p = s; *p; p++) quote |= *p == ',' || *p == '"';
    buf_printf(&b, "%s", quote ? "\"" : "");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"') buf_printf(&b, "\"\"");
        else if (*p == '\n') buf_printf(&b, "\\n");
        else if (*p == '\r') buf_printf(&b, "\\r");
        else if (*p == '\t') buf_printf(&b, "\\t");
        else if (*p < 0x20 || *p == 0x7f) buf_printf(&b, "\\x%02x", *p);
        else buf_printf(&b, "%c", *p);
    }
    buf_printf(&b, "%s", quote ? "\"" : "");
    return b.data;
}

int csv_split(char *line, char **fields, int max) {
    int n = 0;
    char *r = line, *w = line;
    for (;;) {
        if (n == max) return -1;
        fields[n++] = w;
        if (*r == '"') {                      /* quoted: "" is a quote */
            r++;
            for (;;) {
                if (!*r) return -1;
                if (*r == '"' && r[1] == '"') { *w++ = '"'; r += 2; }
                else if (*r == '"') { r++; break; }
                else *w++ = *r++;
            }
            if (*r && *r != ',') return -1;
        } else {
            while (*r && *r != ',') *w++ = *r++;
        }
        if (!*r) { *w = '\0'; return n; }
        *w++ = '\0';
        r++;
    }
}

static int row_parse(Row *row, const char *line, int max_fields) {
    memset(row, 0, sizeof *row);
    row->raw = xstrdup(line);
    row->buf = xstrdup(line);
    row->f = xmalloc((size_t)max_fields * sizeof(char *));
    row->n = csv_split(row->buf, row->f, max_fields);
    return row->n;
}

static void row_free(Row *row) {
    free(row->raw);
    free(row->buf);
    free(row->f);
    memset(row, 0, sizeof *row);
}

static int column_index(const Row *header, const char *name) {
    for (int i = 0; i < header->n; i++)
        if (!strcmp(header->f[i], name)) return i;
    return -1;
}

/* ---- files ------------------------------------------------------------------------- */

/* Write all of buf and fsync: a finished unit must survive a kill or a crash. */
static int write_all_sync(int fd, const char *buf, size_t n, const char *path, Err *err) {
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return err_set(err, "%s: write failed: %s", path, strerror(errno));
        buf += w;
        n -= (size_t)w;
    }
    if (fsync(fd) != 0) return err_set(err, "%s: fsync failed: %s", path, strerror(errno));
    return 0;
}

/* The complete lines of a file (a partial last line is dropped and counted in
 * *dropped_bytes). *text is the file's content; lines are NUL-terminated in it. */
static char **read_lines(const char *path, char **text, int *n_lines, size_t *kept_bytes, size_t *dropped_bytes, Err *err) {
    size_t size;
    *n_lines = 0;
    *kept_bytes = *dropped_bytes = 0;
    if (read_file(path, text, &size, err) != 0) return NULL;
    char *last_nl = size ? memrchr(*text, '\n', size) : NULL;
    size_t keep = last_nl ? (size_t)(last_nl - *text) + 1 : 0;
    *kept_bytes = keep;
    *dropped_bytes = size - keep;
    int cap = 64, n = 0;
    char **lines = xmalloc((size_t)cap * sizeof(char *));
    for (char *p = *text; p < *text + keep;) {
        char *nl = memchr(p, '\n', (size_t)(*text + keep - p));
        *nl = '\0';
        if (nl > p && nl[-1] == '\r') nl[-1] = '\0';
        if (n == cap) lines = xrealloc(lines, (size_t)(cap *= 2) * sizeof(char *));
        lines[n++] = p;
        p = nl + 1;
    }
    *n_lines = n;
    return lines;
}

static int open_append(const char *path, Err *err) {
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0) return err_set(err, "%s: cannot open for appending: %s", path, strerror(errno));
    return fd;
}

/* Replace a file by `text` (atomic). */
static int rewrite_file(const char *path, const char *text, Err *err) {
    AtomicFile af;
    if (atomic_open(&af, path, err) != 0) return -1;
    fputs(text, af.f);
    return atomic_commit(&af, err);
}

/* ---- config.json ------------------------------------------------------------------- */

/* The first top-level key whose value differs between two configs ("?" if the
 * texts do not parse). */
static void config_difference(const char *old_text, const char *new_text, char *out, size_t size) {
    cJSON *a = cJSON_Parse(old_text), *b = cJSON_Parse(new_text);
    snprintf(out, size, "?");
    if (a && b) {
        cJSON *it;
        cJSON_ArrayForEach(it, b) {
            cJSON *o = cJSON_GetObjectItemCaseSensitive(a, it->string);
            if (!o || !cJSON_Compare(o, it, 1)) {
                char *was = o ? cJSON_PrintUnformatted(o) : NULL, *now = cJSON_PrintUnformatted(it);
                snprintf(out, size, "%s: was %.200s, now %.200s", it->string, was ? was : "absent", now ? now : "?");
                free(was);
                free(now);
                break;
            }
        }
    }
    cJSON_Delete(a);
    cJSON_Delete(b);
}

/* Fresh run: write config.json and empty logs (with headers). */
static int start_fresh(RunLog *r, const RunLogSpec *s, const char *config_path, Err *err) {
    char text[16384];
    if (rewrite_file(config_path, s->config_json, err) != 0) return -1;
    snprintf(text, sizeof text, "%s\n", r->columns);
    if (rewrite_file(r->units_path, text, err) != 0) return -1;
    if (r->detail_columns) {
        snprintf(text, sizeof text, "%s\n", r->detail_columns);
        if (rewrite_file(r->details_path, text, err) != 0) return -1;
    } else {
        unlink(r->details_path);
    }
    return 0;
}

/* ---- reading the logs back ----------------------------------------------------------- */

static int parse_unit_number(const char *s, long n_units, long *unit) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < 0 || v >= n_units) return -1;
    *unit = v;
    return 0;
}

/* log/units.csv: the header must match; a partial last line is cut off. */
static int load_units(RunLog *r, Err *err) {
    char *text = NULL;
    int n;
    size_t kept, dropped;
    char **lines = read_lines(r->units_path, &text, &n, &kept, &dropped, err);
    if (!lines) return -1;
    int rc = 0;
    if (n == 0 || strcmp(lines[0], r->columns) != 0) {
        rc = err_set(err, "%s: header is not '%s' (a log of another version or evaluation)", r->units_path, r->columns);
        goto out;
    }
    for (int i = 1; i < n; i++) {
        Row row;
        long unit;
        if (row_parse(&row, lines[i], r->header.n + 1) != r->header.n || parse_unit_number(row.f[0], r->n_units, &unit) != 0) {
            row_free(&row);
            rc = err_set(err, "%s: line %d is malformed: '%.80s'", r->units_path, i + 1, lines[i]);
            goto out;
        }
        Unit *u = &r->units[unit];
        if (u->done) { row_free(&row); continue; }    /* keep the first record of a unit */
        u->done = 1;
        u->seconds = atof(row.f[row.n - 1]);
        u->row = row;
        r->n_done++;
    }
    if (dropped && truncate(r->units_path, (off_t)kept) != 0)
        rc = err_set(err, "%s: cannot drop the partial last line: %s", r->units_path, strerror(errno));
    else if (dropped)
        fprintf(stderr, "kvlab: %s: dropped a partial last line (%zu bytes) of an interrupted run\n", r->units_path, dropped);
out:
    free(lines);
    free(text);
    return rc;
}

static void unit_add_detail(Unit *u, Row row) {
    if (u->n_details == u->cap_details) {
        u->cap_details = u->cap_details ? 2 * u->cap_details : 64;
        u->details = xrealloc(u->details, (size_t)u->cap_details * sizeof(Row));
    }
    u->details[u->n_details++] = row;
}

/* log/details.csv: keep the rows of finished units; rewrite the file if rows
 * of an unfinished unit (or a partial line) had to go. */
static int load_details(RunLog *r, Err *err) {
    char *text = NULL;
    int n;
    size_t kept, dropped;
    if (!path_exists(r->details_path)) return rewrite_file(r->details_path, "", err) ? -1 : 0;
    char **lines = read_lines(r->details_path, &text, &n, &kept, &dropped, err);
    if (!lines) return -1;
    int rc = 0, stale = dropped > 0;
    if (n == 0 || strcmp(lines[0], r->detail_columns) != 0) {
        rc = err_set(err, "%s: header is not '%s'", r->details_path, r->detail_columns);
        goto out;
    }
    Buf keep = { 0 };
    buf_printf(&keep, "%s\n", r->detail_columns);
    for (int i = 1; i < n; i++) {
        Row row;
        long unit;
        if (row_parse(&row, lines[i], r->detail_header.n + 1) != r->detail_header.n ||
            parse_unit_number(row.f[0], r->n_units, &unit) != 0 || !r->units[unit].done) {
            row_free(&row);
            stale = 1;
            continue;
        }
        buf_printf(&keep, "%s\n", lines[i]);
        unit_add_detail(&r->units[unit], row);
    }
    if (stale) rc = rewrite_file(r->details_path, keep.data, err);
    buf_free(&keep);
out:
    free(lines);
    free(text);
    return rc;
}

/* Without --resume, a directory with results is refused rather than overwritten. */
static int refuse_existing(RunLog *r, const char *config_path, Err *err) {
    char meta[4200];
    path_join(meta, sizeof meta, r->dir, "meta.json");
    if (path_exists(meta))
        return err_set(err, "%s: holds a finished run: --resume to keep it (nothing is recomputed), or choose another -o", r->dir);
    if (!path_exists(config_path) || !path_exists(r->units_path)) return 0;
    char *text = NULL;
    int n;
    size_t kept, dropped;
    Err ignore;
    char **lines = read_lines(r->units_path, &text, &n, &kept, &dropped, &ignore);
    free(lines);
    free(text);
    if (n > 1)
        return err_set(err, "%s: holds %d finished units of an interrupted run: --resume continues it, or choose another -o",
                       r->dir, n - 1);
    return 0;
}

static int open_logs(RunLog *r, const RunLogSpec *s, Err *err) {
    char config_path[4200];
    path_join(config_path, sizeof config_path, r->dir, "config.json");
    if (!s->resume) {
        if (refuse_existing(r, config_path, err) != 0) return -1;
        if (start_fresh(r, s, config_path, err) != 0) return -1;
    } else if (!path_exists(config_path) || !path_exists(r->units_path)) {
        if (start_fresh(r, s, config_path, err) != 0) return -1;     /* nothing to resume: start */
    } else {
        char *old;
        size_t size;
        if (read_file(config_path, &old, &size, err) != 0) return -1;
        int same = !strcmp(old, s->config_json);
        char diff[600];
        if (!same) config_difference(old, s->config_json, diff, sizeof diff);
        free(old);
        if (!same)
            return err_set(err, "%s: --resume with other options than the run there (%s): choose another -o", r->dir, diff);
        if (load_units(r, err) != 0) return -1;
        if (r->detail_columns && load_details(r, err) != 0) return -1;
    }
    r->fd_units = open_append(r->units_path, err);
    if (r->fd_units < 0) return -1;
    if (r->detail_columns && (r->fd_details = open_append(r->details_path, err)) < 0) return -1;
    return 0;
}

RunLog *runlog_open(const RunLogSpec *s, Err *err) {
    if (s->n_units < 1) { err_set(err, "%s: nothing to evaluate (0 units)", s->dir); return NULL; }
    if (s->resume && !path_exists(s->dir)) {
        err_set(err, "%s: --resume: nothing to resume (no such directory); leave out --resume to start a run", s->dir);
        return NULL;
    }
    RunLog *r = xcalloc(1, sizeof *r);
    r->fd_units = r->fd_details = -1;
    if (run_dir_lock(&r->lock, s->dir, err) != 0) { free(r); return NULL; }
    if (make_dirs(s->dir, err) != 0) { outlock_release(&r->lock); free(r); return NULL; }
    snprintf(r->dir, sizeof r->dir, "%s", s->dir);
    char logdir[4200];
    path_join(logdir, sizeof logdir, r->dir, "log");
    if (make_dirs(logdir, err) != 0) { outlock_release(&r->lock); free(r); return NULL; }
    path_join(r->units_path, sizeof r->units_path, logdir, "units.csv");
    path_join(r->details_path, sizeof r->details_path, logdir, "details.csv");
    Buf b = { 0 };
    buf_printf(&b, "unit,%s,seconds", s->columns);
    r->columns = b.data;
    row_parse(&r->header, r->columns, 1024);
    if (s->detail_columns) {
        Buf d = { 0 };
        buf_printf(&d, "unit,%s", s->detail_columns);
        r->detail_columns = d.data;
        row_parse(&r->detail_header, r->detail_columns, 1024);
    }
    r->n_units = s->n_units;
    r->units = xcalloc((size_t)s->n_units, sizeof(Unit));
    const char *stop = getenv("KVLAB_EVAL_STOP_AFTER");
    r->stop_after = stop && *stop ? atol(stop) : 0;
    if (open_logs(r, s, err) != 0) { runlog_close(r); return NULL; }
    return r;
}

void runlog_close(RunLog *r) {
    if (!r) return;
    if (r->fd_units >= 0) close(r->fd_units);
    if (r->fd_details >= 0) close(r->fd_details);
    outlock_release(&r->lock);
    for (long i = 0; i < r->n_units; i++) {
        row_free(&r->units[i].row);
        for (int j = 0; j < r->units[i].n_details; j++) row_free(&r->units[i].details[j]);
        free(r->units[i].details);
    }
    free(r->units);
    row_free(&r->header);
    row_free(&r->detail_header);
    free(r->columns);
    free(r->detail_columns);
    free(r);
}

int runlog_done(const RunLog *r, long unit) { return unit >= 0 && unit < r->n_units && r->units[unit].done; }
long runlog_count(const RunLog *r) { return r->n_done; }
long runlog_units(const RunLog *r) { return r->n_units; }
const char *runlog_dir(const RunLog *r) { return r->dir; }

/* ---- appending --------------------------------------------------------------------- */

/* "fields\n..." -> "unit,fields\n..." and remembered as parsed rows. */
static int append_details(RunLog *r, long unit, const char *details, Err *err) {
    Buf b = { 0 };
    for (const char *p = details; *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        buf_printf(&b, "%ld,%.*s\n", unit, (int)len, p);
        char *line = xmalloc(len + 32);
        snprintf(line, len + 32, "%ld,%.*s", unit, (int)len, p);
        Row row;
        if (row_parse(&row, line, r->detail_header.n + 1) != r->detail_header.n) {
            free(line);
            row_free(&row);
            buf_free(&b);
            return err_set(err, "%s: a detail row of unit %ld has the wrong number of columns: '%.80s'",
                           r->details_path, unit, p);
        }
        free(line);
        unit_add_detail(&r->units[unit], row);
        p += len + (nl != NULL);
    }
    int rc = b.len ? write_all_sync(r->fd_details, b.data, b.len, r->details_path, err) : 0;
    buf_free(&b);
    return rc;
}

int runlog_append(RunLog *r, long unit, const char *fields, const char *details, double seconds, Err *err) {
    if (unit < 0 || unit >= r->n_units || r->units[unit].done)
        return err_set(err, "%s: unit %ld is out of range or already finished", r->units_path, unit);
    if (details && *details) {
        if (!r->detail_columns) return err_set(err, "%s: this run has no detail log", r->dir);
        if (append_details(r, unit, details, err) != 0) return -1;
    }
    Buf b = { 0 };
    buf_printf(&b, "%ld,%s,%.3f", unit, fields, seconds);
    Row row;
    if (row_parse(&row, b.data, r->header.n + 1) != r->header.n) {
        row_free(&row);
        buf_free(&b);
        return err_set(err, "%s: the row of unit %ld has the wrong number of columns", r->units_path, unit);
    }
    buf_printf(&b, "\n");
    int rc = write_all_sync(r->fd_units, b.data, b.len, r->units_path, err);
    buf_free(&b);
    if (rc != 0) { row_free(&row); return -1; }
    Unit *u = &r->units[unit];
    u->done = 1;
    u->row = row;
    u->seconds = seconds;
    r->n_done++;
    if (r->stop_after > 0 && ++r->appended >= r->stop_after) {
        fprintf(stderr, "kvlab: KVLAB_EVAL_STOP_AFTER=%ld: stopping as if killed\n", r->stop_after);
        _exit(75);
    }
    return 0;
}

/* ---- reading ----------------------------------------------------------------------- */

const char *runlog_field(const RunLog *r, long unit, const char *column) {
    if (!runlog_done(r, unit)) return NULL;
    int c = column_index(&r->header, column);
    return c < 0 ? NULL : r->units[unit].row.f[c];
}

double runlog_number(const RunLog *r, long unit, const char *column) {
    const char *s = runlog_field(r, unit, column);
    if (!s || !*s) return NAN;
    char *end;
    double v = strtod(s, &end);
    return *end ? NAN : v;
}

int runlog_detail_count(const RunLog *r, long unit) { return runlog_done(r, unit) ? r->units[unit].n_details : 0; }
int runlog_detail_column(const RunLog *r, const char *column) {
    return r->detail_columns ? column_index(&r->detail_header, column) : -1;
}
const char *runlog_detail_field(const RunLog *r, long unit, int row, int column) {
    if (row < 0 || row >= runlog_detail_count(r, unit) || column < 0 || column >= r->detail_header.n) return NULL;
    return r->units[unit].details[row].f[column];
}

double runlog_compute_seconds(const RunLog *r) {
    double s = 0;
    for (long i = 0; i < r->n_units; i++) if (r->units[i].done) s += r->units[i].seconds;
    return s;
}

/* ---- final files ------------------------------------------------------------------- */

int runlog_write_results(const RunLog *r, const char *name, Err *err) {
    char path[4200];
    path_join(path, sizeof path, r->dir, name);
    AtomicFile af;
    if (atomic_open(&af, path, err) != 0) return -1;
    const char *cut = strrchr(r->columns, ',');       /* drop ",seconds": timing is not a result */
    fprintf(af.f, "%.*s\n", (int)(cut - r->columns), r->columns);
    for (long i = 0; i < r->n_units; i++) {
        if (!r->units[i].done) continue;
        const char *raw = r->units[i].row.raw, *c = strrchr(raw, ',');
        fprintf(af.f, "%.*s\n", (int)(c - raw), raw);
    }
    return atomic_commit(&af, err);
}

int runlog_write_details(const RunLog *r, const char *name, Err *err) {
    if (!r->detail_columns) return 0;
    char path[4200];
    path_join(path, sizeof path, r->dir, name);
    AtomicFile af;
    if (atomic_open(&af, path, err) != 0) return -1;
    fprintf(af.f, "%s\n", r->detail_columns);
    for (long i = 0; i < r->n_units; i++)
        for (int j = 0; j < r->units[i].n_details; j++) fprintf(af.f, "%s\n", r->units[i].details[j].raw);
    return atomic_commit(&af, err);
}

/* ---- meta.json --------------------------------------------------------------------- */

static void cpu_model(char *out, size_t size) {
    snprintf(out, size, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) != 0) continue;
        char *colon = strchr(line, ':');
        if (!colon) continue;
        colon++;
        while (*colon == ' ' || *colon == '\t') colon++;
        colon[strcspn(colon, "\n")] = '\0';
        snprintf(out, size, "%s", colon);
        break;
    }
    fclose(f);
}

cJSON *runlog_file_identity(const char *path) {
    cJSON *o = cJSON_CreateObject();
    struct stat st;
    cJSON_AddStringToObject(o, "path", path);
    if (stat(path, &st) == 0) {
        cJSON_AddNumberToObject(o, "bytes", (double)st.st_size);
        cJSON_AddNumberToObject(o, "mtime", (double)st.st_mtime);
    }
    return o;
}

cJSON *runlog_meta_new(const char *command, int argc, char **argv, const Model *m, const PolicyOpts *po,
                       const char *config_json) {
    cJSON *meta = runmeta_new(command, argc, argv, m);
    char cpu[256];
    cpu_model(cpu, sizeof cpu);
    cJSON_AddStringToObject(meta, "cpu", cpu);
    cJSON_AddNumberToObject(meta, "cpus_online", (double)sysconf(_SC_NPROCESSORS_ONLN));
    if (po) {
        char *pj = policy_json(po);
        cJSON *p = cJSON_Parse(pj);
        free(pj);
        if (p) cJSON_AddItemToObject(meta, "policy", p);
    }
    cJSON *config = cJSON_Parse(config_json);
    if (config) cJSON_AddItemToObject(meta, "config", config);
    return meta;
}

int runlog_finish(RunLog *r, cJSON *meta, double t_start, Err *err) {
    cJSON_AddNumberToObject(meta, "units", (double)r->n_units);
    cJSON_AddNumberToObject(meta, "compute_seconds", runlog_compute_seconds(r));
    return runmeta_write(meta, r->dir, t_start, err);
}
