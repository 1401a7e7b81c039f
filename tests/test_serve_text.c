/* The server's text filters and request parser, without a model or sockets:
 * stop sequences never leak (not even in part) whatever the token split,
 * <think> splitting, and the 400s of the OpenAI request checks. */
#include <string.h>

#include "mp_test.h"
#include "serve_internal.h"
#include "test_rand.h"

/* Reference: the text up to the earliest occurrence of any stop. */
static size_t ref_cut(const char *text, const char *const *stops, size_t n)
{
    size_t cut = strlen(text);
    for (size_t i = 0; i < n; i++) {
        const char *hit = strstr(text, stops[i]);
        if (hit && (size_t)(hit - text) < cut)
            cut = (size_t)(hit - text);
    }
    return cut;
}

/* Feeds text in pieces cut at `cuts`; checks that every release is a prefix of the final answer. */
static void stop_case(const char *text, const char *const *stops, size_t n_stops, const size_t *cuts, size_t n_cuts)
{
    size_t want = ref_cut(text, stops, n_stops);
    mp_stop_filter f;
    mp_stop_filter_init(&f, stops, n_stops);
    mp_sbuf out = {0};
    size_t at = 0, len = strlen(text);
    for (size_t c = 0; c <= n_cuts; c++) {
        size_t end = c < n_cuts ? cuts[c] : len;
        CHECK(mp_stop_filter_push(&f, text + at, end - at, &out));
        CHECKF(out.n <= want && (!out.n || !memcmp(out.p, text, out.n)), "'%s': released '%.*s' beyond '%.*s'", text,
               (int)out.n, out.p ? out.p : "", (int)want, text);
        at = end;
    }
    bool stopped = f.stopped;
    CHECK(mp_stop_filter_flush(&f, &out));
    CHECKF(out.n == want && (!want || !memcmp(out.p, text, want)), "'%s': got '%.*s', want '%.*s'", text, (int)out.n,
           out.p ? out.p : "", (int)want, text);
    CHECK(stopped == (want < len));
    mp_stop_filter_free(&f);
    mp_sbuf_free(&out);
}

static void test_stop_filter(void)
{
    const char *stops[] = {"\n\nUser", "###", "ab"};
    const char *texts[] = {"hello world", "hello\n\nUser: hi", "x##y###z", "no stop\n\nUse", "cab", "a", "",
                           "\n\n\n\nUser"};
    for (size_t t = 0; t < sizeof texts / sizeof texts[0]; t++) {
        size_t len = strlen(texts[t]);
        stop_case(texts[t], stops, 3, NULL, 0);
        for (size_t a = 0; a <= len; a++)
            for (size_t b = a; b <= len; b++) {
                size_t cuts[2] = {a, b};
                stop_case(texts[t], stops, 3, cuts, 2);
            }
    }
    /* random texts over a small alphabet, random splits, overlapping stops */
    const char *rstops[] = {"aab", "ba", "bbb"};
    mp_rng r = {0x5e7e};
    for (int iter = 0; iter < 3000; iter++) {
        char text[40];
        size_t len = (uint32_t)mp_rng_u64(&r) % 39;
        for (size_t i = 0; i < len; i++)
            text[i] = "abc"[(uint32_t)mp_rng_u64(&r) % 3];
        text[len] = 0;
        size_t cuts[6], n = 0, at = 0;
        while (n < 6 && at < len) {
            at += 1 + (uint32_t)mp_rng_u64(&r) % 4;
            if (at > len)
                at = len;
            cuts[n++] = at;
        }
        stop_case(text, rstops, 1 + (uint32_t)mp_rng_u64(&r) % 3, cuts, n);
    }
    /* no stops: everything passes at once */
    mp_stop_filter f;
    mp_stop_filter_init(&f, NULL, 0);
    mp_sbuf out = {0};
    CHECK(mp_stop_filter_push(&f, "abc", 3, &out) && out.n == 3);
    mp_stop_filter_free(&f);
    mp_sbuf_free(&out);
}

static void think_case(const char *text, bool enabled, bool inside, const char *want_r, const char *want_c)
{
    size_t len = strlen(text);
    /* every two-piece split gives the same result */
    for (size_t cut = 0; cut <= len; cut++) {
        mp_think_split t;
        mp_think_split_init(&t, enabled, inside);
        mp_sbuf r = {0}, c = {0};
        CHECK(mp_think_split_push(&t, text, cut, &r, &c));
        CHECK(mp_think_split_push(&t, text + cut, len - cut, &r, &c));
        CHECK(mp_think_split_flush(&t, &r, &c));
        CHECKF(r.n == strlen(want_r) && !memcmp(r.p ? r.p : "", want_r, r.n), "'%s' cut %zu: reasoning '%.*s'", text,
               cut, (int)r.n, r.p ? r.p : "");
        CHECKF(c.n == strlen(want_c) && !memcmp(c.p ? c.p : "", want_c, c.n), "'%s' cut %zu: content '%.*s'", text, cut,
               (int)c.n, c.p ? c.p : "");
        mp_think_split_free(&t);
        mp_sbuf_free(&r);
        mp_sbuf_free(&c);
    }
}

static void test_think(void)
{
    think_case("<think>\nweigh it</think>\n\nThe answer.", true, false, "weigh it", "The answer.");
    think_case("\n<think>a<b</think>c", true, false, "a<b", "c");
    think_case("weigh it\n</think>\n\nThe answer.", true, true, "weigh it\n", "The answer.");
    think_case("Plain answer <think> not at start", true, false, "", "Plain answer <think> not at start");
    think_case("  <thin", true, false, "", "  <thin");
    think_case("unfinished </thi", true, true, "unfinished </thi", "");
    think_case("<think>x</think>", false, false, "", "<think>x</think>");
    think_case("  keep leading space", false, false, "", "  keep leading space");
}

static void expect_400(mp_req_kind kind, const char *body, const char *param)
{
    mp_serve_req req;
    mp_api_error e = {0};
    bool ok = mp_api_parse(kind, body, strlen(body), &req, &e);
    CHECKF(!ok && e.status == 400, "accepted: %s", body);
    if (!ok && param)
        CHECKF(!strcmp(e.param, param), "%s: param '%s', want '%s'", body, e.param, param);
    if (ok)
        mp_api_req_free(&req);
}

static void test_parse(void)
{
    mp_serve_req req;
    mp_api_error e = {0};
    const char *good =
        "{\"model\":\"x\",\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hi \"},{\"type\":\"text\","
        "\"text\":\"there\"}]}],\"temperature\":0.5,\"top_p\":0.9,\"max_tokens\":7,\"stop\":[\"a\",\"bc\"],"
        "\"seed\":-3,\"stream\":true,\"stream_options\":{\"include_usage\":true},\"user\":\"u\","
        "\"presence_penalty\":0}";
    REQUIRE(mp_api_parse(MP_REQ_CHAT, good, strlen(good), &req, &e));
    CHECK(req.n_msgs == 2 && req.msgs[0].role == MP_CHAT_SYSTEM && req.msgs[1].role == MP_CHAT_USER);
    CHECK(req.msgs[1].len == 8 && !memcmp(req.msgs[1].content, "Hi there", 8));
    CHECK(req.sampler.temperature == 0.5f && req.sampler.top_p == 0.9f && req.max_tokens == 7);
    CHECK(req.n_stops == 2 && !strcmp(req.stops[1], "bc"));
    CHECK(req.seed_set && req.sampler.seed == (uint64_t)-3 && req.stream && req.include_usage);
    mp_api_req_free(&req);

    const char *comp = "{\"prompt\":[\"Once\"],\"stop\":\"\\n\",\"max_tokens\":null}";
    REQUIRE(mp_api_parse(MP_REQ_COMPLETION, comp, strlen(comp), &req, &e));
    CHECK(req.prompt_len == 4 && req.n_stops == 1 && req.max_tokens == 0 && !req.stream && !req.seed_set);
    mp_api_req_free(&req);

    expect_400(MP_REQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}", NULL);
    expect_400(MP_REQ_CHAT, "[1,2]", NULL);
    expect_400(MP_REQ_CHAT, "{}", "messages");
    expect_400(MP_REQ_CHAT, "{\"messages\":[]}", "messages");
    expect_400(MP_REQ_CHAT, "{\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}", "messages[0].role");
    expect_400(MP_REQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"user\",\"content\":5}]}",
               "messages[1].content");
    expect_400(MP_REQ_CHAT, "{\"messages\":[{\"role\":\"user\"}]}", "messages[0].content");
    expect_400(MP_REQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}",
               "messages[0].content");
    const char *m = "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]";
    char body[512];
    static const struct {
        const char *field, *param;
    } bad_fields[] = {
        {"\"n\":2", "n"},
        {"\"n\":\"1\"", "n"},
        {"\"max_tokens\":-5", "max_tokens"},
        {"\"max_tokens\":0", "max_tokens"},
        {"\"max_tokens\":1.5", "max_tokens"},
        {"\"max_completion_tokens\":-1", "max_completion_tokens"},
        {"\"temperature\":2.5", "temperature"},
        {"\"temperature\":\"hot\"", "temperature"},
        {"\"top_p\":0", "top_p"},
        {"\"stream\":1", "stream"},
        {"\"stop\":5", "stop"},
        {"\"stop\":[\"\"]", "stop"},
        {"\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\",\"j\",\"k\",\"l\",\"m\",\"n\",\"o\",\"p\","
         "\"q\"]",
         "stop"},
        {"\"seed\":\"x\"", "seed"},
        {"\"model\":3", "model"},
        {"\"logprobs\":true", "logprobs"},
        {"\"stream_options\":[]", "stream_options"},
        {"\"tools\":[{\"type\":\"function\"}]", "tools"},
    };
    for (size_t i = 0; i < sizeof bad_fields / sizeof bad_fields[0]; i++) {
        snprintf(body, sizeof body, "{%s,%s}", m, bad_fields[i].field);
        expect_400(MP_REQ_CHAT, body, bad_fields[i].param);
    }
    expect_400(MP_REQ_COMPLETION, "{\"prompt\":7}", "prompt");
    expect_400(MP_REQ_COMPLETION, "{\"prompt\":[\"a\",\"b\"]}", "prompt");
    expect_400(MP_REQ_COMPLETION, "{\"prompt\":\"a\",\"echo\":true}", "echo");

    /* the error body has OpenAI's shape */
    mp_api_error_set(&e, 400, "invalid_request_error", NULL, "n", "only n = %d", 1);
    char *json = mp_api_error_json(&e);
    CHECKF(json && !strcmp(json, "{\"error\":{\"message\":\"only n = 1\",\"type\":\"invalid_request_error\","
                                 "\"param\":\"n\",\"code\":null}}"),
           "%s", json ? json : "(null)");
    free(json);
}

int main(void)
{
    test_stop_filter();
    test_think();
    test_parse();
    return mp_test_finish();
}
