#!/usr/bin/env python3
"""Load test for moepack serve on loopback: C concurrent clients send R requests in total (chat and
completions, streamed and not, greedy, bounded max_tokens) over P distinct prompts. Every answer
must equal the single-client answer for its prompt, so a lost, mixed-up or cross-talking request
fails the test. Prints latency percentiles and throughput.

usage: load.py URL [--clients 8] [--requests 200] [--prompts 16] [--max-tokens 8] [--key K]"""
import argparse
import http.client
import json
import sys
import threading
import time
import urllib.parse


def request(url, key, path, body):
    """POSTs body; returns (status, text, finish, usage, seconds, first_token_seconds)."""
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = "Bearer " + key
    t0 = time.perf_counter()
    conn.request("POST", path, json.dumps(body), headers)
    r = conn.getresponse()
    first = None
    if not body.get("stream"):
        data = json.loads(r.read())
        conn.close()
        dt = time.perf_counter() - t0
        if r.status != 200:
            return r.status, json.dumps(data), None, None, dt, None
        c = data["choices"][0]
        text = c["message"]["content"] if "message" in c else c["text"]
        return 200, text, c["finish_reason"], data["usage"], dt, dt
    if r.status != 200:
        return r.status, r.read().decode(), None, None, time.perf_counter() - t0, None
    text, finish, usage, done = "", None, None, False
    while True:
        line = r.readline()
        if not line:
            break
        line = line.decode().rstrip("\n")
        if not line.startswith("data: "):
            continue
        data = line[6:]
        if data == "[DONE]":
            done = True
            break
        j = json.loads(data)
        if j.get("usage"):
            usage = j["usage"]
        for c in j["choices"]:
            piece = (c.get("delta") or {}).get("content") if "delta" in c else c.get("text")
            if piece:
                if first is None:
                    first = time.perf_counter() - t0
                text += piece
            if c.get("finish_reason"):
                finish = c["finish_reason"]
    conn.close()
    return (200 if done else 599), text, finish, usage, time.perf_counter() - t0, first


def body_for(kind, stream, prompt, max_tokens):
    b = {"temperature": 0, "max_tokens": max_tokens, "stream": stream}
    if stream:
        b["stream_options"] = {"include_usage": True}
    if kind == "chat":
        b["messages"] = [{"role": "user", "content": prompt}]
    else:
        b["prompt"] = prompt
    return b


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--key", default="")
    a = ap.parse_args()

    prompts = ["Question %d: what comes after %d and before %d? Answer in words." % (i, i * 7, i * 7 + 2)
               for i in range(a.prompts)]
    kinds = [("chat", "/v1/chat/completions"), ("completion", "/v1/completions")]
    # the single-client answers
    ref = {}
    for kind, path in kinds:
        for i, p in enumerate(prompts):
            st, text, finish, usage, _, _ = request(a.url, a.key, path, body_for(kind, False, p, a.max_tokens))
            if st != 200:
                sys.exit("reference request failed: %d %s" % (st, text))
            ref[(kind, i)] = (text, finish, usage["completion_tokens"])

    jobs = list(range(a.requests))
    lock = threading.Lock()
    results = {}

    def worker():
        while True:
            with lock:
                if not jobs:
                    return
                n = jobs.pop(0)
            kind, path = kinds[n % 2]
            i = (n * 7) % a.prompts
            stream = (n // 2) % 2 == 1
            try:
                res = request(a.url, a.key, path, body_for(kind, stream, prompts[i], a.max_tokens))
            except Exception as e:  # a lost request is a failure, not a crash of the test
                res = (0, repr(e), None, None, 0.0, None)
            with lock:
                results[n] = (kind, i, stream) + res

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(a.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0

    bad = 0
    for n in range(a.requests):
        if n not in results:
            print("request %d: lost" % n)
            bad += 1
            continue
        kind, i, stream, st, text, finish, usage, dt, first = results[n]
        want = ref[(kind, i)]
        if st != 200 or text != want[0] or finish != want[1] or (usage and usage["completion_tokens"] != want[2]):
            bad += 1
            if bad <= 5:
                print("request %d (%s, prompt %d, stream %s): status %d, %r / %r, want %r / %r"
                      % (n, kind, i, stream, st, text[:80], finish, want[0][:80], want[1]))
    lat = [results[n][7] for n in results]
    ttft = [results[n][8] for n in results if results[n][2] and results[n][8] is not None]
    toks = sum(ref[(results[n][0], results[n][1])][2] for n in results)
    print("%d requests, %d clients, max_tokens %d: %d wrong or lost" % (a.requests, a.clients, a.max_tokens, bad))
    print("latency s: p50 %.3f  p90 %.3f  p99 %.3f  max %.3f" % (pct(lat, 50), pct(lat, 90), pct(lat, 99), max(lat)))
    if ttft:
        print("first token s (streamed): p50 %.3f  p90 %.3f  p99 %.3f" % (pct(ttft, 50), pct(ttft, 90), pct(ttft, 99)))
    print("wall %.2f s: %.1f requests/s, %.0f generated tokens/s" % (wall, a.requests / wall, toks / wall))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
