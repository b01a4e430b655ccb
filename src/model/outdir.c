/* outdir.c — checkpoint directories written atomically (see outdir.h). */
#include "model/outdir.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Remove a directory of plain files (never recurses: only our temporary
 * directory or a checked checkpoint directory is ever removed). */
static void remove_flat_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        char p[4200];
        while ((e = readdir(d)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            path_join(p, sizeof p, dir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

/* --force replaces only what looks like a checkpoint directory (plain files
 * and a config.json, or nothing at all). */
static int replaceable(const char *dir, Err *err) {
    if (!path_is_dir(dir)) return err_set(err, "%s: exists and is not a directory (an HF output is a directory)", dir);
    DIR *d = opendir(dir);
    if (!d) return err_set(err, "%s: cannot read: %s", dir, strerror(errno));
    int files = 0, config = 0, other = 0;
    struct dirent *e;
    char p[4200];
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        path_join(p, sizeof p, dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) != 0 || !S_ISREG(st.st_mode)) other = 1;
        files++;
        config |= !strcmp(e->d_name, "config.json");
    }
    closedir(d);
    if (other || (files > 0 && !config))
        return err_set(err, "%s: --force only replaces a checkpoint directory (plain files with a config.json); refusing", dir);
    return 0;
}

int outdir_name(const char *dir_in, char *dir, size_t size, Err *err) {
    size_t len = strlen(dir_in);
    while (len > 1 && dir_in[len - 1] == '/') len--;   /* "out/" -> "out" */
    if (len == 0 || len >= size) return err_set(err, "-o '%s': not a usable directory name", dir_in);
    snprintf(dir, size, "%.*s", (int)len, dir_in);
    return 0;
}

int outdir_begin(OutDir *od, const char *dir, int force, Err *err) {
    snprintf(od->dir, sizeof od->dir, "%s", dir);
    od->guard = -1;
    if (outlock_acquire(&od->lock, dir, err) != 0) return -1;
    od->existed = path_exists(dir);
    if (od->existed && !force) { outlock_release(&od->lock); return err_set(err, "%s: already exists (--force replaces it)", dir); }
    if (od->existed && replaceable(dir, err)) { outlock_release(&od->lock); return -1; }
    snprintf(od->tmp, sizeof od->tmp, "%s.tmp.%ld", dir, (long)getpid());
    od->guard = outguard_add_dir(od->tmp, dir);
    if (mkdir(od->tmp, 0755) != 0) {
        int e = errno;
        outguard_forget(od->guard);
        outlock_release(&od->lock);
        return err_set(err, "%s: cannot create %s: %s", dir, od->tmp, strerror(e));
    }
    return 0;
}

int outdir_commit(OutDir *od, Err *err) {
    char old[4200];
    snprintf(old, sizeof old, "%s.old.%ld", od->dir, (long)getpid());
    /* an interrupt between the two renames would leave neither directory in
     * place: hold it off until the new one is there */
    outguard_hold();
    if (od->existed && rename(od->dir, old) != 0) {
        err_set(err, "%s: cannot move the old directory aside: %s", od->dir, strerror(errno));
        outdir_abort(od);
        outguard_release();
        return -1;
    }
    if (rename(od->tmp, od->dir) != 0) {
        int e = errno;
        if (od->existed) rename(old, od->dir);
        err_set(err, "%s: cannot rename %s into place: %s", od->dir, od->tmp, strerror(e));
        outdir_abort(od);
        outguard_release();
        return -1;
    }
    outguard_forget(od->guard);
    od->guard = -1;
    if (od->existed) remove_flat_dir(old);
    outlock_release(&od->lock);
    outguard_release();
    return 0;
}

void outdir_abort(OutDir *od) {
    remove_flat_dir(od->tmp);
    outguard_forget(od->guard);
    od->guard = -1;
    outlock_release(&od->lock);
}

/* ---- config.json ---------------------------------------------------------------- */

/* The shortest decimal that reads back as the same float (1e-05, not 9.99999975e-06). */
static cJSON *float_number(float v) {
    char buf[32];
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)v);
        if ((float)strtod(buf, NULL) == v) break;
    }
    return cJSON_CreateRaw(buf);
}

cJSON *outdir_hf_config(const Config *c, DType dt) {
    cJSON *r = cJSON_CreateObject();
    cJSON_AddItemToObject(r, "architectures", cJSON_CreateStringArray((const char *[]){ "LlamaForCausalLM" }, 1));
    cJSON_AddStringToObject(r, "model_type", "llama");
    cJSON_AddNumberToObject(r, "hidden_size", c->dim);
    cJSON_AddNumberToObject(r, "intermediate_size", c->hidden_dim);
    cJSON_AddNumberToObject(r, "num_hidden_layers", c->n_layers);
    cJSON_AddNumberToObject(r, "num_attention_heads", c->n_heads);
    cJSON_AddNumberToObject(r, "num_key_value_heads", c->n_kv_heads);
    cJSON_AddNumberToObject(r, "head_dim", c->head_dim);
    cJSON_AddNumberToObject(r, "max_position_embeddings", c->max_seq_len);
    cJSON_AddNumberToObject(r, "vocab_size", c->vocab_size);
    cJSON_AddItemToObject(r, "rms_norm_eps", float_number(c->norm_eps));
    cJSON_AddItemToObject(r, "rope_theta", float_number(c->rope_theta));
    cJSON_AddNullToObject(r, "rope_scaling");
    cJSON_AddBoolToObject(r, "tie_word_embeddings", c->tied_embeddings);
    cJSON_AddNumberToObject(r, "bos_token_id", c->bos_id);
    cJSON_AddNumberToObject(r, "eos_token_id", c->eos_id);
    cJSON_AddStringToObject(r, "hidden_act", "silu");
    cJSON_AddBoolToObject(r, "attention_bias", 0);
    cJSON_AddBoolToObject(r, "mlp_bias", 0);
    cJSON_AddStringToObject(r, "torch_dtype", dt == DTYPE_F32 ? "float32" : dt == DTYPE_BF16 ? "bfloat16" : "float16");
    return r;
}

int outdir_write_json(const char *dir, const char *name, const cJSON *root, Err *err) {
    char path[4200];
    path_join(path, sizeof path, dir, name);
    char *text = cJSON_Print(root);
    if (!text) die("out of memory printing %s", name);
    FILE *f = fopen(path, "wb");
    int ok = f && fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    if (f && fclose(f) != 0) ok = 0;
    cJSON_free(text);
    if (!ok) return err_set(err, "%s: cannot write: %s", path, strerror(errno));
    return 0;
}
