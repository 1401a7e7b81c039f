/* Private parts of the tokenizer shared by its modules (not for other modules). */
#ifndef MP_TOK_INTERNAL_H
#define MP_TOK_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tok_pretok.h"
#include "tokenizer.h"

/* Hard caps on what a tokenizer may hold: far above any real vocabulary (DeepSeek-V3 has 129280
 * tokens, ~127k merges, tokens of at most a few hundred bytes) and low enough that a hostile input
 * cannot make us allocate gigabytes. */
#define MP_TOK_MAX_TOKENS (1u << 22)
#define MP_TOK_MAX_MERGES (1u << 22)
#define MP_TOK_MAX_TOKEN_LEN (1u << 16)
#define MP_TOK_MAX_TEXT_TOTAL (1u << 26) /* all token texts together */
#define MP_TOK_MAX_ADDED_TEXT (1u << 22) /* CONTROL/USER_DEFINED/UNKNOWN texts together (the trie) */
#define MP_TOK_MAX_CHAT_TEMPLATE (1u << 22)

/* Per-token flag bits (mp_tokenizer.tflags). */
enum {
    MP_TOKF_BPE = 1, /* a NORMAL token whose text is all in the byte-level alphabet */
};

/* ---- byte-level alphabet and UTF-8 (tok_bytes.c) ------------------------------------------- */

/* The code point GPT-2's byte-to-unicode table assigns to byte b. */
uint32_t mp_bytelevel_char(uint8_t b);
/* The byte a code point stands for, or -1 when it is not in the alphabet. */
int mp_bytelevel_byte(uint32_t cp);

/* Decodes one UTF-8 character at s[0..n); returns its length (1..4) and sets *cp, or 0 when the
 * bytes there are not a valid, shortest-form, non-surrogate character <= U+10FFFF. */
size_t mp_utf8_decode(const uint8_t *s, size_t n, uint32_t *cp);
/* Writes cp as UTF-8 into out (4 bytes room); returns the length. */
size_t mp_utf8_encode(uint32_t cp, char *out);
/* Offset of the first invalid byte, or n when all of s[0..n) is valid UTF-8. */
size_t mp_utf8_valid_prefix(const uint8_t *s, size_t n);

/* ---- hash tables (tok_vocab.c) -------------------------------------------------------------- */

uint64_t mp_tok_hash_bytes(const void *p, size_t n);
uint64_t mp_tok_hash_u64(uint64_t x);

/* Added-token trie: a byte trie whose nodes sit in one array; the root's children are indexed
 * directly by first byte because the root is visited at every input position. */
typedef struct mp_tok_trie_node {
    uint32_t first_child; /* 0: none (node 0 is the root, never a child) */
    uint32_t next_sibling;
    int32_t token; /* -1: no token ends here */
    uint8_t byte;
} mp_tok_trie_node;

typedef struct mp_tok_trie {
    mp_tok_trie_node *nodes;
    uint32_t n, cap;
    uint32_t root_child[256];
} mp_tok_trie;

struct mp_tokenizer {
    uint32_t n_tokens;
    uint8_t *types;  /* MP_TOKEN_ values */
    uint8_t *tflags; /* MP_TOKF_ bits */
    /* the spec text of each token (kept for serialization): text + text_off[i] .. text_off[i+1] */
    uint32_t *text_off;
    char *text;
    /* the bytes each token decodes to */
    uint32_t *raw_off;
    char *raw;

    int32_t byte_token[256]; /* the BPE token of each single byte, -1 when the vocabulary lacks it */

    uint32_t n_merges;
    int32_t *merge_lr; /* [2*rank], [2*rank+1]: the left and right token of each merge */
    int32_t *merge_result;
    uint32_t *merge_slots; /* open addressing over (left, right): rank+1, 0 = empty */
    uint32_t merge_mask;

    uint32_t *bpe_slots; /* open addressing over the raw bytes of MP_TOKF_BPE tokens: id+1 */
    uint32_t bpe_mask;
    uint32_t *added_slots; /* same, over the text of CONTROL/USER_DEFINED/UNKNOWN tokens */
    uint32_t added_mask;

    mp_tok_trie trie; /* CONTROL, UNKNOWN and USER_DEFINED token texts */
    bool has_added;

    mp_pretok *pre;
    char *pre_name;

    int32_t bos_id, eos_id, unk_id;
    bool add_bos, add_eos, ignore_merges;
    char *chat_template; /* NUL-terminated copy, NULL when none */
    size_t chat_template_len;
};

static inline const char *mp_tok_raw(const mp_tokenizer *t, int32_t id, size_t *len)
{
    *len = t->raw_off[id + 1] - t->raw_off[id];
    return t->raw + t->raw_off[id];
}

static inline const char *mp_tok_text(const mp_tokenizer *t, int32_t id, size_t *len)
{
    *len = t->text_off[id + 1] - t->text_off[id];
    return t->text + t->text_off[id];
}

/* The merge of (left, right): its rank, or -1 (result in *result). */
int64_t mp_tok_merge_find(const mp_tokenizer *t, int32_t left, int32_t right, int32_t *result);
/* A BPE token by its raw bytes, -1 when none. */
int32_t mp_tok_bpe_find(const mp_tokenizer *t, const char *s, size_t n);
int32_t mp_tok_added_find(const mp_tokenizer *t, const char *s, size_t n);

/* ---- BPE (tok_bpe.c) ------------------------------------------------------------------------ */

typedef struct mp_bpe_symbol {
    int32_t id;
    int32_t prev, next;
    uint32_t len; /* bytes covered; 0 once merged into its left neighbour */
} mp_bpe_symbol;

typedef struct mp_bpe_entry {
    uint32_t rank;
    uint32_t pos;
    int32_t result;
} mp_bpe_entry;

typedef struct mp_bpe_scratch {
    mp_bpe_symbol *sym;
    size_t sym_cap;
    mp_bpe_entry *heap;
    size_t heap_n; /* the heap has room for 3 * sym_cap entries: n-1 pairs + 2 per merge */
} mp_bpe_scratch;

/* Appends the BPE ids of one pre-tokenized piece (raw bytes). */
int mp_bpe_encode_piece(const mp_tokenizer *t, const uint8_t *piece, size_t n, mp_bpe_scratch *s, mp_tokens *out,
                        mp_error *err);
void mp_bpe_scratch_free(mp_bpe_scratch *s);

/* ---- the special-token trie (tok_special.c) ------------------------------------------------- */

int mp_tok_trie_init(mp_tok_trie *tr);
int mp_tok_trie_insert(mp_tok_trie *tr, const char *s, size_t n, int32_t token);
void mp_tok_trie_free(mp_tok_trie *tr);
/* The longest token allowed by `parse_special` that starts at s[0..n), its length in *len; -1
 * when none does. */
int32_t mp_tok_trie_match(const mp_tokenizer *t, const uint8_t *s, size_t n, bool parse_special, size_t *len);

/* ---- building (tok_build.c) ----------------------------------------------------------------- */

/* Resolves the built-in pre-tokenizer `name` into its regex list. */
int mp_pretok_builtin(const char *name, const char *const **regexes, uint32_t *n);
/* The built-in name whose regex list equals these regexes exactly, or NULL. */
const char *mp_pretok_builtin_match(const mp_tok_str *regexes, uint32_t n);

#endif
