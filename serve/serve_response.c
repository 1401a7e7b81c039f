/* serve_response: OpenAI response shapes (completions, chat, streamed chunks,
 * usage) and the /v1/models and /health bodies. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve_internal.h"

static json_t *text_json(const char *s, size_t n)
{
    json_t *v = json_stringn(s ? s : "", s ? n : 0);
    /* The generated text is valid UTF-8 by construction (the detokenizer
     * replaces broken bytes); this is only a guard. */
    return v ? v : json_string("\xef\xbf\xbd");
}

static json_t *envelope(const mp_server *s, const mp_job *j, const char *object)
{
    json_t *root = json_object();
    json_object_set_new(root, "id", json_string(j->id));
    json_object_set_new(root, "object", json_string(object));
    json_object_set_new(root, "created", json_integer((json_int_t)j->created));
    json_object_set_new(root, "model", json_string(s->model_name));
    return root;
}

static json_t *usage_json(const mp_job *j)
{
    json_t *u = json_object();
    json_object_set_new(u, "prompt_tokens", json_integer((json_int_t)j->prompt.n));
    json_object_set_new(u, "completion_tokens", json_integer(j->completion_tokens));
    json_object_set_new(u, "total_tokens", json_integer((json_int_t)j->prompt.n + j->completion_tokens));
    json_t *d = json_object();
    json_object_set_new(d, "cached_tokens", json_integer(j->cached_tokens));
    json_object_set_new(u, "prompt_tokens_details", d);
    return u;
}

static char *dump(json_t *root)
{
    char *out = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return out;
}

char *mp_api_response_json(const mp_server *s, const mp_job *j)
{
    bool chat = j->kind == MP_REQ_CHAT;
    json_t *root = envelope(s, j, chat ? "chat.completion" : "text_completion");
    json_t *choice = json_object();
    json_object_set_new(choice, "index", json_integer(0));
    if (chat) {
        json_t *msg = json_object();
        json_object_set_new(msg, "role", json_string("assistant"));
        json_object_set_new(msg, "content", text_json(j->content.p, j->content.n));
        if (j->reasoning.n)
            json_object_set_new(msg, "reasoning_content", text_json(j->reasoning.p, j->reasoning.n));
        json_object_set_new(choice, "message", msg);
    } else {
        json_object_set_new(choice, "text", text_json(j->content.p, j->content.n));
    }
    json_object_set_new(choice, "logprobs", json_null());
    json_object_set_new(choice, "finish_reason", json_string(j->finish_reason ? j->finish_reason : "stop"));
    json_t *choices = json_array();
    json_array_append_new(choices, choice);
    json_object_set_new(root, "choices", choices);
    json_object_set_new(root, "usage", usage_json(j));
    return dump(root);
}

static bool add_event(mp_sbuf *out, json_t *root)
{
    char *s = dump(root);
    if (!s)
        return false;
    bool ok = mp_sbuf_addz(out, "data: ") && mp_sbuf_addz(out, s) && mp_sbuf_addz(out, "\n\n");
    free(s);
    return ok;
}

bool mp_api_chunk(mp_sbuf *out, const mp_server *s, const mp_job *j, bool role, const char *reasoning,
                  size_t reasoning_len, const char *content, size_t content_len, const char *finish)
{
    bool chat = j->kind == MP_REQ_CHAT;
    json_t *root = envelope(s, j, chat ? "chat.completion.chunk" : "text_completion");
    json_t *choice = json_object();
    json_object_set_new(choice, "index", json_integer(0));
    if (chat) {
        json_t *delta = json_object();
        if (role) {
            json_object_set_new(delta, "role", json_string("assistant"));
            json_object_set_new(delta, "content", json_string(""));
        }
        if (reasoning)
            json_object_set_new(delta, "reasoning_content", text_json(reasoning, reasoning_len));
        if (content)
            json_object_set_new(delta, "content", text_json(content, content_len));
        json_object_set_new(choice, "delta", delta);
    } else {
        json_object_set_new(choice, "text", text_json(content, content ? content_len : 0));
    }
    json_object_set_new(choice, "logprobs", json_null());
    json_object_set_new(choice, "finish_reason", finish ? json_string(finish) : json_null());
    json_t *choices = json_array();
    json_array_append_new(choices, choice);
    json_object_set_new(root, "choices", choices);
    /* as OpenAI: with include_usage every chunk has the key, null until the usage chunk */
    if (j->include_usage)
        json_object_set_new(root, "usage", json_null());
    return add_event(out, root);
}

bool mp_api_usage_chunk(mp_sbuf *out, const mp_server *s, const mp_job *j)
{
    json_t *root = envelope(s, j, j->kind == MP_REQ_CHAT ? "chat.completion.chunk" : "text_completion");
    json_object_set_new(root, "choices", json_array());
    json_object_set_new(root, "usage", usage_json(j));
    return add_event(out, root);
}

static json_t *model_object(const mp_server *s)
{
    json_t *m = json_object();
    json_object_set_new(m, "id", json_string(s->model_name));
    json_object_set_new(m, "object", json_string("model"));
    json_object_set_new(m, "created", json_integer((json_int_t)s->started));
    json_object_set_new(m, "owned_by", json_string("moepack"));
    return m;
}

char *mp_api_model_json(const mp_server *s)
{
    return dump(model_object(s));
}

char *mp_api_models_json(const mp_server *s)
{
    json_t *data = json_array();
    json_array_append_new(data, model_object(s));
    json_t *root = json_object();
    json_object_set_new(root, "object", json_string("list"));
    json_object_set_new(root, "data", data);
    return dump(root);
}

char *mp_api_health_json(mp_server *s)
{
    json_t *root = json_object();
    pthread_mutex_lock(&s->mu);
    json_object_set_new(root, "status", json_string(s->stopping ? "stopping" : "ok"));
    json_object_set_new(root, "model", json_string(s->model_name));
    json_object_set_new(root, "backend", json_string(mp_model_backend_name(s->model)));
    json_object_set_new(root, "chat_format", json_string(mp_chat_format_name(s->chat)));
    json_object_set_new(root, "ctx", json_integer(s->o.ctx));
    json_object_set_new(root, "slots", json_integer(s->o.slots));
    json_object_set_new(root, "slots_busy", json_integer(s->n_active));
    json_object_set_new(root, "queued", json_integer(s->n_queued));
    json_object_set_new(root, "queue_limit", json_integer(s->o.queue));
    json_object_set_new(root, "requests", json_integer((json_int_t)s->n_requests));
    json_object_set_new(root, "finished", json_integer((json_int_t)s->n_finished));
    json_object_set_new(root, "cancelled", json_integer((json_int_t)s->n_cancelled));
    json_object_set_new(root, "failed", json_integer((json_int_t)s->n_failed));
    json_object_set_new(root, "rejected_busy", json_integer((json_int_t)s->n_rejected));
    json_object_set_new(root, "prompt_tokens_evaluated", json_integer((json_int_t)s->prompt_evaluated));
    json_object_set_new(root, "prompt_tokens_cached", json_integer((json_int_t)s->prompt_cached));
    json_object_set_new(root, "tokens_generated", json_integer((json_int_t)s->generated));
    pthread_mutex_unlock(&s->mu);
    return dump(root);
}
