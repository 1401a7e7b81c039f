/* moepack inspect / verify: what is in a container, and is it intact. */
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "container.h"

/* Bytes the logical elements occupy in the stored precision, without padding
 * and without scales: the rest of data_size is padding. */
static uint64_t logical_bytes(const mp_ctensor *t)
{
    uint64_t n = 1;
    for (uint32_t i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    switch (t->quant) {
    case MP_QUANT_F32: return n * 4;
    case MP_QUANT_BF16:
    case MP_QUANT_F16: return n * 2;
    case MP_QUANT_INT8: return n;
    default: return (n + 1) / 2;
    }
}

static void shape_str(const uint64_t *s, uint32_t ndim, char *buf, size_t n)
{
    size_t used = (size_t)snprintf(buf, n, "[");
    for (uint32_t i = 0; i < ndim && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, "%s%" PRIu64, i ? ", " : "", s[i]);
    if (used < n)
        snprintf(buf + used, n - used, "]");
}

static json_t *tensor_json(const mp_ctensor *t)
{
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(t->name));
    json_object_set_new(o, "role", json_string(mp_role_name(t->role)));
    json_object_set_new(o, "layer", json_integer(t->layer));
    json_object_set_new(o, "expert", json_integer(t->expert));
    json_t *sh = json_array(), *pd = json_array();
    for (uint32_t i = 0; i < t->ndim; i++) {
        json_array_append_new(sh, json_integer((json_int_t)t->shape[i]));
        json_array_append_new(pd, json_integer((json_int_t)t->padded[i]));
    }
    json_object_set_new(o, "shape", sh);
    json_object_set_new(o, "padded_shape", pd);
    json_object_set_new(o, "quant", json_string(mp_quant_name(t->quant)));
    json_object_set_new(o, "layout", json_string(mp_layout_name(t->layout)));
    json_object_set_new(o, "group_width", json_integer(t->group_width));
    json_object_set_new(o, "placement", json_string(mp_section_name(t->section)));
    json_object_set_new(o, "offset", json_integer((json_int_t)t->data_offset));
    json_object_set_new(o, "data_bytes", json_integer((json_int_t)t->data_size));
    json_object_set_new(o, "scale_offset", json_integer((json_int_t)t->scale_offset));
    json_object_set_new(o, "scale_bytes", json_integer((json_int_t)t->scale_size));
    json_object_set_new(o, "padding_bytes", json_integer((json_int_t)(t->data_size - logical_bytes(t))));
    char sum[24];
    snprintf(sum, sizeof sum, "%016" PRIx64, t->checksum);
    json_object_set_new(o, "xxh3", json_string(sum));
    return o;
}

/* The model description indented under its heading, like the other blocks. */
static void print_indented_model(const mp_model_desc *d)
{
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    if (!mem) {
        mp_model_desc_print(d, stdout);
        return;
    }
    mp_model_desc_print(d, mem);
    fclose(mem);
    for (const char *line = text; line && *line;) {
        size_t n = strcspn(line, "\n");
        printf("  %.*s\n", (int)n, line);
        line += n + (line[n] == '\n');
    }
    free(text);
}

typedef struct role_total {
    uint64_t tensors, data, scale, padding;
    mp_quant quant;
    mp_layout layout;
    mp_section section;
    bool mixed;
} role_total;

static int inspect(const char *path, bool as_json, bool tensors, int64_t layer)
{
    mp_error err = {0};
    mp_container *c;
    int rc = mp_container_open(path, &c, &err);
    if (rc)
        return mp_cli_report(&err);
    role_total roles[MP_ROLE_COUNT];
    memset(roles, 0, sizeof roles);
    uint64_t padding = 0, scales = 0;
    int32_t last_layer = -1;
    for (uint64_t i = 0; i < c->hdr.n_tensors; i++) {
        const mp_ctensor *t = &c->tensors[i];
        if (t->layer > last_layer)
            last_layer = t->layer;
        role_total *r = &roles[t->role];
        if (r->tensors && (r->quant != t->quant || r->layout != t->layout || r->section != t->section))
            r->mixed = true;
        r->quant = t->quant;
        r->layout = t->layout;
        r->section = t->section;
        r->tensors++;
        r->data += t->data_size;
        r->scale += t->scale_size;
        uint64_t pad = t->data_size - logical_bytes(t);
        r->padding += pad;
        padding += pad;
        scales += t->scale_size;
    }
    if (layer > last_layer) {
        mp_container_close(c);
        return mp_cli_usage_error("inspect", "--layer %lld: %s has layers 0..%d (-1: the global tensors)",
                                  (long long)layer, path, last_layer);
    }
    const json_t *meta = c->meta;
    bool show_tensors = tensors || layer >= -1;
    if (as_json) {
        json_t *o = json_object();
        json_object_set_new(o, "file", json_string(path));
        char ver[32];
        snprintf(ver, sizeof ver, "%u.%u", c->hdr.version_major, c->hdr.version_minor);
        json_object_set_new(o, "format_version", json_string(ver));
        json_object_set_new(o, "file_bytes", json_integer((json_int_t)c->hdr.file_size));
        json_object_set_new(o, "tensor_count", json_integer((json_int_t)c->hdr.n_tensors));
        json_object_set(o, "model", json_object_get(meta, "model"));
        json_object_set(o, "attention", json_object_get(meta, "attention"));
        json_object_set(o, "quantization", json_object_get(meta, "quantization"));
        json_object_set(o, "chat_format", json_object_get(meta, "chat_format"));
        if (json_object_get(meta, "chat_template")) /* containers before it was recorded lack it */
            json_object_set(o, "chat_template", json_object_get(meta, "chat_template"));
        json_object_set(o, "layers", json_object_get(meta, "layers"));
        json_object_set(o, "provenance", json_object_get(meta, "provenance"));
        json_object_set(o, "quant_report", json_object_get(meta, "quant_report"));
        json_t *secs = json_object();
        for (int s = 0; s < MP_SECTION_COUNT; s++) {
            json_t *so = json_object();
            json_object_set_new(so, "offset", json_integer((json_int_t)c->hdr.section_offset[s]));
            json_object_set_new(so, "bytes", json_integer((json_int_t)c->hdr.section_size[s]));
            json_object_set_new(secs, mp_section_name((mp_section)s), so);
        }
        json_object_set_new(o, "sections", secs);
        json_t *ro = json_object();
        for (int r = 0; r < MP_ROLE_COUNT; r++) {
            if (!roles[r].tensors)
                continue;
            json_t *x = json_object();
            json_object_set_new(x, "tensors", json_integer((json_int_t)roles[r].tensors));
            json_object_set_new(x, "data_bytes", json_integer((json_int_t)roles[r].data));
            json_object_set_new(x, "scale_bytes", json_integer((json_int_t)roles[r].scale));
            json_object_set_new(x, "padding_bytes", json_integer((json_int_t)roles[r].padding));
            json_object_set_new(x, "quant", json_string(roles[r].mixed ? "mixed" : mp_quant_name(roles[r].quant)));
            json_object_set_new(x, "layout", json_string(roles[r].mixed ? "mixed" : mp_layout_name(roles[r].layout)));
            json_object_set_new(x, "placement", json_string(roles[r].mixed ? "mixed" : mp_section_name(roles[r].section)));
            json_object_set_new(ro, mp_role_name((mp_role)r), x);
        }
        json_object_set_new(o, "roles", ro);
        json_object_set_new(o, "padding_bytes", json_integer((json_int_t)padding));
        json_object_set_new(o, "scale_bytes", json_integer((json_int_t)scales));
        if (show_tensors) {
            json_t *arr = json_array();
            for (uint64_t i = 0; i < c->hdr.n_tensors; i++)
                if (layer < -1 || c->tensors[i].layer == layer)
                    json_array_append_new(arr, tensor_json(&c->tensors[i]));
            json_object_set_new(o, "tensors", arr);
        }
        rc = mp_cli_print_json(o, JSON_INDENT(2));
        mp_container_close(c);
        return rc;
    }

    printf("%s: moepack container %u.%u, %.1f MB, %" PRIu64 " tensors\n", path, c->hdr.version_major,
           c->hdr.version_minor, c->hdr.file_size / 1e6, c->hdr.n_tensors);
    printf("\nmodel:\n");
    print_indented_model(&c->desc);
    const json_t *q = json_object_get(meta, "quantization"), *a = json_object_get(meta, "attention");
    const char *tmpl = json_string_value(json_object_get(meta, "chat_template"));
    printf("\nstored as: cpu experts %s, gpu %s (int4 fit %s), expert slice width %lld; chat format %s%s%s%s\n",
           json_string_value(json_object_get(q, "cpu_experts")), json_string_value(json_object_get(q, "gpu")),
           json_string_value(json_object_get(q, "int4_fit")),
           (long long)json_integer_value(json_object_get(q, "expert_slice_width")),
           json_string_value(json_object_get(meta, "chat_format")), tmpl ? " (checkpoint's template: " : "",
           tmpl ? tmpl : "", tmpl ? ")" : "");
    const json_t *ly = json_object_get(meta, "layers");
    printf("layers: %lld decoder, %lld MTP kept\n", (long long)json_integer_value(json_object_get(ly, "decoder_layers")),
           (long long)json_integer_value(json_object_get(ly, "mtp_layers_kept")));
    printf("attention: softmax scale %.6g (yarn mscale folded in), rope attention factor %.6g\n",
           json_real_value(json_object_get(a, "softmax_scale")), json_real_value(json_object_get(a, "rope_attn_factor")));
    const json_t *prov = json_object_get(meta, "provenance");
    printf("source: %s, %zu file(s); options: %s\n", json_string_value(json_object_get(prov, "source_kind")),
           json_array_size(json_object_get(prov, "sources")), json_string_value(json_object_get(prov, "options")));
    printf("\nsections:\n");
    for (int s = 0; s < MP_SECTION_COUNT; s++)
        printf("  %-5s offset %12" PRIu64 "  %10.2f MB\n", mp_section_name((mp_section)s), c->hdr.section_offset[s],
               c->hdr.section_size[s] / 1e6);
    printf("  padding %.2f MB, scales %.2f MB\n", padding / 1e6, scales / 1e6);
    printf("\nroles:\n  %-16s %7s %12s %10s %10s  %-9s %-9s %s\n", "role", "tensors", "data MB", "scales MB",
           "pad MB", "quant", "layout", "placement");
    for (int r = 0; r < MP_ROLE_COUNT; r++) {
        const role_total *x = &roles[r];
        if (!x->tensors)
            continue;
        printf("  %-16s %7" PRIu64 " %12.3f %10.3f %10.3f  %-9s %-9s %s\n", mp_role_name((mp_role)r), x->tensors,
               x->data / 1e6, x->scale / 1e6, x->padding / 1e6, x->mixed ? "mixed" : mp_quant_name(x->quant),
               x->mixed ? "mixed" : mp_layout_name(x->layout), x->mixed ? "mixed" : mp_section_name(x->section));
    }
    const json_t *rep = json_object_get(meta, "quant_report");
    if (json_object_size(rep)) {
        printf("\nquantization error (RMS relative, from conversion):\n");
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)rep, k, v)
        {
            double e = json_real_value(json_object_get(v, "rms_rel_err"));
            if (e > 0)
                printf("  %-16s %.3e  worst %s (%.3e)\n", k, e, json_string_value(json_object_get(v, "worst_tensor")),
                       json_real_value(json_object_get(v, "worst_rms_rel_err")));
        }
    }
    if (show_tensors) {
        printf("\n%-34s %-14s %5s %6s %-18s %-18s %-9s %-9s %-5s %14s %10s %10s %s\n", "name", "role", "layer", "expert",
               "shape", "padded", "quant", "layout", "place", "offset", "bytes", "scales", "xxh3");
        for (uint64_t i = 0; i < c->hdr.n_tensors; i++) {
            const mp_ctensor *t = &c->tensors[i];
            if (layer >= -1 && t->layer != layer)
                continue;
            char sh[64], pd[64];
            shape_str(t->shape, t->ndim, sh, sizeof sh);
            shape_str(t->padded, t->ndim, pd, sizeof pd);
            printf("%-34s %-14s %5d %6d %-18s %-18s %-9s %-9s %-5s %14" PRIu64 " %10" PRIu64 " %10" PRIu64 " %016" PRIx64 "\n",
                   t->name, mp_role_name(t->role), t->layer, t->expert, sh, pd, mp_quant_name(t->quant),
                   mp_layout_name(t->layout), mp_section_name(t->section), t->data_offset, t->data_size, t->scale_size,
                   t->checksum);
        }
    }
    mp_container_close(c);
    return MP_OK;
}

int mp_cmd_inspect(int argc, char **argv)
{
    bool as_json = false, tensors = false;
    int64_t layer = -2; /* -2: all layers, no table unless --tensors */
    static const struct option lo[] = {{"json", no_argument, 0, 'j'},
                                       {"tensors", no_argument, 0, 't'},
                                       {"layer", required_argument, 0, 'l'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
    optind = 1;
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, ":h", lo, NULL)) != -1) {
        if (ch == 'j')
            as_json = true;
        else if (ch == 't')
            tensors = true;
        else if (ch == 'l') {
            if (!mp_cli_parse_i64("inspect", "--layer", optarg, -1, 1000000, &layer))
                return MP_ERR_USAGE;
        } else if (ch == 'h') {
            printf("usage: moepack inspect FILE.moepack [--json] [--tensors] [--layer L]\n"
                   "  model summary, sections, per-role sizes, quantization and layouts, padding, placement;\n"
                   "  --tensors: the whole tensor table; --layer L: the tensors of layer L (-1: global tensors);\n"
                   "  --json: the same as JSON (schema in docs/FORMAT.md)\n");
            return MP_OK;
        } else {
            return mp_cli_getopt_error("inspect", ch, argv);
        }
    }
    if (optind != argc - 1)
        return mp_cli_usage_error("inspect", "expected one FILE");
    return inspect(argv[optind], as_json, tensors, layer);
}

int mp_cmd_verify(int argc, char **argv)
{
    uint64_t threads = 0;
    static const struct option lo[] = {{"threads", required_argument, 0, 't'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    optind = 1;
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, ":h", lo, NULL)) != -1) {
        if (ch == 't') {
            if (!mp_cli_parse_u64("verify", "--threads", optarg, 1, 4096, &threads))
                return MP_ERR_USAGE;
        } else if (ch == 'h') {
            printf("usage: moepack verify FILE.moepack [--threads N]\n"
                   "  checks every tensor's XXH3 checksum; exit 3 and the first bad tensor's name on a mismatch\n"
                   "  (also exit 3 when the header, directory, metadata or tokenizer checksum does not match)\n");
            return MP_OK;
        } else {
            return mp_cli_getopt_error("verify", ch, argv);
        }
    }
    if (optind != argc - 1)
        return mp_cli_usage_error("verify", "expected one FILE");
    mp_error err = {0};
    mp_container *c;
    int rc = mp_container_open(argv[optind], &c, &err);
    if (rc)
        return mp_cli_report(&err);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rc = mp_container_verify(c, (int)threads, &err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    if (!rc)
        printf("%s: OK, %" PRIu64 " tensors, %.1f MB checked in %.2f s\n", argv[optind], c->hdr.n_tensors,
               c->hdr.file_size / 1e6, s);
    mp_container_close(c);
    return rc ? mp_cli_report(&err) : MP_OK;
}
