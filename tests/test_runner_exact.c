/* The forward pass in exact mode against the oracle: tiny-v3 converted with
 * --cpu-quant bf16 --gpu-quant bf16 computes in f32 everywhere, so on every
 * instruction set this machine has, all six reference prompts must give the
 * reference's first greedy token (all 32 for prompts 2 and 4, see below),
 * all 32 greedy tokens transformers' own generate() produces for each of the
 * six prompts (tests/data/hf_generate_greedy.json), logits within 5e-3, and
 * prompt 0's hidden
 * states (embedding, each decoder layer, the last after the final norm)
 * within 1e-3 of each row's largest value. The expected values all come
 * from the fixture (transformers' DeepseekV3ForCausalLM). */
#include <jansson.h>
#include <math.h>
#include <string.h>

#include "convert.h"
#include "mp_compare.h"
#include "mp_kernels.h"
#include "mp_runner.h"
#include "mp_test.h"
#include "safetensors.h"

static void check_hidden(mp_model *m, const char *ref_path, const char *isa)
{
    mp_error err = {0};
    mp_safetensors *st = NULL;
    REQUIRE(mp_st_open(ref_path, &st, &err) == MP_OK);
    const mp_st_tensor *ids_t = mp_st_find(st, "prompt0.ids");
    REQUIRE(ids_t && ids_t->dtype == MP_ST_I32);
    size_t T = ids_t->shape[0];
    int32_t *ids = malloc(T * sizeof *ids);
    memcpy(ids, ids_t->data, T * sizeof *ids);
    mp_session *s = NULL;
    REQUIRE(mp_session_new(m, 64, &s, &err) == MP_OK);
    REQUIRE(mp_session_capture_hidden(s, true, &err) == MP_OK);
    REQUIRE(mp_session_eval(s, ids, T, NULL, NULL, &err) == MP_OK);
    uint32_t H = mp_model_desc_of(m)->hidden_size, layers = mp_model_desc_of(m)->num_hidden_layers;
    float *ref = malloc(T * H * sizeof *ref);
    for (uint32_t l = 0; l <= layers; l++) {
        char name[64];
        snprintf(name, sizeof name, "prompt0.hidden.%u", l);
        const mp_st_tensor *t = mp_st_find(st, name);
        CHECKF(t && t->dtype == MP_ST_F32 && t->shape[0] == T && t->shape[1] == H, "%s", name);
        if (!t)
            continue;
        memcpy(ref, t->data, T * H * sizeof *ref);
        size_t rows = 0;
        const float *ours = mp_session_hidden(s, l, &rows);
        REQUIRE(ours && rows == T);
        double worst = 0.0;
        for (size_t r = 0; r < T; r++) {
            double mx = 0.0, d = 0.0;
            for (uint32_t j = 0; j < H; j++) {
                mx = fmax(mx, fabs(ref[r * H + j]));
                d = fmax(d, fabs((double)ours[r * H + j] - ref[r * H + j]));
            }
            worst = fmax(worst, d / mx);
        }
        printf("  %s hidden.%u: max |diff| / row max %.2e\n", isa, l, worst);
        CHECKF(worst <= 1e-3, "%s: hidden.%u differs by %.3e of the row maximum", isa, l, worst);
    }
    free(ref);
    free(ids);
    mp_session_free(s);
    mp_st_close(st);
}

typedef struct collect {
    int32_t ids[32];
    uint32_t n;
} collect;

static bool collect_token(int32_t id, void *user)
{
    collect *c = user;
    if (c->n < 32)
        c->ids[c->n++] = id;
    return c->n < 32;
}

/* The fixture's greedy continuations of prompts 0, 1, 3 and 5 are not what
 * transformers 5.17 itself generates from the same checkpoint (run on the
 * device machine: tests/data/hf_generate_greedy.py, docs/ACCURACY.md); what
 * it does generate, fp32 on the CPU, is recorded in hf_generate_greedy.json,
 * and all 32 tokens of every prompt must match it. */
static void check_hf_generate(mp_model *m, const char *ref_path, const char *isa, int only)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/data/hf_generate_greedy.json", getenv("MOEPACK_SOURCE_DIR"));
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    REQUIRE(j);
    json_t *greedy = json_object_get(j, "greedy");
    mp_error err = {0};
    mp_safetensors *st = NULL;
    REQUIRE(mp_st_open(ref_path, &st, &err) == MP_OK);
    mp_sampler_opts so;
    mp_sampler_opts_default(&so);
    so.temperature = 0;
    mp_sampler *smp = NULL;
    REQUIRE(mp_sampler_new(&so, mp_model_vocab(m), &smp, &err) == MP_OK);
    for (int i = 0; i < 6; i++) {
        if (only >= 0 && i != only)
            continue;
        char name[64];
        snprintf(name, sizeof name, "prompt%d.ids", i);
        const mp_st_tensor *t = mp_st_find(st, name);
        REQUIRE(t && t->dtype == MP_ST_I32);
        int32_t *ids = malloc(t->nbytes);
        memcpy(ids, t->data, t->nbytes);
        mp_session *s = NULL;
        REQUIRE(mp_session_new(m, (uint32_t)t->shape[0] + 40, &s, &err) == MP_OK);
        collect c = {.n = 0};
        mp_gen_stats gs;
        REQUIRE(mp_generate(s, smp, ids, t->shape[0], 32, false, collect_token, &c, &gs, &err) == MP_OK);
        snprintf(name, sizeof name, "prompt%d", i);
        json_t *want = json_object_get(greedy, name);
        uint32_t same = 0;
        while (same < c.n && same < json_array_size(want) && c.ids[same] == json_integer_value(json_array_get(want, same)))
            same++;
        printf("  %s prompt %d: %u/32 greedy tokens as transformers' generate()\n", isa, i, same);
        CHECKF(c.n == 32 && same == 32, "%s prompt %d: %u of 32 greedy tokens match transformers' generate()", isa, i,
               same);
        mp_session_free(s);
        free(ids);
    }
    mp_sampler_free(smp);
    mp_st_close(st);
    json_decref(j);
}

/* --bf16-activations on the best table, against exact mode on the same
 * table: where the AMX BF16 kernel runs, the experts' rows are rounded to
 * bf16, so the logits move (by more than exact mode's 1e-4) but stay close
 * to the oracle (mean KL a quarter of the int8 experts' 7.9e-4, top-1 at
 * least 99%, prompts 2 and 4 greedy whole); elsewhere nothing changes, bit
 * for bit. */
static void check_bf16_activations(const char *out, const char *ref)
{
    mp_error err = {0};
    const mp_cpu_kernels *best = mp_cpu_kernels_best(&err);
    REQUIRE(best);
    mp_compare_result r[2];
    for (int on = 0; on < 2; on++) {
        mp_model_opts mo;
        mp_model_opts_default(&mo);
        mo.cpu_only = true;
        mo.threads = 1;
        mo.bf16_activations = on;
        mp_model *m = NULL;
        REQUIRE(mp_model_load(out, &mo, &m, &err) == MP_OK);
        mp_compare_opts cmp;
        mp_compare_opts_default(&cmp);
        REQUIRE(mp_compare_reference(m, ref, &cmp, &r[on], &err) == MP_OK);
        mp_model_free(m);
    }
    printf("  %s, --bf16-activations: max |diff| %.2e (exact %.2e), KL %.2e, top-1 %u/%u, greedy %u/%u\n",
           mp_isa_name(best->isa), r[1].max_abs, r[0].max_abs, r[1].mean_kl, r[1].top1_agree, r[1].tokens,
           r[1].greedy_match, r[1].greedy_len);
    if (best->gemm_bf16_split) {
        CHECKF(r[1].max_abs > 1e-4, "--bf16-activations changed nothing (max |diff| %.3e)", r[1].max_abs);
        CHECKF(r[1].mean_kl <= 2e-4, "--bf16-activations: mean KL %.3e", r[1].mean_kl);
        CHECKF(r[1].top1_agree >= 0.99 * r[1].tokens, "--bf16-activations: top-1 %u/%u", r[1].top1_agree,
               r[1].tokens);
        for (uint32_t i = 0; i < r[1].n_prompts; i++) {
            const mp_compare_prompt *p = &r[1].prompts[i];
            if (p->index == 2 || p->index == 4)
                CHECKF(p->greedy_match == 32, "--bf16-activations prompt %u: greedy %u/32", p->index,
                       p->greedy_match);
        }
    } else {
        CHECKF(r[1].max_abs == r[0].max_abs && r[1].mean_kl == r[0].mean_kl && r[1].greedy_match == r[0].greedy_match,
               "--bf16-activations without the AMX BF16 kernel changed the logits");
    }
    mp_compare_result_free(&r[0]);
    mp_compare_result_free(&r[1]);
}

int main(void)
{
    const char *fix = mp_test_fixtures();
    const char *dir = mp_test_tmpdir("runner_exact");
    const char *src = mp_test_path(fix, "tiny-v3");
    const char *ref = mp_test_path(fix, "tiny-v3.reference.safetensors");
    const char *out = mp_test_path(dir, "exact.moepack");
    mp_convert_opts co;
    mp_convert_opts_default(&co);
    co.cpu_quant = MP_QUANT_BF16;
    co.gpu_quant = MP_QUANT_BF16;
    mp_convert_summary sum;
    mp_error err = {0};
    REQUIRE(mp_convert(src, out, &co, &sum, &err) == MP_OK);

    for (int isa = 0; isa < MP_ISA_COUNT; isa++) {
        const char *name = mp_isa_name((mp_isa)isa);
        if (!mp_isa_available((mp_isa)isa)) {
            printf("  %s: not available on this machine, skipped\n", name);
            continue;
        }
        mp_model_opts mo;
        mp_model_opts_default(&mo);
        mo.cpu_only = true; /* the CPU path: on a GPU machine the default is hybrid */
        mo.isa = isa;
        mo.threads = 1; /* two-core CI machines: one thread is fastest and exercises the same code */
        mp_model *m = NULL;
        REQUIRE(mp_model_load(out, &mo, &m, &err) == MP_OK);
        /* the scalar kernels are slow (they are the vector paths' reference):
         * two prompts there, all six on the others */
        int only[2] = {-1, -1};
        if (isa == MP_ISA_SCALAR) {
            only[0] = 0;
            only[1] = 2;
        }
        for (int pass = 0; pass < (isa == MP_ISA_SCALAR ? 2 : 1); pass++) {
            mp_compare_result r;
            mp_compare_opts cmp;
            mp_compare_opts_default(&cmp);
            cmp.only_prompt = only[pass];
            int rc = mp_compare_reference(m, ref, &cmp, &r, &err);
            CHECKF(rc == MP_OK, "%s: %s", name, err.msg);
            if (rc != MP_OK)
                continue;
            CHECK(r.n_prompts == (only[pass] < 0 ? 6u : 1u));
            for (uint32_t i = 0; i < r.n_prompts; i++) {
                const mp_compare_prompt *p = &r.prompts[i];
                printf("  %s prompt %u: %u tokens, max |diff| %.2e, KL %.2e, top-1 %u/%u, greedy %u/%u\n", name,
                       p->index, p->tokens, p->max_abs, p->mean_kl, p->top1_agree, p->tokens, p->greedy_match,
                       p->greedy_len);
                /* The reference's greedy continuations of prompts 0, 1, 3 and 5
                 * leave its own forward pass after a few tokens (docs/ACCURACY.md:
                 * teacher-forced, its choices are not the argmax of the logits a
                 * full forward gives, which ours match to 1e-5); the first token
                 * follows from the reference logits, and prompts 2 and 4 are
                 * reproduced whole. */
                bool whole = p->index == 2 || p->index == 4;
                CHECKF(p->greedy_len == 32 && p->greedy_match >= (whole ? 32u : 1u), "%s prompt %u: greedy %u/%u",
                       name, p->index, p->greedy_match, p->greedy_len);
                CHECKF(p->max_abs <= 5e-3, "%s prompt %u: max |logit diff| %.3e", name, p->index, p->max_abs);
                CHECKF(p->top1_agree == p->tokens, "%s prompt %u: top-1 %u/%u", name, p->index, p->top1_agree,
                       p->tokens);
            }
            mp_compare_result_free(&r);
        }
        check_hf_generate(m, ref, name, isa == MP_ISA_SCALAR ? 0 : -1);
        check_hidden(m, ref, name);
        mp_model_free(m);
    }
    check_bf16_activations(out, ref);
    return mp_test_finish();
}
