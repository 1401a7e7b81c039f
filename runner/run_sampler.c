/* Token sampling: greedy, or temperature with optional top-k and top-p, from a
 * seeded generator (splitmix64 to seed, xoshiro256** to draw), so the same
 * seed and the same logits give the same tokens on any machine. Probabilities
 * are computed in double; every buffer is allocated at creation.
 *
 * OpenAI's logit_bias and presence/frequency penalties, when set, change a
 * scratch copy of the logits first; without them the caller's logits are
 * read directly, so the results stay what they were before these existed. */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "mp_rand.h"
#include "mp_runner.h"

typedef struct mp_cand {
    float v;
    uint32_t id;
} mp_cand;

struct mp_sampler {
    mp_sampler_opts o;
    uint32_t vocab;
    uint64_t st[4];
    mp_cand *c; /* [vocab] candidates */
    double *p;  /* [vocab] their probabilities */
    /* the adjustment stage, allocated only when a bias or penalty is set */
    bool adjust, penalize;
    mp_logit_bias *bias; /* [o.n_logit_bias], o.logit_bias points here */
    float *adjusted;     /* [vocab] the logits after bias and penalties */
    uint32_t *count;     /* [vocab] times each token was returned */
    uint32_t *sampled;   /* [n_sampled] the distinct tokens returned, first time first */
    uint32_t n_sampled;
};

void mp_sampler_opts_default(mp_sampler_opts *o)
{
    memset(o, 0, sizeof *o);
    o->top_p = 1.0f;
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t next_u64(mp_sampler *s)
{
    uint64_t *st = s->st;
    uint64_t r = rotl(st[1] * 5, 7) * 9, t = st[1] << 17;
    st[2] ^= st[0];
    st[3] ^= st[1];
    st[1] ^= st[2];
    st[0] ^= st[3];
    st[2] ^= t;
    st[3] = rotl(st[3], 45);
    return r;
}

/* Uniform in [0, 1) with 53 random bits. */
static double next_unit(mp_sampler *s)
{
    return (double)(next_u64(s) >> 11) * (1.0 / 9007199254740992.0);
}

int mp_sampler_new(const mp_sampler_opts *o, uint32_t vocab, mp_sampler **out, mp_error *err)
{
    *out = NULL;
    if (!(o->temperature >= 0.0f) || !isfinite(o->temperature))
        return mp_fail(err, MP_ERR_USAGE, NULL, NULL, "temperature %g must be a finite number >= 0", (double)o->temperature);
    if (!(o->top_p > 0.0f && o->top_p <= 1.0f))
        return mp_fail(err, MP_ERR_USAGE, NULL, NULL, "top-p %g must be in (0, 1]", (double)o->top_p);
    if (vocab == 0)
        return mp_fail(err, MP_ERR_USAGE, NULL, NULL, "empty vocabulary");
    if (!(fabsf(o->presence_penalty) <= 2.0f))
        return mp_fail(err, MP_ERR_USAGE, NULL, NULL, "presence penalty %g must be in [-2, 2]",
                       (double)o->presence_penalty);
    if (!(fabsf(o->frequency_penalty) <= 2.0f))
        return mp_fail(err, MP_ERR_USAGE, NULL, NULL, "frequency penalty %g must be in [-2, 2]",
                       (double)o->frequency_penalty);
    if (o->n_logit_bias && !o->logit_bias)
        return mp_fail(err, MP_ERR_USAGE, NULL, NULL, "%u logit biases without their list", o->n_logit_bias);
    for (uint32_t i = 0; i < o->n_logit_bias; i++) {
        const mp_logit_bias *b = &o->logit_bias[i];
        if (b->id >= vocab)
            return mp_fail(err, MP_ERR_USAGE, NULL, NULL, "logit bias for token %u, beyond the %u tokens", b->id,
                           vocab);
        if (!(fabsf(b->value) <= 100.0f))
            return mp_fail(err, MP_ERR_USAGE, NULL, NULL, "logit bias %g for token %u must be in [-100, 100]",
                           (double)b->value, b->id);
    }
    mp_sampler *s = calloc(1, sizeof *s);
    if (!s)
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "out of memory");
    s->o = *o;
    s->o.logit_bias = NULL;
    s->vocab = vocab;
    s->c = malloc(vocab * sizeof *s->c);
    s->p = malloc(vocab * sizeof *s->p);
    if (!s->c || !s->p) {
        mp_sampler_free(s);
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "out of memory");
    }
    s->penalize = o->presence_penalty != 0.0f || o->frequency_penalty != 0.0f;
    s->adjust = s->penalize || o->n_logit_bias > 0;
    if (s->adjust) {
        s->adjusted = malloc(vocab * sizeof *s->adjusted);
        s->count = calloc(vocab, sizeof *s->count);
        s->sampled = malloc(vocab * sizeof *s->sampled);
        s->bias = o->n_logit_bias ? malloc(o->n_logit_bias * sizeof *s->bias) : NULL;
        if (!s->adjusted || !s->count || !s->sampled || (o->n_logit_bias && !s->bias)) {
            mp_sampler_free(s);
            return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "out of memory");
        }
        if (o->n_logit_bias)
            memcpy(s->bias, o->logit_bias, o->n_logit_bias * sizeof *s->bias);
        s->o.logit_bias = s->bias;
        /* a token biased twice would depend on which entry wins: refuse it (count doubles as the mark) */
        for (uint32_t i = 0; i < o->n_logit_bias; i++) {
            if (s->count[s->bias[i].id]++) {
                uint32_t id = s->bias[i].id;
                mp_sampler_free(s);
                return mp_fail(err, MP_ERR_USAGE, NULL, NULL, "logit bias for token %u given twice", id);
            }
        }
        for (uint32_t i = 0; i < o->n_logit_bias; i++)
            s->count[s->bias[i].id] = 0;
    }
    uint64_t x = o->seed;
    for (int i = 0; i < 4; i++)
        s->st[i] = mp_splitmix64_next(&x);
    *out = s;
    return MP_OK;
}

void mp_sampler_free(mp_sampler *s)
{
    if (!s)
        return;
    free(s->c);
    free(s->p);
    free(s->bias);
    free(s->adjusted);
    free(s->count);
    free(s->sampled);
    free(s);
}

int32_t mp_greedy_token(const float *logits, uint32_t vocab)
{
    uint32_t best = 0;
    for (uint32_t i = 1; i < vocab; i++)
        if (logits[i] > logits[best])
            best = i;
    return (int32_t)best;
}

/* Candidates ordered by larger logit first, then lower id, so the order never
 * depends on the sort algorithm. */
static int cmp_cand(const void *a, const void *b)
{
    const mp_cand *x = a, *y = b;
    if (x->v != y->v)
        return x->v > y->v ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static bool cand_before(const mp_cand *x, const mp_cand *y)
{
    return x->v > y->v || (x->v == y->v && x->id < y->id);
}

/* The best `keep` of c[0..n) sorted into c[0..keep). */
static void select_best(mp_cand *c, uint32_t n, uint32_t keep)
{
    if (keep >= n || keep > 256) { /* a large k: a full sort is as good */
        qsort(c, n, sizeof *c, cmp_cand);
        return;
    }
    /* insertion into a sorted prefix; most candidates fail the first test */
    for (uint32_t i = 0; i < n; i++) {
        mp_cand v = c[i];
        uint32_t pos = i < keep ? i : keep;
        if (pos == keep) {
            if (!cand_before(&v, &c[keep - 1]))
                continue;
            pos = keep - 1;
        }
        while (pos > 0 && cand_before(&v, &c[pos - 1])) {
            c[pos] = c[pos - 1];
            pos--;
        }
        c[pos] = v;
    }
}

/* OpenAI's order: logit[j] + bias[j] - count[j] * frequency - (count[j] > 0) * presence, into s->adjusted. */
static const float *adjust_logits(mp_sampler *s, const float *logits)
{
    memcpy(s->adjusted, logits, s->vocab * sizeof *s->adjusted);
    for (uint32_t i = 0; i < s->o.n_logit_bias; i++)
        s->adjusted[s->bias[i].id] += s->bias[i].value;
    for (uint32_t i = 0; i < s->n_sampled; i++) {
        uint32_t id = s->sampled[i];
        s->adjusted[id] -= (float)s->count[id] * s->o.frequency_penalty + s->o.presence_penalty;
    }
    return s->adjusted;
}

/* Every candidate after c[keep - 1] whose logit equals its logit, appended
 * after it (HF's TopKLogitsWarper removes only logits below the k-th largest).
 * c[0..keep) holds the best keep by (logit, then lower id), so the tied ones
 * left out all have higher ids; they are appended in id order, which keeps
 * c sorted. Returns the new count. */
static uint32_t add_ties(mp_cand *c, uint32_t keep, const float *logits, uint32_t V)
{
    const float kth = c[keep - 1].v;
    uint32_t n = keep;
    for (uint32_t id = c[keep - 1].id + 1; id < V; id++)
        if (logits[id] == kth)
            c[n++] = (mp_cand){.v = kth, .id = id};
    return n;
}

/* The choice from logits as they are: greedy, or a draw after top-k and top-p. */
static int32_t pick(mp_sampler *s, const float *logits)
{
    const uint32_t V = s->vocab;
    if (s->o.temperature == 0.0f)
        return mp_greedy_token(logits, V);
    uint32_t n = V;
    for (uint32_t i = 0; i < V; i++) {
        s->c[i].v = logits[i];
        s->c[i].id = i;
    }
    uint32_t keep = s->o.top_k && s->o.top_k < V ? s->o.top_k : V;
    if (keep < V || s->o.top_p < 1.0f) {
        select_best(s->c, n, keep);
        n = keep < V ? add_ties(s->c, keep, logits, V) : keep;
    }
    /* softmax of logit / T over the candidates, max-subtracted */
    double mx = -INFINITY;
    for (uint32_t i = 0; i < n; i++)
        if (s->c[i].v > mx)
            mx = s->c[i].v;
    double inv_t = 1.0 / (double)s->o.temperature, sum = 0.0;
    for (uint32_t i = 0; i < n; i++) {
        s->p[i] = exp(((double)s->c[i].v - mx) * inv_t);
        sum += s->p[i];
    }
    if (!(sum > 0.0) || !isfinite(sum)) /* NaN or infinite logits: the best one */
        return mp_greedy_token(logits, V);
    if (s->o.top_p < 1.0f) {
        /* the smallest prefix of the sorted candidates whose mass reaches top_p */
        double target = (double)s->o.top_p * sum, acc = 0.0;
        for (uint32_t i = 0; i < n; i++) {
            acc += s->p[i];
            if (acc >= target) {
                n = i + 1;
                sum = acc;
                break;
            }
        }
    }
    double r = next_unit(s) * sum, acc = 0.0;
    for (uint32_t i = 0; i < n; i++) {
        acc += s->p[i];
        if (r < acc)
            return (int32_t)s->c[i].id;
    }
    return (int32_t)s->c[n - 1].id;
}

int32_t mp_sampler_sample(mp_sampler *s, const float *logits)
{
    if (!s->adjust)
        return pick(s, logits);
    int32_t id = pick(s, adjust_logits(s, logits));
    if (s->penalize && s->count[id]++ == 0)
        s->sampled[s->n_sampled++] = (uint32_t)id;
    return id;
}
