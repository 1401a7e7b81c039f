/* model_desc_json: the model description <-> config.json-style JSON object. */
#ifndef MP_MODEL_DESC_JSON_H
#define MP_MODEL_DESC_JSON_H

#include "model_desc.h"

/* A new json_t* object (caller json_decref's it) with the official
 * config.json keys, so mp_model_desc_from_config_json reads it back. */
void *mp_model_desc_to_json(const mp_model_desc *d);

/* Parses and validates such an object (a json_t*). */
int mp_model_desc_from_json(const void *obj, const char *path, mp_model_desc *d, mp_error *err);

#endif
