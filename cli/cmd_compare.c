/* `moepack compare`: a container's logits against reference outputs. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "mp_compare.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: moepack compare FILE REF.safetensors [options]\n"
            "\n"
            "Runs every prompt of a reference file (prompt{i}.ids int32 [T], prompt{i}.logits f32\n"
            "[T, vocab], prompt{i}.greedy int32 [G], as tiny-v3.reference.safetensors holds) and prints,\n"
            "per prompt and over all: the largest |logit difference|, the mean KL(reference || ours) over\n"
            "positions (nats), top-1 agreement over positions, and how many of the reference's greedy\n"
            "tokens our greedy decoding (no EOS stop) reproduces before the first difference, and\n"
            "(\"forced\") at how many of those positions our argmax is the reference's token when the\n"
            "reference's own tokens are fed back.\n"
            "  --json                   one JSON object instead of the table (docs/ACCURACY.md describes it)\n"
            "  --max-abs X              exit 3 when the largest |logit difference| is above X\n"
            "  --min-top1 Y             exit 3 when top-1 agreement (a fraction in [0, 1]) is below Y\n"
            "  --max-kl Z               exit 3 when the mean KL is above Z\n"
            "  --min-greedy N           exit 3 when a prompt reproduces fewer than N greedy tokens\n"
            "  --no-greedy              skip the greedy decoding (its columns show '-', null in --json)\n"
            "  --prompt I               only prompt I\n"
            "  --experts-per-token K    routed experts per token (default: the model's)\n"
            "  --threads N              compute threads (default: all cores)\n"
            "  --verify                 check every tensor checksum first\n"
            "  --cpu-only               never use a GPU (default: the hybrid path when there is one)\n"
            "  --bf16-activations       bf16 experts on AMX: inputs rounded to bf16 (see moepack run --help)\n");
}

static json_t *prompt_json(const mp_compare_prompt *p, bool with_index)
{
    json_t *o = json_object();
    if (with_index)
        json_object_set_new(o, "index", json_integer(p->index));
    json_object_set_new(o, "tokens", json_integer(p->tokens));
    json_object_set_new(o, "max_abs", json_real(p->max_abs));
    json_object_set_new(o, "mean_kl", json_real(p->mean_kl));
    json_object_set_new(o, "top1_agree", json_integer(p->top1_agree));
    json_object_set_new(o, "top1", json_real(p->tokens ? (double)p->top1_agree / p->tokens : 0.0));
    /* null, not 0/0, when no greedy decoding ran: nothing was measured */
    json_object_set_new(o, "greedy_len", p->greedy_ran ? json_integer(p->greedy_len) : json_null());
    json_object_set_new(o, "greedy_match", p->greedy_ran ? json_integer(p->greedy_match) : json_null());
    json_object_set_new(o, "greedy_forced", p->greedy_ran ? json_integer(p->greedy_forced) : json_null());
    return o;
}

/* A greedy or forced cell of the table, 10 characters: "N/G", or "-" when no greedy decoding ran. */
static const char *greedy_cell(char *buf, size_t size, bool ran, uint32_t n, uint32_t len)
{
    if (ran)
        snprintf(buf, size, "%5u/%-4u", n, len);
    else
        snprintf(buf, size, "%6s%4s", "-", "");
    return buf;
}

static json_t *opt_real(bool set, double v)
{
    return set ? json_real(v) : json_null();
}

int mp_cmd_compare(int argc, char **argv)
{
    const char *file = NULL, *ref = NULL;
    bool json = false, verify = false, cpu_only = false, bf16_act = false;
    bool has_abs = false, has_top1 = false, has_kl = false, has_greedy = false;
    double max_abs = 0, min_top1 = 0, max_kl = 0;
    uint64_t experts = 0, threads = 0, min_greedy = 0, prompt = 0;
    mp_compare_opts co;
    mp_compare_opts_default(&co);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool takes = !strcmp(a, "--max-abs") || !strcmp(a, "--min-top1") || !strcmp(a, "--max-kl") ||
                     !strcmp(a, "--experts-per-token") || !strcmp(a, "--threads") || !strcmp(a, "--min-greedy") ||
                     !strcmp(a, "--prompt");
        if (takes && !v)
            return mp_cli_usage_error("compare", "option '%s' needs a value", a);
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return MP_OK;
        } else if (!strcmp(a, "--json")) {
            json = true;
        } else if (!strcmp(a, "--verify")) {
            verify = true;
        } else if (!strcmp(a, "--cpu-only")) {
            cpu_only = true;
        } else if (!strcmp(a, "--bf16-activations")) {
            bf16_act = true;
        } else if (!strcmp(a, "--no-greedy")) {
            co.greedy = false;
        } else if (!strcmp(a, "--max-abs")) {
            if (!mp_cli_parse_f64("compare", a, v, 0.0, 1e30, &max_abs))
                return MP_ERR_USAGE;
            has_abs = true;
        } else if (!strcmp(a, "--min-top1")) {
            if (!mp_cli_parse_f64("compare", a, v, 0.0, 1.0, &min_top1))
                return MP_ERR_USAGE;
            has_top1 = true;
        } else if (!strcmp(a, "--max-kl")) {
            if (!mp_cli_parse_f64("compare", a, v, 0.0, 1e30, &max_kl))
                return MP_ERR_USAGE;
            has_kl = true;
        } else if (!strcmp(a, "--min-greedy")) {
            if (!mp_cli_parse_u64("compare", a, v, 0, 1u << 20, &min_greedy))
                return MP_ERR_USAGE;
            has_greedy = true;
        } else if (!strcmp(a, "--prompt")) {
            if (!mp_cli_parse_u64("compare", a, v, 0, 1u << 20, &prompt))
                return MP_ERR_USAGE;
            co.only_prompt = (int)prompt;
        } else if (!strcmp(a, "--experts-per-token")) {
            if (!mp_cli_parse_u64("compare", a, v, 1, 4096, &experts))
                return MP_ERR_USAGE;
        } else if (!strcmp(a, "--threads")) {
            if (!mp_cli_parse_u64("compare", a, v, 1, 4096, &threads))
                return MP_ERR_USAGE;
        } else if (a[0] == '-' && a[1]) {
            return mp_cli_usage_error("compare", "unknown option '%s'", a);
        } else if (!file) {
            file = a;
        } else if (!ref) {
            ref = a;
        } else {
            return mp_cli_usage_error("compare", "unexpected argument '%s'", a);
        }
        if (takes)
            i++;
    }
    if (!file || !ref)
        return mp_cli_usage_error("compare", "missing %s", file ? "REF.safetensors" : "FILE");
    if (has_greedy && !co.greedy)
        return mp_cli_usage_error("compare", "--min-greedy needs the greedy decoding (drop --no-greedy)");

    mp_error err = {0};
    mp_model_opts mo;
    mp_model_opts_default(&mo);
    mo.threads = (int)threads;
    mo.experts_per_token = (uint32_t)experts;
    mo.verify = verify;
    mo.cpu_only = cpu_only;
    mo.bf16_activations = bf16_act;
    mp_model *m = NULL;
    int rc = mp_model_load(file, &mo, &m, &err);
    mp_compare_result r = {0};
    if (!rc)
        rc = mp_compare_reference(m, ref, &co, &r, &err);
    if (rc) {
        mp_model_free(m);
        return mp_cli_report(&err);
    }

    /* thresholds: every violated one is reported */
    char why[4][160];
    int nwhy = 0;
    if (has_abs && !(r.max_abs <= max_abs))
        snprintf(why[nwhy++], sizeof why[0], "max |logit difference| %.4g is above --max-abs %g", r.max_abs, max_abs);
    if (has_top1 && !(r.top1 >= min_top1))
        snprintf(why[nwhy++], sizeof why[0], "top-1 agreement %.4f is below --min-top1 %g", r.top1, min_top1);
    if (has_kl && !(r.mean_kl <= max_kl))
        snprintf(why[nwhy++], sizeof why[0], "mean KL %.4g is above --max-kl %g", r.mean_kl, max_kl);
    if (has_greedy)
        for (uint32_t i = 0; i < r.n_prompts; i++) {
            const mp_compare_prompt *p = &r.prompts[i];
            uint64_t want = min_greedy < p->greedy_len ? min_greedy : p->greedy_len;
            if (p->greedy_match < want) {
                snprintf(why[nwhy++], sizeof why[0], "prompt %u reproduces %u greedy tokens, fewer than --min-greedy %llu",
                         p->index, p->greedy_match, (unsigned long long)min_greedy);
                break;
            }
        }

    int out = MP_OK;
    if (json) {
        json_t *o = json_object();
        json_object_set_new(o, "file", json_string(file));
        json_object_set_new(o, "reference", json_string(ref));
        json_object_set_new(o, "backend", json_string(mp_model_backend_name(m)));
        json_object_set_new(o, "experts_per_token", json_integer(mp_model_experts_per_token(m)));
        json_object_set_new(o, "bf16_activations", json_boolean(bf16_act));
        json_t *arr = json_array();
        for (uint32_t i = 0; i < r.n_prompts; i++)
            json_array_append_new(arr, prompt_json(&r.prompts[i], true));
        json_object_set_new(o, "prompts", arr);
        mp_compare_prompt all = {.tokens = r.tokens, .max_abs = r.max_abs, .mean_kl = r.mean_kl,
                                 .top1_agree = r.top1_agree, .greedy_len = r.greedy_len, .greedy_match = r.greedy_match,
                                 .greedy_forced = r.greedy_forced, .greedy_ran = r.greedy_ran};
        json_object_set_new(o, "overall", prompt_json(&all, false));
        json_t *th = json_object();
        json_object_set_new(th, "max_abs", opt_real(has_abs, max_abs));
        json_object_set_new(th, "min_top1", opt_real(has_top1, min_top1));
        json_object_set_new(th, "max_kl", opt_real(has_kl, max_kl));
        json_object_set_new(th, "min_greedy", has_greedy ? json_integer((json_int_t)min_greedy) : json_null());
        json_object_set_new(o, "thresholds", th);
        json_object_set_new(o, "pass", json_boolean(nwhy == 0));
        out = mp_cli_print_json(o, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
    } else {
        printf("%s vs %s (%s, %u experts per token%s)\n", file, ref, mp_model_backend_name(m),
               mp_model_experts_per_token(m), bf16_act ? ", --bf16-activations" : "");
        printf("%-7s %7s %12s %12s %18s %10s %10s\n", "prompt", "tokens", "max|diff|", "mean KL", "top-1", "greedy",
               "forced");
        char greedy[32], forced[32];
        for (uint32_t i = 0; i < r.n_prompts; i++) {
            const mp_compare_prompt *p = &r.prompts[i];
            printf("%-7u %7u %12.3e %12.3e %10u %6.2f%% %s %s\n", p->index, p->tokens, p->max_abs, p->mean_kl,
                   p->top1_agree, 100.0 * p->top1_agree / p->tokens,
                   greedy_cell(greedy, sizeof greedy, p->greedy_ran, p->greedy_match, p->greedy_len),
                   greedy_cell(forced, sizeof forced, p->greedy_ran, p->greedy_forced, p->greedy_len));
        }
        printf("%-7s %7u %12.3e %12.3e %10u %6.2f%% %s %s\n", "all", r.tokens, r.max_abs, r.mean_kl, r.top1_agree,
               100.0 * r.top1, greedy_cell(greedy, sizeof greedy, r.greedy_ran, r.greedy_match, r.greedy_len),
               greedy_cell(forced, sizeof forced, r.greedy_ran, r.greedy_forced, r.greedy_len));
    }
    if (fflush(stdout) != 0) {
        mp_fail_errno(&err, "stdout", errno, "cannot write");
        out = mp_cli_report(&err);
    }
    for (int i = 0; i < nwhy; i++)
        fprintf(stderr, "moepack: compare: %s\n", why[i]);
    if (nwhy && out == MP_OK)
        out = MP_ERR_CHECK;
    mp_compare_result_free(&r);
    mp_model_free(m);
    return out;
}
