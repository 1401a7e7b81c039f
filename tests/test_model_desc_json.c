/* The container stores the model description as config.json-style JSON:
 * every field must survive description -> JSON -> description. */
#include <jansson.h>
#include <string.h>

#include "model_desc.h"
#include "model_desc_json.h"
#include "mp_file.h"
#include "mp_test.h"

static void roundtrip(const mp_model_desc *a, const char *what)
{
    mp_error e = {0};
    json_t *j = mp_model_desc_to_json(a);
    mp_model_desc b;
    int rc = mp_model_desc_from_json(j, what, &b, &e);
    CHECKF(rc == MP_OK, "%s: %s", what, e.msg);
    char field[64] = "";
    CHECKF(mp_model_desc_equal(a, &b, field, sizeof field), "%s: field %s differs", what, field);
    /* equal() skips defaulted fields; the bits themselves must also survive */
    CHECK(a->defaulted == b.defaulted);
    CHECK(a->yarn.enabled == b.yarn.enabled);
    if (a->yarn.enabled)
        CHECK(a->yarn.factor == b.yarn.factor && a->yarn.mscale == b.yarn.mscale &&
              a->yarn.mscale_all_dim == b.yarn.mscale_all_dim && a->yarn.beta_fast == b.yarn.beta_fast);
    CHECK(a->rms_norm_eps == b.rms_norm_eps && a->q_lora_rank == b.q_lora_rank);
    CHECK(strcmp(a->model_type, b.model_type) == 0);
    json_decref(j);
}

int main(void)
{
    const char *fix = mp_test_fixtures();
    mp_error e = {0};
    char *text;
    size_t len;
    REQUIRE(mp_read_small_file(mp_test_path(fix, "tiny-v3/config.json"), 1 << 20, &text, &len, &e) == MP_OK);
    mp_model_desc d;
    REQUIRE(mp_model_desc_from_config_json(text, len, "config.json", &d, &e) == MP_OK);
    free(text);
    roundtrip(&d, "tiny-v3");

    /* V2-Lite-like: no q_lora, softmax greedy, no yarn, defaulted groups */
    mp_model_desc v2 = d;
    strcpy(v2.model_type, "deepseek_v2");
    v2.q_lora_rank = 0;
    v2.scoring_func = MP_SCORING_SOFTMAX;
    v2.topk_method = MP_TOPK_GREEDY;
    v2.n_group = v2.topk_group = 1;
    v2.yarn.enabled = false;
    v2.yarn.original_max_position_embeddings = 0;
    v2.defaulted = MP_DEFAULTED_GROUPS | MP_DEFAULTED_MSCALE;
    roundtrip(&v2, "v2-lite-like");

    /* a hostile "model" object is refused, not crashed on */
    json_t *bad = json_pack("{s:s, s:i}", "model_type", "deepseek_v3", "hidden_size", -5);
    mp_model_desc out;
    CHECK(mp_model_desc_from_json(bad, "x.moepack", &out, &e) == MP_ERR_INPUT);
    json_decref(bad);
    CHECK(mp_model_desc_from_json(NULL, "x.moepack", &out, &e) == MP_ERR_INPUT);
    return mp_test_finish();
}
