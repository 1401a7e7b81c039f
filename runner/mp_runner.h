/* mp_runner: a loaded container and the sessions (conversations) that run on
 * it. This header is the contract between the forward pass and its users
 * (run/chat/compare/bench/serve); the implementation lives in runner/.
 *
 * A model is loaded once (mmap, no copy of the CPU section, one upload of the
 * GPU section in hybrid mode) and is read-only afterwards. A session owns a
 * KV cache, its token history and all scratch buffers, allocated once at
 * creation: evaluating tokens allocates nothing. One session is used by one
 * thread at a time; the model's compute threads (OpenMP) are shared, so
 * sessions of one model take turns (mp_session_eval serializes on the model). */
#ifndef MP_RUNNER_H
#define MP_RUNNER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "container.h"
#include "mp_error.h"
#include "tokenizer.h"

typedef struct mp_model mp_model;
typedef struct mp_session mp_session;

typedef struct mp_model_opts {
    int threads;                /* 0: all cores */
    uint32_t experts_per_token; /* 0: the model's num_experts_per_tok */
    bool verify;                /* check every tensor checksum before use */
    bool cpu_only;              /* never use the GPU even when built with CUDA */
    bool prefault;              /* fault the CPU section in at load (all threads, THP) */
} mp_model_opts;

void mp_model_opts_default(mp_model_opts *o);

int mp_model_load(const char *path, const mp_model_opts *o, mp_model **out, mp_error *err);
void mp_model_free(mp_model *m);

const mp_container *mp_model_container(const mp_model *m);
const mp_model_desc *mp_model_desc_of(const mp_model *m);
const mp_tokenizer *mp_model_tokenizer(const mp_model *m);
uint32_t mp_model_vocab(const mp_model *m);
/* "cpu (avx512)", "hybrid (cuda + amx)", ... */
const char *mp_model_backend_name(const mp_model *m);

/* ctx: the most tokens the session will hold (prompt + generated). */
int mp_session_new(mp_model *m, uint32_t ctx, mp_session **out, mp_error *err);
void mp_session_free(mp_session *s);

/* Tokens in the session so far (its KV cache holds exactly these). */
uint32_t mp_session_len(const mp_session *s);
const int32_t *mp_session_tokens(const mp_session *s);
uint32_t mp_session_ctx(const mp_session *s);
/* Forgets everything after the first n tokens (keeps a shared prefix). */
void mp_session_truncate(mp_session *s, uint32_t n);

/* Appends ids (any count: the prompt is processed in batches, each expert
 * running one GEMM per layer and batch) and computes logits. logits_last
 * (vocab floats, may be NULL) gets the last token's; logits_all (n x vocab,
 * may be NULL) every new token's. A context overflow or an id out of range is
 * an error before anything is evaluated. */
int mp_session_eval(mp_session *s, const int32_t *ids, size_t n, float *logits_last, float *logits_all,
                    mp_error *err);

/* Optional instrumentation: hidden states after each layer of the last eval
 * (for tests against the reference). NULL unless enabled before the eval. */
void mp_session_capture_hidden(mp_session *s, bool on);
/* layer 0 = embeddings, L+1 = after decoder layer L (the last one after the final norm) */
const float *mp_session_hidden(const mp_session *s, uint32_t layer);

/* ---- sampling ----------------------------------------------------------- */

typedef struct mp_sampler_opts {
    float temperature; /* 0: greedy */
    float top_p;       /* 1: off */
    uint32_t top_k;    /* 0: off */
    uint64_t seed;
} mp_sampler_opts;

typedef struct mp_sampler mp_sampler;
int mp_sampler_new(const mp_sampler_opts *o, uint32_t vocab, mp_sampler **out, mp_error *err);
void mp_sampler_free(mp_sampler *s);
/* Picks a token from logits (not modified). Same seed + same logits = same tokens. */
int32_t mp_sampler_sample(mp_sampler *s, const float *logits);

#endif
