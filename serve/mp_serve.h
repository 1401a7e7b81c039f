/* mp_serve: an OpenAI-compatible HTTP server for one loaded model.
 *
 *   POST /v1/chat/completions, POST /v1/completions (server-sent events when
 *   "stream": true), GET /v1/models, GET /health, GET / (a chat page embedded
 *   in the binary). docs/SERVE.md describes the API and its limits.
 *
 * Requests queue FIFO for a fixed number of slots (each slot owns one
 * session, i.e. one KV cache); one scheduler thread steps the active slots
 * round-robin, one token (or one prompt batch) at a time, so a long answer
 * does not starve short ones. A request whose prompt shares a prefix with an
 * idle slot's tokens goes to that slot and evaluates only the rest. The
 * server only reads from the model; it never serves files from disk. */
#ifndef MP_SERVE_H
#define MP_SERVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mp_error.h"
#include "mp_runner.h"

/* Prompt tokens evaluated in one scheduler step by default
 * (mp_serve_opts.prefill_chunk): big enough for efficient expert GEMMs, small
 * enough that other slots get their turn soon. Load the model with
 * mp_model_opts.max_batch = the chunk: the sessions never evaluate more. */
#define MP_SERVE_PREFILL_CHUNK 256u

typedef struct mp_serve_opts {
    const char *host;       /* address to bind (numeric IPv4/IPv6); default "127.0.0.1" */
    uint16_t port;          /* 0: any free port (see mp_server_port) */
    const char *api_key;    /* NULL: no authentication */
    const char *model_name; /* the "model" id in responses and /v1/models */
    uint32_t max_tokens;    /* default and cap of a request's max_tokens */
    uint32_t ctx;           /* tokens per slot (prompt + answer) */
    uint32_t slots;         /* requests generating at once */
    uint32_t queue;         /* requests waiting for a slot; beyond: 503 */
    size_t max_body;        /* request body cap in bytes; beyond: 413 */
    unsigned timeout_s;     /* idle connection timeout */
    unsigned max_connections;
    uint32_t prefill_chunk; /* prompt tokens per scheduler step (0: MP_SERVE_PREFILL_CHUNK) */
} mp_serve_opts;

void mp_serve_opts_default(mp_serve_opts *o);

typedef struct mp_server mp_server;

/* Creates the slots' sessions, starts the scheduler and the HTTP listener.
 * The model must outlive the server. */
int mp_server_start(mp_model *m, const mp_serve_opts *o, mp_server **out, mp_error *err);
/* The port actually bound (useful with port 0). */
uint16_t mp_server_port(const mp_server *s);
/* Stops listening, ends running requests (clients see the stream cut) and
 * frees everything. */
void mp_server_stop(mp_server *s);

#endif
