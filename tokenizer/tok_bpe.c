/* The BPE merge engine for one pre-tokenized piece.
 *
 * The piece starts as one symbol per byte (the token of that byte's alphabet character); then the
 * adjacent pair with the lowest merge rank is merged, leftmost first on ties, until no pair has a
 * merge. This is HF `tokenizers`' Word::merge_all: a min-heap of candidate pairs keyed by
 * (rank, position) over a linked list of symbols, where popped entries that no longer describe the
 * current pair are skipped. O(n log n) in the piece length. */
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

void mp_bpe_scratch_free(mp_bpe_scratch *s)
{
    free(s->sym);
    free(s->heap);
    memset(s, 0, sizeof *s);
}

static bool entry_less(const mp_bpe_entry *a, const mp_bpe_entry *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(mp_bpe_scratch *s, mp_bpe_entry e)
{
    size_t i = s->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!entry_less(&e, &s->heap[p]))
            break;
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = e;
}

static mp_bpe_entry heap_pop(mp_bpe_scratch *s)
{
    mp_bpe_entry top = s->heap[0];
    mp_bpe_entry last = s->heap[--s->heap_n];
    size_t i = 0, n = s->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && entry_less(&s->heap[c + 1], &s->heap[c]))
            c++;
        if (!entry_less(&s->heap[c], &last))
            break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (n > 0)
        s->heap[i] = last;
    return top;
}

static void try_pair(const mp_tokenizer *t, mp_bpe_scratch *s, int32_t left)
{
    int32_t right = s->sym[left].next;
    if (right < 0)
        return;
    int32_t result;
    int64_t rank = mp_tok_merge_find(t, s->sym[left].id, s->sym[right].id, &result);
    if (rank >= 0)
        heap_push(s, (mp_bpe_entry){.rank = (uint32_t)rank, .pos = (uint32_t)left, .result = result});
}

int mp_bpe_encode_piece(const mp_tokenizer *t, const uint8_t *piece, size_t n, mp_bpe_scratch *s, mp_tokens *out,
                        mp_error *err)
{
    if (n == 0)
        return MP_OK;
    if (t->ignore_merges || n == 1) {
        int32_t whole = mp_tok_bpe_find(t, (const char *)piece, n);
        if (whole >= 0)
            return mp_tokens_push(out, whole, err);
    }
    if (n > INT32_MAX / 4)
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "a pre-tokenized piece of %zu bytes is too long", n);
    if (s->sym_cap < n) {
        mp_bpe_symbol *sym = realloc(s->sym, n * sizeof *sym);
        mp_bpe_entry *heap = realloc(s->heap, 3 * n * sizeof *heap);
        if (sym)
            s->sym = sym;
        if (heap)
            s->heap = heap;
        if (!sym || !heap)
            return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "out of memory encoding a piece of %zu bytes", n);
        s->sym_cap = n;
    }
    /* one symbol per byte; a byte without a token becomes the unknown token, or is dropped when
     * there is none (what HF's BPE does without byte_fallback) */
    int32_t m = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = t->byte_token[piece[i]];
        if (id < 0)
            id = t->unk_id;
        if (id < 0)
            continue;
        s->sym[m] = (mp_bpe_symbol){.id = id, .prev = m - 1, .next = -1, .len = 1};
        if (m > 0)
            s->sym[m - 1].next = m;
        m++;
    }
    if (m == 0)
        return MP_OK;
    s->heap_n = 0;
    for (int32_t i = 0; i + 1 < m; i++)
        try_pair(t, s, i);
    while (s->heap_n > 0) {
        mp_bpe_entry e = heap_pop(s);
        mp_bpe_symbol *l = &s->sym[e.pos];
        if (l->len == 0 || l->next < 0)
            continue;
        mp_bpe_symbol *r = &s->sym[l->next];
        int32_t result;
        if (mp_tok_merge_find(t, l->id, r->id, &result) < 0 || result != e.result)
            continue; /* stale: one side was merged with something else since */
        l->id = result;
        l->len += r->len;
        r->len = 0;
        l->next = r->next;
        if (l->next >= 0)
            s->sym[l->next].prev = (int32_t)e.pos;
        if (l->prev >= 0)
            try_pair(t, s, l->prev);
        try_pair(t, s, (int32_t)e.pos);
    }
    for (int32_t i = 0; i >= 0; i = s->sym[i].next) {
        int rc = mp_tokens_push(out, s->sym[i].id, err);
        if (rc)
            return rc;
    }
    return MP_OK;
}
