/* model_desc_gguf: the description of the fixture GGUFs against the
 * fixture's config.json (read here with jansson), and the variants other
 * converters write (MLA-split head sizes, no q_lora, softmax groups, MTP
 * layers, missing keys) on hand-made GGUF headers. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "gguf.h"
#include "gguf_build.h"
#include "gguf_quants.h"
#include "model_desc_gguf.h"
#include "mp_test.h"

static json_t *cfg;

static double num(const char *key)
{
    json_t *v = json_object_get(cfg, key);
    REQUIRE(v && json_is_number(v));
    return json_number_value(v);
}

static double rope_num(const char *key)
{
    json_t *v = json_object_get(json_object_get(cfg, "rope_scaling"), key);
    REQUIRE(v && json_is_number(v));
    return json_number_value(v);
}

#define CHECK_U(field, key) CHECKF(d.field == (uint32_t)num(key), #field " %u, config %g", d.field, num(key))

static void test_fixture(const char *fixtures, const char *file)
{
    mp_gguf g;
    mp_error err = {0};
    REQUIRE(mp_gguf_open(mp_test_path(fixtures, file), &g, &err) == MP_OK);
    mp_model_desc d;
    int rc = mp_model_desc_from_gguf(&g, NULL, &d, &err);
    CHECKF(rc == MP_OK, "%s", err.msg);
    mp_gguf_close(&g);
    if (rc != MP_OK)
        return;

    CHECK(strcmp(d.model_type, json_string_value(json_object_get(cfg, "model_type"))) == 0);
    CHECK_U(vocab_size, "vocab_size");
    CHECK_U(hidden_size, "hidden_size");
    CHECK_U(intermediate_size, "intermediate_size");
    CHECK_U(moe_intermediate_size, "moe_intermediate_size");
    CHECK_U(num_hidden_layers, "num_hidden_layers");
    CHECK_U(num_nextn_predict_layers, "num_nextn_predict_layers");
    CHECK_U(num_attention_heads, "num_attention_heads");
    CHECK_U(n_routed_experts, "n_routed_experts");
    CHECK_U(n_shared_experts, "n_shared_experts");
    CHECK_U(num_experts_per_tok, "num_experts_per_tok");
    CHECK_U(first_k_dense_replace, "first_k_dense_replace");
    CHECK_U(moe_layer_freq, "moe_layer_freq");
    CHECK_U(q_lora_rank, "q_lora_rank");
    CHECK_U(kv_lora_rank, "kv_lora_rank");
    CHECK_U(qk_nope_head_dim, "qk_nope_head_dim");
    CHECK_U(qk_rope_head_dim, "qk_rope_head_dim");
    CHECK_U(v_head_dim, "v_head_dim");
    CHECK_U(max_position_embeddings, "max_position_embeddings");
    CHECK(d.bos_token_id == (int32_t)num("bos_token_id") && d.eos_token_id == (int32_t)num("eos_token_id"));
    CHECK(d.scoring_func == MP_SCORING_SIGMOID &&
          strcmp(json_string_value(json_object_get(cfg, "scoring_func")), "sigmoid") == 0);
    CHECK(d.topk_method == MP_TOPK_NOAUX_TC &&
          strcmp(json_string_value(json_object_get(cfg, "topk_method")), "noaux_tc") == 0);
    CHECK(d.norm_topk_prob == json_is_true(json_object_get(cfg, "norm_topk_prob")));
    CHECK(d.tie_word_embeddings == json_is_true(json_object_get(cfg, "tie_word_embeddings")));
    CHECK(d.routed_scaling_factor == (float)num("routed_scaling_factor"));
    CHECK(d.rms_norm_eps == (float)num("rms_norm_eps"));
    CHECK(d.rope_theta == num("rope_theta"));
    CHECK(d.yarn.enabled && strcmp(json_string_value(json_object_get(json_object_get(cfg, "rope_scaling"), "type")),
                                   "yarn") == 0);
    CHECK(d.yarn.factor == (float)rope_num("factor"));
    CHECK(d.yarn.original_max_position_embeddings == (uint32_t)rope_num("original_max_position_embeddings"));
    CHECK(d.yarn.beta_fast == (float)rope_num("beta_fast") && d.yarn.beta_slow == (float)rope_num("beta_slow"));
    CHECKF(d.yarn.mscale_all_dim == (float)rope_num("mscale_all_dim"), "mscale_all_dim %.9g",
           (double)d.yarn.mscale_all_dim);
    CHECK(d.yarn.mscale == (float)rope_num("mscale"));
    CHECK(d.fp8_block_rows == 0 && d.fp8_block_cols == 0);
    /* the GGUF lacks the group counts (config: 4 groups, top 2): defaulted */
    CHECK(num("n_group") == 4 && num("topk_group") == 2);
    CHECK(d.n_group == 1 && d.topk_group == 1);
    CHECK(d.defaulted == (MP_DEFAULTED_GROUPS | MP_DEFAULTED_TOPK_METHOD | MP_DEFAULTED_YARN_BETAS |
                          MP_DEFAULTED_MSCALE | MP_DEFAULTED_MOE_LAYER_FREQ));
    /* not recorded either, and read off the router tensors: every layer from the first MoE one has one */
    CHECK(d.moe_layer_freq == 1);
}

/* ---- hand-made deepseek2 headers ------------------------------------------ */

typedef struct variant {
    bool mla_split;   /* newer converter: head_count_kv 1 + *_mla keys */
    bool q_lora;      /* attention.q_lora_rank present */
    uint32_t gating;  /* 0: key absent */
    uint32_t groups, groups_used; /* 0: keys absent */
    bool router_bias; /* exp_probs_b tensors */
    uint32_t nextn;   /* 0: key absent */
    float log_mul;    /* yarn_log_multiplier; 0: no yarn keys */
    bool vocab_key;   /* deepseek2.vocab_size present (else a token list) */
    const char *drop; /* a key to leave out */
    const char *zero; /* a key written as 0 */
    const char *arch;
    uint32_t head_count_kv_override;
} variant;

static int n_kv;

static void kvu(buf *b, const variant *v, const char *key, uint32_t val)
{
    if (v->drop && strcmp(v->drop, key) == 0)
        return;
    if (v->zero && strcmp(v->zero, key) == 0)
        val = 0;
    kv_u32(b, key, val);
    n_kv++;
}

/* A DeepSeek-V2-Lite-like geometry: 2048 hidden, 16 heads, kv_lora 512,
 * qk_nope 128, rope 64, v 128, 27 layers, 64 experts top-6, 2 shared. */
static const char *write_variant(const char *dir, const variant *v)
{
    buf kv = {0}, all = {0};
    n_kv = 0;
    kv_str(&kv, "general.architecture", v->arch ? v->arch : "deepseek2");
    n_kv++;
    kvu(&kv, v, "deepseek2.block_count", 27 + v->nextn);
    kvu(&kv, v, "deepseek2.context_length", 163840);
    kvu(&kv, v, "deepseek2.embedding_length", 2048);
    kvu(&kv, v, "deepseek2.feed_forward_length", 10944);
    kvu(&kv, v, "deepseek2.attention.head_count", 16);
    uint32_t hkv = v->head_count_kv_override ? v->head_count_kv_override : v->mla_split ? 1 : 16;
    kvu(&kv, v, "deepseek2.attention.head_count_kv", hkv);
    kv_f32(&kv, "deepseek2.rope.freq_base", 10000.0f);
    kv_f32(&kv, "deepseek2.attention.layer_norm_rms_epsilon", 1e-6f);
    n_kv += 2;
    kvu(&kv, v, "deepseek2.expert_used_count", 6);
    kvu(&kv, v, "deepseek2.leading_dense_block_count", 1);
    if (v->vocab_key)
        kvu(&kv, v, "deepseek2.vocab_size", 102400);
    if (v->q_lora)
        kvu(&kv, v, "deepseek2.attention.q_lora_rank", 1536);
    kvu(&kv, v, "deepseek2.attention.kv_lora_rank", 512);
    if (v->mla_split) {
        kvu(&kv, v, "deepseek2.attention.key_length", 512 + 64);
        kvu(&kv, v, "deepseek2.attention.value_length", 512);
        kvu(&kv, v, "deepseek2.attention.key_length_mla", 128 + 64);
        kvu(&kv, v, "deepseek2.attention.value_length_mla", 128);
    } else {
        kvu(&kv, v, "deepseek2.attention.key_length", 128 + 64);
        kvu(&kv, v, "deepseek2.attention.value_length", 128);
    }
    kvu(&kv, v, "deepseek2.expert_feed_forward_length", 1408);
    kvu(&kv, v, "deepseek2.expert_count", 64);
    kvu(&kv, v, "deepseek2.expert_shared_count", 2);
    kv_f32(&kv, "deepseek2.expert_weights_scale", 1.0f);
    n_kv++;
    if (v->gating)
        kvu(&kv, v, "deepseek2.expert_gating_func", v->gating);
    if (v->groups)
        kvu(&kv, v, "deepseek2.expert_group_count", v->groups);
    if (v->groups_used)
        kvu(&kv, v, "deepseek2.expert_group_used_count", v->groups_used);
    if (v->nextn)
        kvu(&kv, v, "deepseek2.nextn_predict_layers", v->nextn);
    kvu(&kv, v, "deepseek2.rope.dimension_count", 64);
    if (v->log_mul != 0) {
        kv_str(&kv, "deepseek2.rope.scaling.type", "yarn");
        kv_f32(&kv, "deepseek2.rope.scaling.yarn_log_multiplier", v->log_mul);
        n_kv += 2;
        if (!v->drop || strcmp(v->drop, "deepseek2.rope.scaling.factor") != 0) {
            kv_f32(&kv, "deepseek2.rope.scaling.factor", 40.0f);
            n_kv++;
        }
        kvu(&kv, v, "deepseek2.rope.scaling.original_context_length", 4096);
    }
    if (!v->vocab_key) {
        put_str(&kv, "tokenizer.ggml.tokens");
        put_u32(&kv, MP_GGUF_ARRAY);
        put_u32(&kv, MP_GGUF_STRING);
        put_u64(&kv, 3);
        put_str(&kv, "a");
        put_str(&kv, "b");
        put_str(&kv, "c");
        n_kv++;
    }
    kvu(&kv, v, "tokenizer.ggml.bos_token_id", 100000);

    uint64_t n_tensors = v->router_bias ? 2 : 1;
    header(&all, 3, n_tensors, (uint64_t)n_kv);
    put(&all, kv.p, kv.n);
    uint64_t ne_out[2] = {2048, 16}, ne_bias[1] = {64};
    tensor_info(&all, "output.weight", 2, ne_out, MP_GGML_Q4_0, 0); /* data is not read */
    if (v->router_bias)
        tensor_info(&all, "blk.1.exp_probs_b.bias", 1, ne_bias, MP_GGML_F32, 2048 * 16 / 32 * 18);
    pad_to(&all, 32);
    size_t data = 2048 * 16 / 32 * 18 + 256;
    uint8_t *zero = calloc(1, data);
    REQUIRE(zero);
    put(&all, zero, data);
    free(zero);
    const char *path = write_bytes(dir, "variant.gguf", all.p, all.n);
    free(kv.p);
    free(all.p);
    return path;
}

static int describe(const char *dir, const variant *v, mp_model_desc *d, mp_error *err)
{
    const char *path = write_variant(dir, v);
    mp_gguf g;
    int rc = mp_gguf_open(path, &g, err);
    REQUIRE(rc == MP_OK);
    rc = mp_model_desc_from_gguf(&g, "shown-name.gguf", d, err);
    mp_gguf_close(&g);
    return rc;
}

static void test_variants(const char *dir)
{
    mp_model_desc d;
    mp_error err = {0};

    /* V2-Lite as an older converter wrote it: no q_lora, no gating key
     * (softmax), no groups, no router bias, per-head key/value lengths */
    variant lite = {.vocab_key = true};
    REQUIRE(describe(dir, &lite, &d, &err) == MP_OK);
    CHECK(strcmp(d.model_type, "deepseek_v2") == 0);
    CHECK(d.q_lora_rank == 0 && d.kv_lora_rank == 512);
    CHECK(d.qk_nope_head_dim == 128 && d.qk_rope_head_dim == 64 && d.v_head_dim == 128);
    CHECK(d.scoring_func == MP_SCORING_SOFTMAX && d.topk_method == MP_TOPK_GREEDY);
    CHECK(d.n_group == 1 && d.topk_group == 1 && (d.defaulted & MP_DEFAULTED_GROUPS));
    CHECK(!d.norm_topk_prob && !d.yarn.enabled && d.yarn.factor == 1.0f);
    CHECK(d.num_hidden_layers == 27 && d.num_nextn_predict_layers == 0);
    CHECK(d.vocab_size == 102400 && d.bos_token_id == 100000 && d.eos_token_id == -1);
    CHECK(!d.tie_word_embeddings && d.n_routed_experts == 64 && d.n_shared_experts == 2);
    CHECK(d.max_position_embeddings == 163840);

    /* newer converter: MLA-split head sizes, sigmoid + router bias, groups,
     * MTP layer, yarn with mscale_all_dim 0.707 */
    variant v3 = {.mla_split = true, .q_lora = true, .gating = 2, .groups = 8, .groups_used = 4,
                  .router_bias = true, .nextn = 1, .log_mul = (float)(0.1 * 0.707), .vocab_key = false};
    REQUIRE(describe(dir, &v3, &d, &err) == MP_OK);
    CHECK(strcmp(d.model_type, "deepseek_v3") == 0);
    CHECK(d.qk_nope_head_dim == 128 && d.qk_rope_head_dim == 64 && d.v_head_dim == 128);
    CHECK(d.q_lora_rank == 1536);
    CHECK(d.scoring_func == MP_SCORING_SIGMOID && d.topk_method == MP_TOPK_NOAUX_TC);
    CHECK(d.n_group == 8 && d.topk_group == 4 && !(d.defaulted & MP_DEFAULTED_GROUPS));
    CHECK(d.defaulted & MP_DEFAULTED_TOPK_METHOD);
    CHECK(d.num_hidden_layers == 27 && d.num_nextn_predict_layers == 1);
    CHECK(d.vocab_size == 3); /* from the token list */
    CHECK(d.yarn.enabled && d.yarn.factor == 40.0f && d.yarn.original_max_position_embeddings == 4096);
    CHECKF(d.yarn.mscale_all_dim == 0.707f && d.yarn.mscale == 0.707f, "mscale_all_dim %.9g",
           (double)d.yarn.mscale_all_dim);
    CHECK(d.yarn.beta_fast == 32.0f && d.yarn.beta_slow == 1.0f);
    CHECK((d.defaulted & (MP_DEFAULTED_YARN_BETAS | MP_DEFAULTED_MSCALE)) ==
          (MP_DEFAULTED_YARN_BETAS | MP_DEFAULTED_MSCALE));
    CHECK(!(d.defaulted & MP_DEFAULTED_YARN_ORIGINAL_MAX_POS));
    /* yarn without its original context length: the training length, as llama.cpp takes, flagged */
    v3.drop = "deepseek2.rope.scaling.original_context_length";
    REQUIRE(describe(dir, &v3, &d, &err) == MP_OK);
    CHECK(d.yarn.original_max_position_embeddings == d.max_position_embeddings);
    CHECK(d.defaulted & MP_DEFAULTED_YARN_ORIGINAL_MAX_POS);
    v3.drop = NULL;

    /* V2: softmax with groups -> group-limited greedy */
    variant v2 = {.q_lora = true, .gating = 1, .groups = 8, .groups_used = 3, .vocab_key = true, .log_mul = 0.0707f};
    REQUIRE(describe(dir, &v2, &d, &err) == MP_OK);
    CHECK(d.topk_method == MP_TOPK_GROUP_LIMITED_GREEDY && strcmp(d.model_type, "deepseek_v2") == 0);
    CHECK(d.yarn.mscale_all_dim == 0.707f);

    /* failures name the file given and the key */
    variant missing = {.vocab_key = true, .drop = "deepseek2.attention.kv_lora_rank"};
    CHECK(describe(dir, &missing, &d, &err) == MP_ERR_INPUT);
    CHECKF(strstr(err.msg, "shown-name.gguf: ") == err.msg && strstr(err.msg, "kv_lora_rank"), "%s", err.msg);
    variant ambiguous = {.vocab_key = true, .head_count_kv_override = 1};
    CHECK(describe(dir, &ambiguous, &d, &err) == MP_ERR_INPUT);
    CHECKF(strstr(err.msg, "head_count_kv"), "%s", err.msg);
    variant gating = {.vocab_key = true, .gating = 3};
    CHECK(describe(dir, &gating, &d, &err) == MP_ERR_INPUT && strstr(err.msg, "gating function 3"));
    variant arch = {.vocab_key = true, .arch = "llama"};
    CHECK(describe(dir, &arch, &d, &err) == MP_ERR_INPUT && strstr(err.msg, "'llama'"));
    /* yarn without its factor: refused (it became factor 1, positions unscaled), as config.json's is */
    variant no_factor = {.vocab_key = true, .log_mul = 0.1f, .drop = "deepseek2.rope.scaling.factor"};
    CHECK(describe(dir, &no_factor, &d, &err) == MP_ERR_INPUT);
    CHECKF(strstr(err.msg, "rope.scaling.type is yarn but deepseek2.rope.scaling.factor is missing"), "%s", err.msg);
    variant no_rope = {.vocab_key = true, .drop = "deepseek2.rope.dimension_count"};
    CHECK(describe(dir, &no_rope, &d, &err) == MP_ERR_INPUT && strstr(err.msg, "rope.dimension_count"));
    /* a size of 0 names its key (the message once said only "a required model dimension is 0") */
    static const char *const zero_keys[] = {"deepseek2.attention.value_length", "deepseek2.attention.kv_lora_rank",
                                            "deepseek2.embedding_length", "deepseek2.vocab_size"};
    for (size_t i = 0; i < sizeof zero_keys / sizeof zero_keys[0]; i++) {
        variant zero = {.vocab_key = true, .zero = zero_keys[i]};
        char want[128];
        snprintf(want, sizeof want, "shown-name.gguf: %s: is 0", zero_keys[i]);
        CHECK(describe(dir, &zero, &d, &err) == MP_ERR_INPUT);
        CHECKF(strstr(err.msg, want) == err.msg, "%s: %s", zero_keys[i], err.msg);
    }
    variant zero_mla = {.vocab_key = true, .mla_split = true, .zero = "deepseek2.attention.value_length_mla"};
    CHECK(describe(dir, &zero_mla, &d, &err) == MP_ERR_INPUT);
    CHECKF(strstr(err.msg, "deepseek2.attention.value_length_mla: is 0"), "%s", err.msg);
}

int main(void)
{
    const char *fixtures = mp_test_fixtures();
    const char *dir = mp_test_tmpdir("test_gguf_desc");
    json_error_t jerr;
    cfg = json_load_file(mp_test_path(fixtures, "tiny-v3/config.json"), 0, &jerr);
    REQUIRE(cfg != NULL);
    test_fixture(fixtures, "tiny-v3-bf16.gguf");
    test_fixture(fixtures, "tiny-v3-Q8_0.gguf");
    test_fixture(fixtures, "tiny-v3-Q4_K_M.gguf");
    json_decref(cfg);
    test_variants(dir);
    return mp_test_finish();
}
