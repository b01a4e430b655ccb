/* cmd_info.c — `kvlab info -m MODEL`: what a checkpoint is and what it costs. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/commands.h"
#include "simd/kernels.h"
#include "engine/ops.h"
#include "model/llama_tensors.h"

static void help(void) {
    printf("usage: kvlab info -m MODEL [options]\n\n"
           "Prints the architecture, parameter count, dtypes, file sizes, KV-cache bytes per\n"
           "token, and the detected / chosen SIMD kernels. Without -m: only the CPU part.\n\n"
           COMMON_OPTS_HELP);
}

int cmd_info(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) { help(); return 0; }
    CommonOpts o;
    common_defaults(&o);
    for (int i = 1; i < argc; i++)
        if (!common_option(&o, argc, argv, &i)) die("info: unknown option '%s' (kvlab info --help)", argv[i]);
    common_setup(&o);
    const Kernels *avail[8];
    int n_avail = kernels_available(avail, 8);
    printf("cpu kernels: detected %s, using %s (available:", kernels_detected(), kernels_get()->name);
    for (int i = 0; i < n_avail; i++) printf(" %s", avail[i]->name);
    printf("), threads %d\n", ops_threads());
    if (!o.model_path) return 0;

    Model m;
    common_load_model(&o, &m);
    const Config *c = &m.cfg;
    printf("model:       %s (%s)\n", m.path, m.format);
    printf("layers %d, dim %d, ffn %d, heads %d, kv_heads %d%s, head_dim %d, vocab %d\n",
           c->n_layers, c->dim, c->hidden_dim, c->n_heads, c->n_kv_heads,
           c->n_kv_heads < c->n_heads ? " (GQA)" : " (MHA)", c->head_dim, c->vocab_size);
    printf("context %d, rope_theta %g (%s pairing), rms_eps %g, embeddings %s\n",
           c->max_seq_len, (double)c->rope_theta, c->rope_pairing_halves ? "HF half" : "interleaved",
           (double)c->norm_eps, c->tied_embeddings ? "tied" : "untied");
    printf("parameters:  %lld (%.2f M)\n", m.n_params, (double)m.n_params / 1e6);
    printf("dtypes:      file %s, compute %s%s\n", dtype_name(m.file_dtype), dtype_name(m.compute_dtype),
           m.in_place_bytes == 0 ? (m.file_dtype == m.compute_dtype ? " (copied at load)" : " (converted at load)")
                                 : m.converted_bytes ? " (partly in place from the file, --mmap)" : " (in place from the file, --mmap)");
    printf("files:       %zu bytes (%.1f MiB) in %d file(s); weights in memory %zu bytes, in place %zu bytes\n",
           m.file_bytes, (double)m.file_bytes / 1048576.0, m.n_maps, m.converted_bytes, m.in_place_bytes);
    int n_mats = 0, n_in_panels = 0;   /* matrices (the classifier once when tied), and how many are in panels */
    for (int l = -1; l < c->n_layers; l++)
        for (int t = l < 0 ? LT_PER_LAYER : 0; t < (l < 0 ? LT_COUNT : LT_PER_LAYER); t++) {
            const Mat *a = llama_tensor_mat(&m.w, (LlamaTensor)t, l);
            if (!a || (t == LT_CLASSIFIER && c->tied_embeddings)) continue;
            n_mats++;
            n_in_panels += a->panel_cols > 0;
        }
    printf("layout:      %d of %d weight matrices in column panels of %d (wider than that, copied at load), the rest row-major\n",
           n_in_panels, n_mats, MAT_PANEL_COLS);
    size_t per_token = model_kv_bytes_per_token(c, o.kv_dtype);
    printf("kv cache:    %zu bytes per token (%s K+V, --kv-dtype), %.1f MiB at the full context of %d\n",
           per_token, dtype_name(o.kv_dtype), (double)per_token * c->max_seq_len / 1048576.0, c->max_seq_len);
    printf("tokenizer:   %s\n", m.tokenizer_path[0] ? m.tokenizer_path : "(none found next to the model; use -t)");
    model_free(&m);
    return 0;
}
