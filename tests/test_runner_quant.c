/* Accuracy of the quantized containers against the oracle logits of
 * tiny-v3.reference.safetensors, and the cost of running fewer experts per
 * token. The bounds hold the levels measured when the runner was written
 * (docs/ACCURACY.md has the figures and the commands) with a margin, so a
 * regression in a kernel, a layout or the routing shows up here. */
#include <stdio.h>

#include "convert.h"
#include "mp_compare.h"
#include "mp_runner.h"
#include "mp_test.h"

static void measure(const char *path, const char *ref, uint32_t experts, mp_compare_result *r)
{
    mp_error err = {0};
    mp_model_opts mo;
    mp_model_opts_default(&mo);
    mo.cpu_only = true; /* the CPU path: on a GPU machine the default is hybrid */
    mo.experts_per_token = experts;
    mo.threads = 1;
    mp_model *m = NULL;
    REQUIRE(mp_model_load(path, &mo, &m, &err) == MP_OK);
    mp_compare_opts co;
    mp_compare_opts_default(&co);
    co.greedy = false;
    int rc = mp_compare_reference(m, ref, &co, r, &err);
    CHECKF(rc == MP_OK, "%s", err.msg);
    REQUIRE(rc == MP_OK);
    mp_model_free(m);
}

static void convert(const char *src, const char *out, mp_quant cpu, mp_quant gpu)
{
    mp_convert_opts co;
    mp_convert_opts_default(&co);
    co.cpu_quant = cpu;
    co.gpu_quant = gpu;
    mp_convert_summary sum;
    mp_error err = {0};
    int rc = mp_convert(src, out, &co, &sum, &err);
    CHECKF(rc == MP_OK, "%s", err.msg);
    REQUIRE(rc == MP_OK);
}

int main(void)
{
    const char *fix = mp_test_fixtures();
    const char *dir = mp_test_tmpdir("runner_quant");
    const char *src = mp_test_path(fix, "tiny-v3");
    const char *ref = mp_test_path(fix, "tiny-v3.reference.safetensors");
    const char *c_def = mp_test_path(dir, "default.moepack");
    const char *c_i8 = mp_test_path(dir, "int8-bf16.moepack");
    const char *c_exact = mp_test_path(dir, "exact.moepack");
    convert(src, c_def, MP_QUANT_INT8, MP_QUANT_INT4_SYM);
    convert(src, c_i8, MP_QUANT_INT8, MP_QUANT_BF16);
    convert(src, c_exact, MP_QUANT_BF16, MP_QUANT_BF16);

    mp_compare_result r;
    /* int8 experts, bf16 everything else: only the experts are quantized */
    measure(c_i8, ref, 0, &r);
    printf("int8 experts + bf16: top-1 %.4f, mean KL %.3e, max |diff| %.3f\n", r.top1, r.mean_kl, r.max_abs);
    CHECKF(r.top1 >= 0.95, "top-1 %.4f", r.top1);
    CHECKF(r.mean_kl <= 0.01, "mean KL %.3e", r.mean_kl);
    mp_compare_result_free(&r);

    /* the default container: int8 experts, int4 (mse fit) attention, dense and shared weights */
    measure(c_def, ref, 0, &r);
    printf("int8 experts + int4 (default): top-1 %.4f, mean KL %.3e, max |diff| %.3f\n", r.top1, r.mean_kl, r.max_abs);
    CHECKF(r.top1 >= 0.75, "top-1 %.4f", r.top1);
    CHECKF(r.mean_kl <= 0.05, "mean KL %.3e", r.mean_kl);
    mp_compare_result_free(&r);

    /* 3 experts per token instead of the model's 4, in exact mode: the cost is the routing change alone */
    measure(c_exact, ref, 3, &r);
    printf("exact, 3 experts per token: top-1 %.4f, mean KL %.3e, max |diff| %.3f\n", r.top1, r.mean_kl, r.max_abs);
    CHECKF(r.mean_kl > 1e-4, "dropping an expert changed nothing? mean KL %.3e", r.mean_kl);
    CHECKF(r.top1 >= 0.6 && r.mean_kl <= 0.2, "top-1 %.4f, mean KL %.3e", r.top1, r.mean_kl);
    mp_compare_result_free(&r);
    return mp_test_finish();
}
