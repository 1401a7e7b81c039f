#!/usr/bin/env python3
"""The official `openai` package against moepack serve: models, chat (plain and streamed, with
usage), completions, an error status. Usage: openai_client.py BASE_URL API_KEY. Exit 77 when the
package is not installed (pip install openai)."""
import sys

try:
    import openai
except ImportError:
    print("SKIP: the openai package is not installed (pip install openai)")
    sys.exit(77)

base, key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=60)
fails = 0


def check(cond, what):
    global fails
    if not cond:
        fails += 1
        print("FAIL:", what, file=sys.stderr)


models = client.models.list()
model = models.data[0].id
check(model == "tiny", "model id %r" % model)

msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the capital of France?"}]
r = client.chat.completions.create(model=model, messages=msgs, temperature=0, max_tokens=20)
text = r.choices[0].message.content
check(r.object == "chat.completion" and r.choices[0].message.role == "assistant", "chat shape")
check(r.choices[0].finish_reason in ("stop", "length"), "finish_reason %r" % r.choices[0].finish_reason)
check(r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens, "usage")
check(bool(text), "empty answer")

stream = client.chat.completions.create(model=model, messages=msgs, temperature=0, max_tokens=20, stream=True,
                                        stream_options={"include_usage": True})
parts, finish, usage = [], None, None
for chunk in stream:
    check(chunk.object == "chat.completion.chunk", "chunk object %r" % chunk.object)
    if chunk.usage:
        usage = chunk.usage
    for c in chunk.choices:
        if c.delta.content:
            parts.append(c.delta.content)
        if c.finish_reason:
            finish = c.finish_reason
check("".join(parts) == text, "streamed %r != %r" % ("".join(parts), text))
check(finish == r.choices[0].finish_reason, "stream finish %r" % finish)
check(usage is not None and usage.completion_tokens == r.usage.completion_tokens, "stream usage %r" % usage)

c = client.completions.create(model=model, prompt="Once upon a time", temperature=0, max_tokens=10)
check(c.object == "text_completion" and c.choices[0].text is not None, "completion shape")
cs = client.completions.create(model=model, prompt="Once upon a time", temperature=0, max_tokens=10, stream=True)
check("".join(x.choices[0].text for x in cs if x.choices) == c.choices[0].text, "streamed completion")

try:
    client.chat.completions.create(model=model, messages=msgs, n=2)
    check(False, "n=2 accepted")
except openai.BadRequestError as e:
    check(e.status_code == 400 and "n" in str(e), "n=2 error %r" % e)

bad = openai.OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0)
try:
    bad.models.list()
    check(False, "wrong key accepted")
except openai.AuthenticationError as e:
    check(e.status_code == 401, "401")

print("%s: %d failures" % ("openai client", fails))
sys.exit(1 if fails else 0)
