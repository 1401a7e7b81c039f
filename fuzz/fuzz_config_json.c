/* fuzz_config_json: config.json parsing (mp_model_desc_from_config_json) and
 * the consistency check (mp_model_desc_validate), formats/model_desc.h.
 *
 * Input: a config.json text. A description that validates must also survive
 * the container's metadata round trip: mp_model_desc_to_json, then
 * mp_model_desc_from_json, gives an equal description (mp_model_desc_equal);
 * and it prints (mp_model_desc_print, to /dev/null). */
#include <jansson.h>
#include <stdio.h>

#include "harness_util.h"
#include "model_desc.h"
#include "model_desc_json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mp_model_desc d;
    mp_error err = {0};
    int rc = mp_model_desc_from_config_json((const char *)data, size, "config.json", &d, &err);
    if (rc == MP_OK)
        rc = mp_model_desc_validate(&d, "config.json", &err);
    if (rc) {
        mp_fuzz_check_error(rc, &err, MP_ERR_INPUT);
        return 0;
    }
    json_t *obj = mp_model_desc_to_json(&d);
    if (!obj)
        mp_fuzz_fail("mp_model_desc_to_json failed");
    mp_model_desc back;
    if (mp_model_desc_from_json(obj, "metadata", &back, &err) != MP_OK)
        mp_fuzz_fail("a valid description does not read back from its JSON: %s", err.msg);
    char what[128] = "";
    if (!mp_model_desc_equal(&d, &back, what, sizeof what))
        mp_fuzz_fail("the description changes through its JSON form: %s", what);
    json_decref(obj);
    static FILE *devnull;
    if (!devnull && !(devnull = fopen("/dev/null", "w")))
        return 0;
    mp_model_desc_print(&d, devnull);
    return 0;
}
