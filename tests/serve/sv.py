#!/usr/bin/env python3
"""Helpers for the serve tests: `get FILE EXPR` prints a Python expression over the JSON in FILE
(as `d`; strings printed raw, other values as JSON), `sse FILE` checks a server-sent event stream
in OpenAI's shape and prints a JSON summary of it (exit 1 when it is malformed)."""
import json
import sys


def get(path, expr):
    with open(path, encoding="utf-8") as f:
        d = json.load(f)
    v = eval(expr, {"d": d, "len": len})
    print(v if isinstance(v, str) else json.dumps(v))


def sse(path):
    with open(path, "rb") as f:
        raw = f.read().decode("utf-8")
    if not raw.endswith("\n\n"):
        sys.exit("stream does not end with a blank line")
    events = raw[:-2].split("\n\n")
    out = {"content": "", "reasoning": "", "finish": None, "usage": None, "done": False, "chunks": 0,
           "role_first": False, "ids": [], "objects": [], "error": None, "after_done": 0}
    for i, ev in enumerate(events):
        if ev.startswith(":"):  # a comment (keep-alive)
            continue
        if not ev.startswith("data: ") or "\n" in ev:
            sys.exit("malformed event %d: %r" % (i, ev[:200]))
        data = ev[6:]
        if out["done"]:
            out["after_done"] += 1
            continue
        if data == "[DONE]":
            out["done"] = True
            continue
        j = json.loads(data)
        if "error" in j:
            out["error"] = j["error"]
            continue
        out["chunks"] += 1
        if j["id"] not in out["ids"]:
            out["ids"].append(j["id"])
        if j["object"] not in out["objects"]:
            out["objects"].append(j["object"])
        if j.get("usage"):
            out["usage"] = j["usage"]
        for c in j["choices"]:
            if c.get("finish_reason"):
                out["finish"] = c["finish_reason"]
            if "delta" in c:
                d = c["delta"]
                if out["chunks"] == 1 and d.get("role") == "assistant":
                    out["role_first"] = True
                out["content"] += d.get("content") or ""
                out["reasoning"] += d.get("reasoning_content") or ""
            else:
                out["content"] += c.get("text") or ""
    print(json.dumps(out))


if __name__ == "__main__":
    if sys.argv[1] == "get":
        get(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "sse":
        sse(sys.argv[2])
    else:
        sys.exit("usage: sv.py get FILE EXPR | sse FILE")
