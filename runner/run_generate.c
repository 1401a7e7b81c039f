/* The generation loop shared by run, chat and serve: reuse the cached prefix,
 * evaluate the rest of the prompt in batches, then sample and evaluate one
 * token at a time. */
#include <inttypes.h>
#include <string.h>
#include <time.h>

#include "mp_forward.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int mp_generate(mp_session *s, mp_sampler *smp, const int32_t *prompt, size_t n_prompt, uint32_t max_new,
                bool stop_at_eos, mp_token_fn on_token, void *user, mp_gen_stats *st, mp_error *err)
{
    mp_gen_stats local;
    if (!st)
        st = &local;
    memset(st, 0, sizeof *st);
    mp_model *m = mp_session_model(s);
    uint32_t ctx = mp_session_ctx(s), V = mp_model_vocab(m);
    if (n_prompt == 0)
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "the prompt is empty");
    if (n_prompt > ctx)
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "the prompt has %zu tokens, more than the context of %u (raise --ctx)",
                       n_prompt, ctx);
    for (size_t i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || (uint32_t)prompt[i] >= V)
            return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "prompt token id %" PRId32 " is not in [0, %u)", prompt[i], V);

    /* keep the common prefix; the last prompt token is evaluated again unless
     * the session ends exactly there with its logits at hand */
    uint32_t keep = mp_session_common_prefix(s, prompt, n_prompt);
    if (keep == n_prompt && !(mp_session_len(s) == n_prompt && mp_session_logits(s)))
        keep = (uint32_t)n_prompt - 1;
    mp_session_truncate(s, keep);
    double t0 = now_s();
    int rc = mp_session_eval(s, prompt + keep, n_prompt - keep, NULL, NULL, err);
    if (rc)
        return rc;
    double t1 = now_s();
    st->prompt_tokens = (uint32_t)n_prompt - keep;
    st->cached_tokens = keep;
    st->prefill_seconds = t1 - t0;

    /* --ctx holds the prompt and the answer together: a sampled token takes a position even when it
     * is the last one and is never evaluated, so prompt + generated stays <= ctx */
    int32_t eos = mp_model_eos(m);
    if (max_new && n_prompt == ctx)
        st->stopped_ctx = true;
    for (uint32_t i = 0; i < max_new && !st->stopped_ctx; i++) {
        int32_t id = mp_sampler_sample(smp, mp_session_logits(s));
        st->generated++;
        bool go_on = on_token ? on_token(id, user) : true;
        if (stop_at_eos && id == eos) {
            st->stopped_eos = true;
            break;
        }
        if (!go_on || i + 1 == max_new)
            break;
        if (mp_session_len(s) + 1 == ctx) { /* id took the last position */
            st->stopped_ctx = true;
            break;
        }
        if ((rc = mp_session_eval(s, &id, 1, NULL, NULL, err)))
            break;
    }
    st->decode_seconds = now_s() - t1;
    return rc;
}
