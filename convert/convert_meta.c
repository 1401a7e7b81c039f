/* convert_meta: the conversion summary (per-role quantization error) and the
 * container's metadata JSON (docs/FORMAT.md §5). */
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "attn_params.h"
#include "convert_internal.h"
#include "model_desc_json.h"
#include "mp_file.h"
#include "mp_layout.h"
#include "mp_version.h"

char *mp_convert_build_meta(const ctx *c, const mp_convert_summary *sum, mp_chat_format chat,
                            mp_chat_template_match chat_match, mp_error *err)
{
    mp_attn_params ap;
    if (mp_attn_params_compute(c->d, &ap, err))
        return NULL;
    json_t *m = json_object();
    json_object_set_new(m, "format", json_string("moepack"));
    json_object_set_new(m, "format_version", json_string("1.0"));
    json_t *conv = json_object();
    json_object_set_new(conv, "name", json_string("moepack"));
    json_object_set_new(conv, "version", json_string(MP_VERSION_STRING));
    json_object_set_new(m, "converter", conv);
    json_object_set_new(m, "model", mp_model_desc_to_json(c->d));

    json_t *a = json_object();
    json_object_set_new(a, "softmax_scale", json_real(ap.softmax_scale));
    json_object_set_new(a, "rope_attn_factor", json_real(ap.rope_attn_factor));
    json_t *inv = json_array();
    for (uint32_t i = 0; i < ap.rope_pairs; i++)
        json_array_append_new(inv, json_real(ap.inv_freq[i]));
    json_object_set_new(a, "rope_inv_freq", inv);
    json_object_set_new(m, "attention", a);

    json_t *q = json_object();
    json_object_set_new(q, "cpu_experts", json_string(mp_quant_name(c->o->cpu_quant)));
    json_object_set_new(q, "gpu", json_string(mp_quant_name(c->o->gpu_quant)));
    json_object_set_new(q, "int4_group", json_integer(MP_INT4_GROUP));
    json_object_set_new(q, "int4_fit", json_string(mp_int4_fit_name(c->o->int4_fit)));
    json_object_set_new(q, "expert_slice_width", json_integer(MP_EXPERT_SLICE_WIDTH));
    json_object_set_new(m, "quantization", q);

    json_t *l = json_object();
    json_object_set_new(l, "decoder_layers", json_integer(c->d->num_hidden_layers));
    json_object_set_new(l, "mtp_layers_kept", json_integer(c->n_layers - c->d->num_hidden_layers));
    json_object_set_new(m, "layers", l);
    json_object_set_new(m, "chat_format", json_string(mp_chat_format_name(chat)));
    json_object_set_new(m, "chat_template", json_string(mp_chat_template_match_name(chat_match)));

    json_t *p = json_object();
    json_object_set_new(p, "source_kind", json_string(mp_source_kind_name(c->src->kind)));
    json_t *files = json_array();
    for (size_t i = 0; i < c->src->n_files; i++) {
        json_t *f = json_object();
        char hex[32];
        snprintf(hex, sizeof hex, "%016" PRIx64, c->src->files[i].header_xxh3);
        json_object_set_new(f, "file", json_string(mp_path_basename(c->src->files[i].path)));
        json_object_set_new(f, "size", json_integer((json_int_t)c->src->files[i].size));
        json_object_set_new(f, "header_xxh3", json_string(hex));
        json_array_append_new(files, f);
    }
    json_object_set_new(p, "sources", files);
    char opts[512];
    mp_convert_opts_string(c->o, opts, sizeof opts);
    json_object_set_new(p, "options", json_string(opts));
    json_object_set_new(m, "provenance", p);

    json_t *rep = json_object();
    for (int r = 0; r < MP_ROLE_COUNT; r++) {
        const mp_role_error *re = &sum->roles[r];
        if (!re->tensors)
            continue;
        json_t *o = json_object();
        json_object_set_new(o, "tensors", json_integer((json_int_t)re->tensors));
        json_object_set_new(o, "rms_rel_err", json_real(re->sum_w2 > 0 ? sqrt(re->sum_e2 / re->sum_w2) : 0));
        json_object_set_new(o, "worst_tensor", json_string(re->worst_name));
        json_object_set_new(o, "worst_rms_rel_err", json_real(re->worst));
        json_object_set_new(rep, mp_role_name((mp_role)r), o);
    }
    json_object_set_new(m, "quant_report", rep);
    char *s = json_dumps(m, JSON_INDENT(1));
    json_decref(m);
    if (!s)
        mp_fail(err, MP_ERR_INPUT, NULL, NULL, "out of memory writing metadata");
    return s;
}

void mp_convert_summarize(const ctx *c, mp_convert_summary *sum)
{
    for (size_t i = 0; i < c->n_jobs; i++) {
        const job *j = &c->jobs[i];
        const mp_ctensor *t = &c->plan.tensors[j->tensor];
        mp_role_error *re = &sum->roles[t->role];
        re->sum_w2 += j->sum_w2;
        re->sum_e2 += j->sum_e2;
        re->tensors++;
        double rel = j->sum_w2 > 0 ? sqrt(j->sum_e2 / j->sum_w2) : 0;
        if (rel > re->worst || !re->worst_name[0]) {
            re->worst = rel;
            snprintf(re->worst_name, sizeof re->worst_name, "%s", t->name);
        }
        sum->nonfinite_zeroed += j->nonfinite;
        if (j->zero_rows && !sum->zero_rows)
            snprintf(sum->first_zero_row, sizeof sum->first_zero_row, "%s row %" PRId64, j->src->name,
                     j->first_zero_row);
        sum->zero_rows += j->zero_rows;
    }
    sum->n_tensors = c->plan.n_tensors;
    for (int s = 0; s < MP_SECTION_COUNT; s++)
        sum->section_bytes[s] = c->plan.section_size[s];
}
