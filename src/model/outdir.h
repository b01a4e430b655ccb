/* outdir.h — write a checkpoint directory (plain files only) atomically:
 * everything goes into DIR.tmp.PID, renamed to DIR only when complete, so an
 * interrupted run never leaves a directory that looks finished.
 *
 *   char dir[OUTDIR_MAX];
 *   if (outdir_name(dir_in, dir, sizeof dir, err)) return -1;   // "out/" -> "out"
 *   ... the caller's own checks on dir ...
 *   OutDir od;
 *   if (outdir_begin(&od, dir, force, err)) return -1;         // nothing left behind on error
 *   if (write the files into od.tmp fails) { outdir_abort(&od); return -1; }
 *   return outdir_commit(&od, err);                            // tmp is gone afterwards either way
 *
 * An existing DIR is an error unless force, and even then it is replaced only
 * if it looks like a checkpoint (plain files with a config.json, or empty), so
 * a typo cannot wipe a home directory. A second process writing the same DIR
 * is refused ("DIR: in use by pid N"), and an interrupt (SIGINT, SIGTERM,
 * SIGHUP) removes DIR.tmp.PID (base/outguard.h). Used by `kvlab convert` and `kvlab synth`,
 * which also share the config.json they write (outdir_hf_config). */
#ifndef KVLAB_OUTDIR_H
#define KVLAB_OUTDIR_H

#include <stddef.h>

#include "model/model.h"
#include "base/outguard.h"
#include "base/util.h"

#define OUTDIR_MAX 4096

typedef struct {
    char dir[OUTDIR_MAX];
    char tmp[OUTDIR_MAX + 104];   /* dir + ".tmp.PID" */
    int existed;                  /* dir existed at begin: it is replaced on commit */
    OutLock lock;                 /* DIR.lock: one writer per directory, from begin to commit/abort */
    int guard;                    /* tmp's outguard registration: removed if interrupted */
} OutDir;

/* dir_in without trailing slashes into dir; an empty or too long name is an error. */
int outdir_name(const char *dir_in, char *dir, size_t size, Err *err);

/* Lock dir, check that it may be written (see above) and create od->tmp. */
int outdir_begin(OutDir *od, const char *dir, int force, Err *err);

/* Rename od->tmp to od->dir (moving an old dir aside, then deleting it). On
 * failure the old dir is put back and od->tmp removed. */
int outdir_commit(OutDir *od, Err *err);

/* Remove od->tmp and what was written into it; unlock. */
void outdir_abort(OutDir *od);

struct cJSON;
/* A Hugging Face LlamaForCausalLM config.json for this shape, torch_dtype from
 * dt; floats as the shortest decimal that reads back the same. The caller may
 * add keys, then writes it with outdir_write_json and deletes it. */
struct cJSON *outdir_hf_config(const Config *c, DType dt);
/* root pretty-printed, with a final newline, as dir/name. */
int outdir_write_json(const char *dir, const char *name, const struct cJSON *root, Err *err);

#endif
