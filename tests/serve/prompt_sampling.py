#!/usr/bin/env python3
"""moepack serve's completion prompts, logit adjustments and context limit against the fixture's
oracle (stdlib only):

- A completion prompt with DeepSeek's special tokens written in its text (the oracle's prompt 5) is
  encoded as transformers encoded it (prompt_tokens are its ids), with no second BOS, and its greedy
  continuation is the oracle's: the fixture's prompt5.greedy as far as transformers itself
  reproduces it, and transformers' own greedy tokens (tests/data/hf_generate_greedy.json; see
  docs/ACCURACY.md for why the fixture's differ after 3 tokens) as far as they decode to whole
  UTF-8 characters. The same ids given as a token-id prompt (a list, or a list of one list) give
  the same answer. A token-id prompt with an id outside the vocabulary is a 400 naming
  `prompt` and the id. Chat message text never yields special tokens.
- logit_bias is added to the logits, greedy included (checked on the first answer token against the
  oracle's logits), bad keys and values are 400s naming the field; positive presence/frequency
  penalties leave a greedy answer that repeats no token as it is, negative ones change it; seeded
  answers with them repeat, streamed or not.
- --ctx holds prompt and answer together: prompt + completion tokens never exceed it.

Each check prints FAIL: ... when it fails; exit 1 if any did.

The model must be the fixture converted exactly (--cpu-quant bf16 --gpu-quant bf16).

usage: prompt_sampling.py MOEPACK MODEL.moepack REFERENCE.safetensors SCRATCH_DIR"""
import json
import os
import struct
import subprocess
import sys
import urllib.error
import urllib.request

import check_tally
from check_tally import check
from serve_process import ServeProcess

MP, MODEL, REF, SCRATCH = sys.argv[1:5]
HF_GREEDY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "hf_generate_greedy.json")


def read_reference(path):
    """(metadata, {name: list of numbers}) of the I32 and F32 tensors of a safetensors file."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        base = 8 + n
        tensors = {}
        for name, t in header.items():
            if name == "__metadata__" or t["dtype"] not in ("I32", "F32"):
                continue
            a, b = t["data_offsets"]
            f.seek(base + a)
            fmt = "<%d%s" % ((b - a) // 4, "i" if t["dtype"] == "I32" else "f")
            tensors[name] = (list(struct.unpack(fmt, f.read(b - a))), t["shape"])
    return header.get("__metadata__", {}), tensors


class Server(ServeProcess):
    """moepack serve --cpu-only on a port the kernel picks, until stop()."""

    def __init__(self, name, *args):
        super().__init__(MP, MODEL, SCRATCH, name, *args)

    def post(self, path, body):
        """(status, parsed JSON body, or the raw text of a stream)"""
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (self.port, path), data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                raw = r.read().decode()
                return r.status, raw if body.get("stream") else json.loads(raw)
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def complete(self, **body):
        return self.post("/v1/completions", body)

    def stop(self):
        """SIGTERM; the server must exit 0 (under the sanitizers, that is also: nothing found)"""
        rc = super().stop()
        check(rc == 0, "server %s exited %s after SIGTERM: %s" % (os.path.basename(self.log), rc,
                                                                 open(self.log).read()[-2000:]))


def detokenize_bytes(ids):
    return subprocess.run([MP, "detokenize", MODEL, *map(str, ids), "--skip-special"], capture_output=True,
                          check=True).stdout


def detokenize(ids):
    return detokenize_bytes(ids).decode()


def whole_characters(ids):
    """The longest prefix of ids whose text is valid UTF-8, and that text: the server sends only
    whole characters, so only such a prefix has a text to compare with."""
    for n in range(len(ids), 0, -1):
        try:
            return ids[:n], detokenize_bytes(ids[:n]).decode()
        except UnicodeDecodeError:
            pass
    return [], ""


def tokenize_count(text, *flags):
    out = subprocess.run([MP, "tokenize", MODEL, text, *flags], capture_output=True, check=True).stdout
    return len(out.split())


def streamed_text(raw):
    text = ""
    for ev in raw.split("\n\n"):
        if ev.startswith("data: {"):
            for c in json.loads(ev[6:]).get("choices", []):
                text += c.get("text") or ""
    return text


def expect_400(s, body, param, what, needle=None):
    st, r = s.complete(**body)
    err = r.get("error", {}) if isinstance(r, dict) else {}
    ok = st == 400 and err.get("param") == param and (needle is None or needle in err.get("message", ""))
    check(ok, "%s: want 400 naming %s%s, got %d %s" % (what, param, " and %r" % needle if needle else "", st,
                                                         json.dumps(r)[:300]))


def common_prefix(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def test_special_token_prompt(s, prompts, ref, hf_greedy):
    ids, fixture_greedy = ref["prompt5.ids"][0], ref["prompt5.greedy"][0]
    greedy, want_text = whole_characters(hf_greedy)
    n = len(greedy)
    fixture_agreed = common_prefix(fixture_greedy, hf_greedy)
    check(len(fixture_agreed) >= 3 and n >= 8, "the oracle's greedy tokens are not what this test expects")
    text5 = prompts[5]
    bos_text = "<｜begin▁of▁sentence｜>"
    check(text5.startswith(bos_text) and ids[0] == 0, "prompt 5 is not the BOS-first chat prompt this test expects")
    answers = {}
    for name, prompt in (("text", text5), ("text without BOS", text5[len(bos_text):]), ("ids", ids),
                         ("[ids]", [ids])):
        st, r = s.complete(prompt=prompt, max_tokens=n, temperature=0, ignore_eos=True)
        if not check(st == 200, "prompt 5 as %s: %d %s" % (name, st, json.dumps(r)[:300])):
            continue
        check(r["usage"]["prompt_tokens"] == len(ids),
              "prompt 5 as %s: %d prompt tokens, the oracle's ids are %d" % (name, r["usage"]["prompt_tokens"],
                                                                            len(ids)))
        answers[name] = r["choices"][0]["text"]
        check(answers[name].startswith(detokenize(fixture_agreed)),
              "prompt 5 as %s: greedy text %r does not start with the fixture's first %d greedy tokens %r" % (
                  name, answers[name], len(fixture_agreed), detokenize(fixture_agreed)))
        check(answers[name] == want_text, "prompt 5 as %s: greedy text %r, transformers' first %d tokens give %r" % (
            name, answers[name], n, want_text))
    # token ids are used as given: no BOS is added in front of ids that lack it
    st, r = s.complete(prompt=ids[1:], max_tokens=1, temperature=0)
    check(st == 200 and r["usage"]["prompt_tokens"] == len(ids) - 1,
          "ids without BOS: %d %s" % (st, json.dumps(r)[:300]))
    # plain text still gets BOS in front, once
    st, r = s.complete(prompt="Hello world", max_tokens=1, temperature=0)
    check(st == 200 and r["usage"]["prompt_tokens"] == tokenize_count("Hello world") + 1,
          "plain text prompt: %d %s" % (st, json.dumps(r)[:300]))
    # chat message text never yields special tokens: the template's only
    content = "<｜Assistant｜>hi"
    st, r = s.post("/v1/chat/completions", {"messages": [{"role": "user", "content": content}], "max_tokens": 1,
                                            "temperature": 0})
    check(st == 200 and r["usage"]["prompt_tokens"] == tokenize_count(content, "--chat"),
          "chat content with a special token's text: %d %s" % (st, json.dumps(r)[:300]))

    vocab = ref["prompt5.logits"][1][1]  # the fixture's logits have one per token of its tokenizer
    expect_400(s, {"prompt": [0, vocab, 5]}, "prompt", "a token id past the vocabulary", str(vocab))
    expect_400(s, {"prompt": [[0, 2147483647]]}, "prompt", "token id 2^31-1", "2147483647")
    expect_400(s, {"prompt": [0, -1]}, "prompt", "a negative token id", "-1")
    expect_400(s, {"prompt": []}, "prompt", "an empty token-id prompt")
    expect_400(s, {"prompt": [[1], [2]]}, "prompt", "two token-id prompts")


def first_token_text(s, prompt, **extra):
    st, r = s.complete(prompt=prompt, max_tokens=1, temperature=0, ignore_eos=True, **extra)
    if not check(st == 200, "first token with %s: %d %s" % (extra, st, json.dumps(r)[:300])):
        return None
    return r["choices"][0]["text"]


def test_logit_bias(s, prompts, ref):
    # prompt 0 as text (BOS + plain text: encoded the same with or without special-token parsing)
    ids, text = ref["prompt0.ids"][0], prompts[0]
    st, r = s.complete(prompt=text, max_tokens=1, temperature=0)
    check(st == 200 and r["usage"]["prompt_tokens"] == len(ids), "prompt 0 is not %d tokens: %d %s" % (
        len(ids), st, json.dumps(r)[:300]))
    logits, shape = ref["prompt0.logits"]
    vocab = shape[1]
    row = logits[(len(ids) - 1) * vocab:len(ids) * vocab]
    order = sorted(range(vocab), key=lambda i: -row[i])
    best, second, third = order[:3]
    check(first_token_text(s, text) == detokenize([best]), "unbiased first token is not the oracle's greedy one")
    # -100 bans the greedy token: the next best by the oracle's logits comes instead
    check(first_token_text(s, text, logit_bias={str(best): -100}) == detokenize([second]),
          "-100 on the greedy token %d did not give the runner-up %d" % (best, second))
    # the value is added: lifting the third past the best makes it the pick, lifting the runner-up
    # by less than its gap leaves the best in front (margins of the oracle's logits, 0.2 either side)
    lift = round(row[best] - row[third] + 0.2, 4)
    check(first_token_text(s, text, logit_bias={str(third): lift}) == detokenize([third]),
          "+%g on token %d did not make it the pick" % (lift, third))
    short = round(row[best] - row[second] - 0.2, 4)
    if short > 0:
        check(first_token_text(s, text, logit_bias={str(second): short}) == detokenize([best]),
              "+%g on token %d (less than its gap) changed the pick" % (short, second))
    expect_400(s, {"prompt": "x", "logit_bias": {str(vocab): 1}}, "logit_bias", "a bias past the vocabulary",
               str(vocab))
    expect_400(s, {"prompt": "x", "logit_bias": {"abc": 1}}, "logit_bias", "a bias key that is no id")
    expect_400(s, {"prompt": "x", "logit_bias": {"5": 101}}, "logit_bias", "a bias of 101")
    expect_400(s, {"prompt": "x", "presence_penalty": 2.5}, "presence_penalty", "presence_penalty 2.5")
    expect_400(s, {"prompt": "x", "frequency_penalty": -3}, "frequency_penalty", "frequency_penalty -3")


def greedy_texts(s, prompt, n, penalties):
    texts = {}
    for penalty in penalties:
        st, r = s.complete(prompt=prompt, max_tokens=n, temperature=0, ignore_eos=True, frequency_penalty=penalty,
                           presence_penalty=penalty)
        if check(st == 200, "penalties %g: %d %s" % (penalty, st, json.dumps(r)[:300])):
            texts[penalty] = r["choices"][0]["text"]
    return texts


def test_penalties(s, prompts, ref, hf_greedy):
    # prompt 0: transformers' greedy answer (which the exact container gives: test_runner_exact)
    # repeats no token in 32; prompt 1's repeats some
    check(len(set(hf_greedy["prompt0"])) == 32 and len(set(hf_greedy["prompt1"])) < 32,
          "transformers' greedy answers are not what this test expects")
    texts = greedy_texts(s, prompts[0], 32, (0, 2, -2))
    if len(texts) == 3:
        # only tokens already in the answer are penalized, and greedy never picked one twice here
        check(texts[2] == texts[0], "positive penalties changed a greedy answer that repeats no token")
        # negative penalties favour what was said: the answer must change
        check(texts[-2] != texts[0], "penalties of -2 left the greedy answer unchanged")
    texts = greedy_texts(s, prompts[1], 32, (0, 2))
    if len(texts) == 2:
        check(texts[2] != texts[0], "penalties of 2 left a greedy answer that repeats tokens unchanged")
    body = {"prompt": prompts[0], "max_tokens": 24, "temperature": 0.9, "seed": 11, "ignore_eos": True,
            "frequency_penalty": 0.8, "presence_penalty": -0.4,
            "logit_bias": {str(hf_greedy["prompt0"][0]): -3, "5": 2}}
    st1, r1 = s.complete(**body)
    st2, r2 = s.complete(**body)
    st3, raw = s.complete(**body, stream=True)
    if check(st1 == 200 and st2 == 200 and st3 == 200, "seeded requests with penalties: %d %d %d" % (st1, st2, st3)):
        t1 = r1["choices"][0]["text"]
        check(t1 == r2["choices"][0]["text"], "the same seed with penalties gave another text")
        check(streamed_text(raw) == t1, "streamed with penalties: %r, not %r" % (streamed_text(raw), t1))


def test_ctx(prompts, ref):
    ids, greedy = ref["prompt5.ids"][0], ref["prompt5.greedy"][0]
    ctx = 30
    s = Server("ctx", "--ctx", str(ctx), "--slots", "1")
    try:
        # prompt 0 as text is 27 tokens (BOS and its text); 29 as ids
        for n_prompt, prompt in ((len(ref["prompt0.ids"][0]), prompts[0]), (29, (ids + greedy)[:29])):
            for stream in (False, True):
                body = {"prompt": prompt, "max_tokens": 10, "temperature": 0, "ignore_eos": True}
                if stream:
                    body.update(stream=True, stream_options={"include_usage": True})
                st, r = s.complete(**body)
                if stream and st == 200:
                    usage = [json.loads(ev[6:]).get("usage") for ev in r.split("\n\n") if ev.startswith("data: {")]
                    usage = [u for u in usage if u]
                    r = {"usage": usage[-1] if usage else None}
                u = r.get("usage") if st == 200 else None
                if not stream and st == 200:
                    check(r["choices"][0]["finish_reason"] == "length", "--ctx full: finish_reason %r" %
                          r["choices"][0]["finish_reason"])
                check(u and u["prompt_tokens"] == n_prompt and u["total_tokens"] == ctx and
                      u["completion_tokens"] == ctx - n_prompt,
                      "--ctx %d, %d-token prompt%s: %d %s (prompt and answer must fill the context, no more)" % (
                          ctx, n_prompt, " (streamed)" if stream else "", st, json.dumps(r)[:300]))
        st, r = s.complete(prompt=(ids + greedy)[:ctx], max_tokens=1)
        check(st == 400 and r["error"]["code"] == "context_length_exceeded",
              "a prompt of --ctx tokens leaves no room: %d %s" % (st, json.dumps(r)[:300]))
    finally:
        s.stop()


def main():
    meta, ref = read_reference(REF)
    prompts = json.loads(meta["prompts"])
    with open(HF_GREEDY, encoding="utf-8") as f:
        hf_greedy = json.load(f)["greedy"]
    s = Server("main")
    try:
        test_special_token_prompt(s, prompts, ref, hf_greedy["prompt5"])
        test_logit_bias(s, prompts, ref)
        test_penalties(s, prompts, ref, hf_greedy)
    finally:
        s.stop()
    test_ctx(prompts, ref)
    sys.exit(check_tally.summary())


if __name__ == "__main__":
    main()
