/* convert/source: the same model read from its official safetensors and from
 * the llama.cpp converter's BF16 GGUF gives the same tensors, value for value,
 * once GGUF's layout (reversed dims, 3-D experts) is undone; and the same
 * model description. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mp_test.h"
#include "source.h"

int main(void)
{
    const char *fix = mp_test_fixtures();
    mp_error e = {0};
    mp_source *hf = NULL, *gg = NULL, *gg_cfg = NULL;
    REQUIRE(mp_source_open(mp_test_path(fix, "tiny-v3"), NULL, &hf, &e) == MP_OK);
    REQUIRE(mp_source_open(mp_test_path(fix, "tiny-v3-bf16.gguf"), NULL, &gg, &e) == MP_OK);
    CHECK(hf->kind == MP_SOURCE_SAFETENSORS && gg->kind == MP_SOURCE_GGUF);
    CHECK(hf->n_files == 5 && gg->n_files == 1);

    /* descriptions agree on everything the GGUF records */
    char field[64] = "";
    CHECKF(mp_model_desc_equal(&hf->desc, &gg->desc, field, sizeof field), "differs in %s", field);
    CHECK(gg->desc.defaulted & MP_DEFAULTED_GROUPS);
    CHECK(gg->desc.n_group == 1 && hf->desc.n_group == 4);
    /* ... and with config.json supplying the routing groups they are identical */
    REQUIRE(mp_source_open(mp_test_path(fix, "tiny-v3-bf16.gguf"), mp_test_path(fix, "tiny-v3/config.json"), &gg_cfg,
                           &e) == MP_OK);
    CHECK(gg_cfg->desc.n_group == 4 && gg_cfg->desc.topk_group == 2);
    CHECK(mp_model_desc_equal(&hf->desc, &gg_cfg->desc, field, sizeof field));

    /* every safetensors tensor equals its GGUF counterpart bit for bit */
    size_t compared = 0;
    for (size_t i = 0; i < hf->n_tensors; i++) {
        const mp_src_tensor *a = &hf->tensors[i];
        const mp_src_tensor *b = mp_source_find(gg, a->id.role, a->id.layer, a->id.expert);
        CHECKF(b != NULL, "%s has no GGUF counterpart", a->name);
        if (!b)
            continue;
        CHECKF(a->rows == b->rows && a->cols == b->cols, "%s: [%llu,%llu] vs %s [%llu,%llu]", a->name,
               (unsigned long long)a->rows, (unsigned long long)a->cols, b->name, (unsigned long long)b->rows,
               (unsigned long long)b->cols);
        if (a->rows != b->rows || a->cols != b->cols)
            continue;
        size_t n = a->rows * a->cols;
        float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
        REQUIRE(x && y);
        CHECK(mp_source_read_rows(hf, a, 0, a->rows, x, &e) == MP_OK);
        CHECK(mp_source_read_rows(gg, b, 0, b->rows, y, &e) == MP_OK);
        CHECKF(memcmp(x, y, n * sizeof *x) == 0, "%s differs from %s", a->name, b->name);
        free(x);
        free(y);
        mp_source_release(hf, a);
        compared++;
    }
    CHECK(compared == hf->n_tensors);
    /* 3 layers x 11 + 3 global + 2 MoE layers x (2 router + 16x3 experts + 3 shared) + dense MLP 3 */
    CHECKF(compared == 139, "compared %zu tensors", compared);

    /* GGUF's own MLA split (k_b / v_b) is the same data as kv_b, re-arranged */
    const mp_src_tensor *kvb = mp_source_find(gg, MP_ROLE_KV_B, 1, -1);
    const mp_src_tensor *kb = mp_source_find(gg, MP_ROLE_K_B, 1, -1);
    const mp_src_tensor *vb = mp_source_find(gg, MP_ROLE_V_B, 1, -1);
    REQUIRE(kvb && kb && vb);
    uint32_t nh = gg->desc.num_attention_heads, nope = gg->desc.qk_nope_head_dim, vd = gg->desc.v_head_dim,
             lora = gg->desc.kv_lora_rank;
    CHECK(kb->rows == (uint64_t)nh * lora && kb->cols == nope);
    CHECK(vb->rows == (uint64_t)nh * vd && vb->cols == lora);
    float *kv = malloc(kvb->rows * kvb->cols * 4), *k = malloc(kb->rows * kb->cols * 4), *v = malloc(vb->rows * vb->cols * 4);
    REQUIRE(kv && k && v);
    REQUIRE(mp_source_read_rows(gg, kvb, 0, kvb->rows, kv, &e) == MP_OK);
    REQUIRE(mp_source_read_rows(gg, kb, 0, kb->rows, k, &e) == MP_OK);
    REQUIRE(mp_source_read_rows(gg, vb, 0, vb->rows, v, &e) == MP_OK);
    int bad = 0;
    for (uint32_t h = 0; h < nh; h++)
        for (uint32_t c = 0; c < lora; c++) {
            for (uint32_t d = 0; d < nope; d++) /* W_UK[h][c][d] = kv_b[h*(nope+v) + d][c] */
                bad += k[((size_t)h * lora + c) * nope + d] != kv[((size_t)h * (nope + vd) + d) * lora + c];
            for (uint32_t j = 0; j < vd; j++) /* W_UV[h][j][c] = kv_b[h*(nope+v) + nope + j][c] */
                bad += v[((size_t)h * vd + j) * lora + c] != kv[((size_t)h * (nope + vd) + nope + j) * lora + c];
        }
    CHECKF(bad == 0, "%d k_b/v_b values differ from kv_b", bad);
    free(kv);
    free(k);
    free(v);

    /* quantized GGUFs open and read */
    mp_source *q = NULL;
    REQUIRE(mp_source_open(mp_test_path(fix, "tiny-v3-Q4_K_M.gguf"), NULL, &q, &e) == MP_OK);
    const mp_src_tensor *qe = mp_source_find(q, MP_ROLE_EXP_DOWN, 2, 15);
    REQUIRE(qe);
    float *row = malloc(qe->cols * 4);
    CHECK(mp_source_read_rows(q, qe, qe->rows - 1, 1, row, &e) == MP_OK);
    CHECK(mp_source_read_rows(q, qe, qe->rows, 1, row, &e) == MP_ERR_INPUT);
    CHECK(strstr(e.msg, "out of range") != NULL);
    free(row);
    mp_source_close(q);

    /* bad paths */
    CHECK(mp_source_open("/nonexistent/model.gguf", NULL, &q, &e) == MP_ERR_INPUT && q == NULL);
    CHECK(strstr(e.msg, "/nonexistent/model.gguf") != NULL);
    CHECK(mp_source_open(mp_test_path(fix, "README.md"), NULL, &q, &e) == MP_ERR_INPUT);
    /* an override that describes another model is refused */
    const char *dir = mp_test_tmpdir("test_source");
    const char *cfg = mp_test_path(dir, "config.json");
    FILE *f = fopen(cfg, "w");
    char *text;
    size_t len;
    REQUIRE(mp_read_small_file(mp_test_path(fix, "tiny-v3/config.json"), 1 << 20, &text, &len, &e) == MP_OK);
    char *hs = strstr(text, "\"hidden_size\": 256");
    REQUIRE(hs);
    memcpy(hs, "\"hidden_size\": 512", 18);
    fwrite(text, 1, len, f);
    fclose(f);
    free(text);
    CHECK(mp_source_open(mp_test_path(fix, "tiny-v3-bf16.gguf"), cfg, &q, &e) == MP_ERR_INPUT);
    CHECKF(strstr(e.msg, "hidden_size") != NULL, "%s", e.msg);
    /* an override that is invalid in itself is named as the fault, not the
     * GGUF (routing groups are what --config is for, and what goes wrong) */
    REQUIRE(mp_read_small_file(mp_test_path(fix, "tiny-v3/config.json"), 1 << 20, &text, &len, &e) == MP_OK);
    char *ng = strstr(text, "\"n_group\": 4");
    REQUIRE(ng);
    memcpy(ng, "\"n_group\": 3", 12);
    f = fopen(cfg, "w");
    REQUIRE(f);
    fwrite(text, 1, len, f);
    fclose(f);
    free(text);
    CHECK(mp_source_open(mp_test_path(fix, "tiny-v3-bf16.gguf"), cfg, &q, &e) == MP_ERR_INPUT && q == NULL);
    CHECKF(strncmp(e.msg, cfg, strlen(cfg)) == 0 && strstr(e.msg, "n_group: 3 does not divide"), "%s", e.msg);

    mp_source_close(hf);
    mp_source_close(gg);
    mp_source_close(gg_cfg);
    return mp_test_finish();
}
