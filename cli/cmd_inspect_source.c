/* moepack inspect-source: what the converter will see in a checkpoint. */
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "gguf_quants.h"
#include "model_desc_json.h"
#include "source.h"

static const char *dtype_of(const mp_src_tensor *t)
{
    if (t->st)
        return t->st->dtype_name;
    return mp_ggml_type_name(t->gg->type);
}

int mp_cmd_inspect_source(int argc, char **argv)
{
    bool as_json = false;
    const char *config = NULL;
    static const struct option lo[] = {{"json", no_argument, 0, 'j'},
                                       {"config", required_argument, 0, 'c'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
    optind = 1;
    int ch;
    while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        if (ch == 'j')
            as_json = true;
        else if (ch == 'c')
            config = optarg;
        else if (ch == 'h') {
            printf("usage: moepack inspect-source SRC [--json] [--config FILE]\n"
                   "  the model description and tensor table of a checkpoint folder, safetensors or GGUF file,\n"
                   "  as the converter sees them (roles, layers, experts, shapes in PyTorch order, dtypes)\n");
            return MP_OK;
        } else {
            return mp_cli_usage_error("inspect-source", "unknown option");
        }
    }
    if (optind != argc - 1)
        return mp_cli_usage_error("inspect-source", "expected one SRC");
    mp_error err = {0};
    mp_source *s;
    int rc = mp_source_open(argv[optind], config, &s, &err);
    if (rc)
        return mp_cli_report(&err);
    if (as_json) {
        json_t *o = json_object();
        json_object_set_new(o, "source", json_string(s->path));
        json_object_set_new(o, "kind", json_string(mp_source_kind_name(s->kind)));
        json_object_set_new(o, "model", mp_model_desc_to_json(&s->desc));
        json_t *arr = json_array();
        for (size_t i = 0; i < s->n_tensors; i++) {
            const mp_src_tensor *t = &s->tensors[i];
            json_t *x = json_object();
            json_object_set_new(x, "name", json_string(t->name));
            json_object_set_new(x, "role", json_string(mp_role_name(t->id.role)));
            json_object_set_new(x, "layer", json_integer(t->id.layer));
            json_object_set_new(x, "expert", json_integer(t->id.expert));
            json_object_set_new(x, "shape", json_pack("[I,I]", (json_int_t)t->rows, (json_int_t)t->cols));
            json_object_set_new(x, "dtype", json_string(dtype_of(t)));
            json_object_set_new(x, "bytes", json_integer((json_int_t)mp_source_tensor_bytes(s, t)));
            json_array_append_new(arr, x);
        }
        json_object_set_new(o, "tensors", arr);
        rc = mp_cli_print_json(o, JSON_INDENT(2));
    } else {
        printf("%s: %s checkpoint, %zu file(s), %zu tensors\n\n", s->path, mp_source_kind_name(s->kind), s->n_files,
               s->n_tensors);
        mp_model_desc_print(&s->desc, stdout);
        printf("\n%-52s %-14s %5s %6s %-16s %-8s %12s\n", "name", "role", "layer", "expert", "shape [rows, cols]",
               "dtype", "bytes");
        for (size_t i = 0; i < s->n_tensors; i++) {
            const mp_src_tensor *t = &s->tensors[i];
            char sh[48];
            snprintf(sh, sizeof sh, "[%" PRIu64 ", %" PRIu64 "]", t->rows, t->cols);
            printf("%-52s %-14s %5d %6d %-16s %-8s %12" PRIu64 "\n", t->name, mp_role_name(t->id.role), t->id.layer,
                   t->id.expert, sh, dtype_of(t), mp_source_tensor_bytes(s, t));
        }
    }
    mp_source_close(s);
    return rc;
}
