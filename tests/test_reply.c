/* runner/mp_reply: how `moepack run` / `chat` stream a reply, with R1 reasoning shown apart:
 * between [thinking] / [/thinking] markers into a file or pipe, dim (SGR 2 ... SGR 0) on a
 * terminal, and not at all with a tokenizer that has no <think> tokens. Also when a prompt counts
 * as having opened the block (mp_chat_prompt_opens_think): R1's generation prompt ends with
 * "<think>\n", R1-0528's lets the model write <think> itself.
 *
 * The tokenizers are `moepack synth` ones: the tiny preset's (V3 family: <think> and </think>
 * are added, non-special tokens), the same with the think tokens made special (CONTROL, as in the
 * fixture's tokenizer: they must be seen and kept all the same) and DeepSeek-V2's (no think
 * tokens). Expected outputs are written out by hand. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "mp_reply.h"
#include "mp_test.h"
#include "synth.h"
#include "tokenizer.h"

#define DIM "\x1b[2m"
#define RESET "\x1b[0m"

static mp_tokenizer *synth_tokenizer(const char *tmp, mp_synth_preset preset)
{
    const char *dir = mp_test_path(tmp, mp_synth_preset_name(preset));
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
    REQUIRE(system(cmd) == 0);
    mp_synth_options o;
    mp_synth_options_init(&o);
    o.preset = preset;
    o.dry_run = true; /* config, tokenizer and index: no weights */
    mp_synth_result res;
    mp_error err = {0};
    int rc = mp_synth_run(&o, dir, &res, &err);
    CHECKF(rc == MP_OK, "synth %s: %s", mp_synth_preset_name(preset), err.msg);
    REQUIRE(rc == MP_OK);
    mp_tokenizer *tok = NULL;
    rc = mp_tokenizer_load_hf(dir, &tok, &err);
    CHECKF(rc == MP_OK, "%s", err.msg);
    REQUIRE(rc == MP_OK);
    return tok;
}

/* The tiny preset's tokenizer with <think> and </think> made special (CONTROL), as the fixture's
 * tokenizer.json has them: the printer must see and keep them all the same. */
static mp_tokenizer *control_think_tokenizer(const char *tmp)
{
    const char *src = mp_test_path(tmp, mp_synth_preset_name(MP_SYNTH_TINY));
    char dir[4096], cmd[8400];
    snprintf(dir, sizeof dir, "%s", mp_test_path(tmp, "control-think"));
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' && cp '%s/tokenizer_config.json' '%s/'", dir, src, dir);
    REQUIRE(system(cmd) == 0);
    json_error_t je;
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer.json", src);
    json_t *root = json_load_file(path, 0, &je);
    REQUIRE(root);
    size_t i, flipped = 0;
    json_t *added;
    json_array_foreach(json_object_get(root, "added_tokens"), i, added)
    {
        const char *c = json_string_value(json_object_get(added, "content"));
        if (c && (!strcmp(c, "<think>") || !strcmp(c, "</think>"))) {
            json_object_set(added, "special", json_true());
            flipped++;
        }
    }
    REQUIRE(flipped == 2);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    REQUIRE(json_dump_file(root, path, 0) == 0);
    json_decref(root);
    mp_tokenizer *tok = NULL;
    mp_error err = {0};
    int rc = mp_tokenizer_load_hf(dir, &tok, &err);
    CHECKF(rc == MP_OK, "%s", err.msg);
    REQUIRE(rc == MP_OK);
    REQUIRE(mp_tokenizer_token_type(tok, mp_tokenizer_find(tok, "</think>", 8)) == MP_TOKEN_CONTROL);
    return tok;
}

/* A token sequence built piece by piece: text (encoded) or single ids. */
typedef struct {
    const mp_tokenizer *tok;
    mp_tokens ids;
} seq;

static void add_text(seq *s, const char *text)
{
    mp_error err = {0};
    REQUIRE(mp_tokenizer_encode(s->tok, text, strlen(text), 0, &s->ids, &err) == MP_OK);
}

static void add_id(seq *s, int32_t id)
{
    mp_error err = {0};
    REQUIRE(id >= 0 && mp_tokens_push(&s->ids, id, &err) == MP_OK);
}

/* Streams s through a printer; returns what it printed (malloc'd) and, in *kept, the text it
 * kept for the history (malloc'd, "" when none). */
static char *print_reply(const seq *s, bool tty, bool start_in_think, char **kept)
{
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    REQUIRE(f);
    mp_reply_printer p;
    mp_reply_printer_init(&p, s->tok, f, tty, start_in_think);
    bool all = true;
    for (size_t i = 0; i < s->ids.n; i++)
        all &= mp_reply_printer_token(s->ids.ids[i], &p);
    CHECK(all && !p.failed);
    mp_reply_printer_finish(&p);
    CHECK(!p.failed);
    *kept = strdup(p.text ? p.text : "");
    mp_reply_printer_free(&p);
    REQUIRE(fclose(f) == 0 && *kept);
    return out;
}

static void expect_reply(const char *what, const seq *s, bool tty, bool start_in_think, const char *want,
                         const char *want_kept)
{
    char *kept;
    char *got = print_reply(s, tty, start_in_think, &kept);
    CHECKF(strcmp(got, want) == 0, "%s (%s): printed '%s', want '%s'", what, tty ? "tty" : "pipe", got, want);
    CHECKF(strcmp(kept, want_kept) == 0, "%s (%s): kept '%s', want '%s'", what, tty ? "tty" : "pipe", kept,
           want_kept);
    free(got);
    free(kept);
}

static void test_with_think_tokens(const mp_tokenizer *tok)
{
    const int32_t open = mp_tokenizer_find(tok, "<think>", 7), close = mp_tokenizer_find(tok, "</think>", 8);
    REQUIRE(open >= 0 && close >= 0 && open != close);

    /* R1: the prompt opened the block, the reply starts inside it and </think> ends it */
    seq r1 = {tok, {0}};
    add_text(&r1, "Weigh it: 2+2.");
    add_id(&r1, close);
    add_text(&r1, "\n\nThe answer is 4.");
    const char *r1_kept = "Weigh it: 2+2.</think>\n\nThe answer is 4.";
    expect_reply("R1 reply", &r1, false, true, "[thinking]\nWeigh it: 2+2.[/thinking]\n\nThe answer is 4.\n", r1_kept);
    expect_reply("R1 reply", &r1, true, true, DIM "Weigh it: 2+2." RESET "\n\nThe answer is 4.\n", r1_kept);
    /* the same tokens after a prompt that opened nothing: </think> alone is text */
    expect_reply("stray </think>", &r1, false, false, "Weigh it: 2+2.</think>\n\nThe answer is 4.\n", r1_kept);
    expect_reply("stray </think>", &r1, true, false, "Weigh it: 2+2.</think>\n\nThe answer is 4.\n", r1_kept);

    /* R1-0528: the model opens the block itself */
    seq own = {tok, {0}};
    add_id(&own, open);
    add_text(&own, "\nhmm");
    add_id(&own, close);
    add_text(&own, "\n\nOK");
    const char *own_kept = "<think>\nhmm</think>\n\nOK";
    expect_reply("model opens", &own, false, false, "[thinking]\nhmm[/thinking]\n\nOK\n", own_kept);
    expect_reply("model opens", &own, true, false, DIM "\nhmm" RESET "\n\nOK\n", own_kept);

    /* cut off inside the block (-n reached): the terminal is reset, the marker left open */
    seq cut = {tok, {0}};
    add_text(&cut, "still thinking");
    expect_reply("cut off", &cut, true, true, DIM "still thinking" RESET "\n", "still thinking");
    expect_reply("cut off", &cut, false, true, "[thinking]\nstill thinking[/thinking]\n", "still thinking");

    /* no reasoning at all (V3-style reply): nothing but the text */
    seq plain = {tok, {0}};
    add_text(&plain, "Plain answer.");
    expect_reply("plain", &plain, true, false, "Plain answer.\n", "Plain answer.");
    expect_reply("plain", &plain, false, false, "Plain answer.\n", "Plain answer.");

    /* other special tokens print nothing and are not kept */
    seq eos = {tok, {0}};
    add_text(&eos, "done");
    add_id(&eos, mp_tokenizer_eos(tok));
    expect_reply("EOS", &eos, false, false, "done\n", "done");
    mp_tokens_free(&eos.ids);

    /* the kept text is what chat's next prompt re-renders: R1's template drops the reasoning */
    mp_chat_msg turns[] = {{MP_CHAT_USER, "hi", 2}, {MP_CHAT_ASSISTANT, "", 0}, {MP_CHAT_USER, "again", 5}};
    char *kept;
    free(print_reply(&r1, false, true, &kept));
    turns[1].content = kept;
    turns[1].len = strlen(kept);
    mp_tokens with = {0}, want = {0};
    mp_error err = {0};
    REQUIRE(mp_chat_encode(tok, MP_CHAT_DEEPSEEK_R1, turns, 3, true, &with, &err) == MP_OK);
    turns[1].content = "\n\nThe answer is 4.";
    turns[1].len = strlen(turns[1].content);
    REQUIRE(mp_chat_encode(tok, MP_CHAT_DEEPSEEK_R1, turns, 3, true, &want, &err) == MP_OK);
    CHECKF(with.n == want.n && !memcmp(with.ids, want.ids, want.n * sizeof *want.ids),
           "the next prompt has %zu tokens, %zu without the reasoning", with.n, want.n);
    mp_tokens_free(&with);
    mp_tokens_free(&want);
    free(kept);

    /* a token the tokenizer does not have stops generation with the error */
    mp_reply_printer p;
    FILE *devnull = fopen("/dev/null", "w");
    REQUIRE(devnull);
    mp_reply_printer_init(&p, tok, devnull, false, false);
    CHECK(!mp_reply_printer_token((int32_t)mp_tokenizer_n_tokens(tok) + 5, &p));
    CHECK(p.failed && p.err.code == MP_ERR_INPUT && p.err.msg[0]);
    mp_reply_printer_free(&p);
    fclose(devnull);

    mp_tokens_free(&r1.ids);
    mp_tokens_free(&own.ids);
    mp_tokens_free(&cut.ids);
    mp_tokens_free(&plain.ids);
}

/* DeepSeek-V2's vocabulary has no think tokens: "<think>" text is ordinary BPE pieces and no
 * block is ever shown, even when asked to start inside one. */
static void test_without_think_tokens(const mp_tokenizer *tok)
{
    REQUIRE(mp_tokenizer_find(tok, "<think>", 7) < 0 && mp_tokenizer_find(tok, "</think>", 8) < 0);
    seq s = {tok, {0}};
    add_text(&s, "<think>\nhmm</think>\n\nOK");
    CHECK(s.ids.n > 2);
    const char *text = "<think>\nhmm</think>\n\nOK";
    for (int tty = 0; tty < 2; tty++)
        for (int start = 0; start < 2; start++)
            expect_reply("no think tokens", &s, tty, start, "<think>\nhmm</think>\n\nOK\n", text);
    mp_tokens_free(&s.ids);
}

static bool opens(const mp_tokenizer *tok, mp_chat_format fmt)
{
    const char *user = "hi";
    mp_chat_msg m = {MP_CHAT_USER, user, strlen(user)};
    mp_tokens ids = {0};
    mp_error err = {0};
    REQUIRE(mp_chat_encode(tok, fmt, &m, 1, true, &ids, &err) == MP_OK);
    bool o = mp_chat_prompt_opens_think(tok, ids.ids, ids.n);
    mp_tokens_free(&ids);
    return o;
}

static void test_prompt_opens_think(const mp_tokenizer *tok)
{
    CHECK(opens(tok, MP_CHAT_DEEPSEEK_R1));
    CHECK(!opens(tok, MP_CHAT_DEEPSEEK_R1_0528)); /* its model writes <think> itself */
    CHECK(!opens(tok, MP_CHAT_DEEPSEEK_V3));
    CHECK(!opens(tok, MP_CHAT_DEEPSEEK_V3_0324));
    const int32_t open = mp_tokenizer_find(tok, "<think>", 7);
    seq s = {tok, {0}};
    CHECK(!mp_chat_prompt_opens_think(tok, s.ids.ids, 0));
    add_text(&s, "Question?");
    CHECK(!mp_chat_prompt_opens_think(tok, s.ids.ids, s.ids.n));
    add_id(&s, open);
    CHECK(mp_chat_prompt_opens_think(tok, s.ids.ids, s.ids.n));
    add_text(&s, "\n\n ");
    CHECK(mp_chat_prompt_opens_think(tok, s.ids.ids, s.ids.n));
    add_text(&s, "x");
    CHECK(!mp_chat_prompt_opens_think(tok, s.ids.ids, s.ids.n));
    mp_tokens_free(&s.ids);
}

int main(void)
{
    const char *tmp = mp_test_tmpdir("test_reply");
    mp_tokenizer *tiny = synth_tokenizer(tmp, MP_SYNTH_TINY);
    test_with_think_tokens(tiny);
    test_prompt_opens_think(tiny);
    mp_tokenizer_free(tiny);
    mp_tokenizer *control = control_think_tokenizer(tmp);
    test_with_think_tokens(control);
    test_prompt_opens_think(control);
    mp_tokenizer_free(control);
    mp_tokenizer *v2 = synth_tokenizer(tmp, MP_SYNTH_DEEPSEEK_V2);
    test_without_think_tokens(v2);
    mp_tokenizer_free(v2);
    return mp_test_finish();
}
