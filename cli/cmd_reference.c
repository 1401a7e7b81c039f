/* moepack reference: write a model's own outputs as a reference file for
 * `moepack compare` (the format of the fixtures' oracle outputs). */
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "mp_compare.h"
#include "mp_file.h"
#include "mp_runner.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: moepack reference FILE -o OUT.safetensors [options]\n"
            "Runs prompts through the container FILE and writes, for each prompt i, prompt{i}.ids,\n"
            "prompt{i}.logits (every position) and prompt{i}.greedy: a reference that `moepack compare`\n"
            "reads, to measure another container or setting of the same model against this one.\n"
            "  -o OUT                   output file (written under a temporary name, then renamed)\n"
            "  --prompts N              random prompts (default 4)\n"
            "  --len T                  tokens per random prompt (default 64; BOS first when the model adds one)\n"
            "  --greedy G               greedy tokens after each prompt (default 16; 0: none)\n"
            "  --seed S                 seed of the random prompts (default 1)\n"
            "  --experts-per-token K    routed experts per token (default: the model's)\n"
            "  --threads N              compute threads (default: all cores)\n"
            "  --cpu-only               never use a GPU (default: the hybrid path when there is one)\n");
}

/* The command line, as JSON, for the file's metadata. */
static char *command_json(int argc, char **argv)
{
    json_t *o = json_object(), *a = json_array();
    json_array_append_new(a, json_string("moepack"));
    for (int i = 0; i < argc; i++)
        json_array_append_new(a, json_string(argv[i]));
    json_object_set_new(o, "command", a);
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

/* A reference cannot be resumed, so an interrupted one removes its partial
 * file (maybe 100 MB) instead of leaving it behind. The path is set once,
 * before the work, for the handler: unlink and raise are async-signal-safe. */
static char partial_path[4096];

static void remove_partial_and_stop(int sig)
{
    unlink(partial_path);
    signal(sig, SIG_DFL);
    raise(sig);
}

static void remove_partial_on_interrupt(const char *out)
{
    if ((size_t)snprintf(partial_path, sizeof partial_path, "%s.partial", out) >= sizeof partial_path)
        return; /* too long to keep: the partial file stays, as after a kill */
    signal(SIGINT, remove_partial_and_stop);
    signal(SIGTERM, remove_partial_and_stop);
    signal(SIGHUP, remove_partial_and_stop);
}

int mp_cmd_reference(int argc, char **argv)
{
    const char *file = NULL, *out = NULL;
    bool cpu_only = false;
    uint64_t experts = 0, threads = 0, v64;
    mp_reference_opts ro;
    mp_reference_opts_default(&ro);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool takes = !strcmp(a, "-o") || !strcmp(a, "--prompts") || !strcmp(a, "--len") || !strcmp(a, "--greedy") ||
                     !strcmp(a, "--seed") || !strcmp(a, "--experts-per-token") || !strcmp(a, "--threads");
        if (takes && !v)
            return mp_cli_usage_error("reference", "option '%s' needs a value", a);
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--cpu-only")) {
            cpu_only = true;
        } else if (!strcmp(a, "-o")) {
            out = v;
        } else if (!strcmp(a, "--prompts")) {
            if (!mp_cli_parse_u64("reference", a, v, 1, 1024, &v64))
                return MP_ERR_USAGE;
            ro.n_prompts = (uint32_t)v64;
        } else if (!strcmp(a, "--len")) {
            if (!mp_cli_parse_u64("reference", a, v, 1, 1u << 20, &v64))
                return MP_ERR_USAGE;
            ro.len = (uint32_t)v64;
        } else if (!strcmp(a, "--greedy")) {
            if (!mp_cli_parse_u64("reference", a, v, 0, 1u << 16, &v64))
                return MP_ERR_USAGE;
            ro.greedy = (uint32_t)v64;
        } else if (!strcmp(a, "--seed")) {
            if (!mp_cli_parse_u64("reference", a, v, 0, UINT64_MAX, &ro.seed))
                return MP_ERR_USAGE;
        } else if (!strcmp(a, "--experts-per-token")) {
            if (!mp_cli_parse_u64("reference", a, v, 1, 4096, &experts))
                return MP_ERR_USAGE;
        } else if (!strcmp(a, "--threads")) {
            if (!mp_cli_parse_u64("reference", a, v, 1, 4096, &threads))
                return MP_ERR_USAGE;
        } else if (a[0] == '-' && a[1]) {
            return mp_cli_usage_error("reference", "unknown option '%s'", a);
        } else if (!file) {
            file = a;
        } else {
            return mp_cli_usage_error("reference", "unexpected argument '%s'", a);
        }
        if (takes)
            i++;
    }
    if (!file || !out)
        return mp_cli_usage_error("reference", "missing %s", file ? "-o OUT.safetensors" : "FILE");

    mp_error err = {0};
    if (mp_check_output_file(out, &file, 1, &err))
        return mp_cli_report(&err);
    remove_partial_on_interrupt(out);
    mp_model_opts mo;
    mp_model_opts_default(&mo);
    mo.threads = (int)threads;
    mo.experts_per_token = (uint32_t)experts;
    mo.cpu_only = cpu_only;
    mp_model *m = NULL;
    int rc = mp_model_load(file, &mo, &m, &err);
    char *meta = command_json(argc, argv);
    ro.metadata_json = meta;
    if (!rc)
        rc = mp_reference_write(m, &ro, out, &err);
    if (!rc)
        printf("%s: %u prompt%s of %u token%s, %u greedy token%s each (%s, %u experts per token)\n", out,
               ro.n_prompts, ro.n_prompts == 1 ? "" : "s", ro.len, ro.len == 1 ? "" : "s", ro.greedy,
               ro.greedy == 1 ? "" : "s", mp_model_backend_name(m), mp_model_experts_per_token(m));
    free(meta);
    mp_model_free(m);
    return rc ? mp_cli_report(&err) : 0;
}
