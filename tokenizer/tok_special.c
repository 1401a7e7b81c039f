/* Added-token matching: a byte trie of the CONTROL / UNKNOWN / USER_DEFINED token texts, searched
 * for the longest token starting at a position (HF matches added tokens leftmost-longest). */
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

int mp_tok_trie_init(mp_tok_trie *tr)
{
    memset(tr, 0, sizeof *tr);
    tr->cap = 64;
    tr->nodes = calloc(tr->cap, sizeof *tr->nodes);
    if (!tr->nodes)
        return -1;
    tr->n = 1; /* the root */
    tr->nodes[0].token = -1;
    return 0;
}

void mp_tok_trie_free(mp_tok_trie *tr)
{
    free(tr->nodes);
    memset(tr, 0, sizeof *tr);
}

static uint32_t trie_new_node(mp_tok_trie *tr, uint8_t byte)
{
    if (tr->n == tr->cap) {
        if (tr->cap > UINT32_MAX / 2)
            return 0;
        uint32_t cap = tr->cap * 2;
        mp_tok_trie_node *nodes = realloc(tr->nodes, (size_t)cap * sizeof *nodes);
        if (!nodes)
            return 0;
        tr->nodes = nodes;
        tr->cap = cap;
    }
    uint32_t id = tr->n++;
    tr->nodes[id] = (mp_tok_trie_node){.first_child = 0, .next_sibling = 0, .token = -1, .byte = byte};
    return id;
}

static uint32_t trie_child(const mp_tok_trie *tr, uint32_t node, uint8_t byte)
{
    if (node == 0)
        return tr->root_child[byte];
    for (uint32_t c = tr->nodes[node].first_child; c; c = tr->nodes[c].next_sibling)
        if (tr->nodes[c].byte == byte)
            return c;
    return 0;
}

int mp_tok_trie_insert(mp_tok_trie *tr, const char *s, size_t n, int32_t token)
{
    uint32_t node = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t b = (uint8_t)s[i];
        uint32_t c = trie_child(tr, node, b);
        if (!c) {
            c = trie_new_node(tr, b);
            if (!c)
                return -1;
            if (node == 0) {
                tr->root_child[b] = c;
            } else {
                tr->nodes[c].next_sibling = tr->nodes[node].first_child;
                tr->nodes[node].first_child = c;
            }
        }
        node = c;
    }
    tr->nodes[node].token = token;
    return 0;
}

int32_t mp_tok_trie_match(const mp_tokenizer *t, const uint8_t *s, size_t n, bool parse_special, size_t *len)
{
    const mp_tok_trie *tr = &t->trie;
    int32_t best = -1;
    uint32_t node = 0;
    for (size_t i = 0; i < n; i++) {
        node = trie_child(tr, node, s[i]);
        if (!node)
            break;
        int32_t tok = tr->nodes[node].token;
        if (tok >= 0 && (parse_special || t->types[tok] == MP_TOKEN_USER_DEFINED)) {
            best = tok;
            *len = i + 1;
        }
    }
    return best;
}
