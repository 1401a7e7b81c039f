# moepack serve over HTTP with curl: the OpenAI shapes (chat, completions, streaming and not),
# stop sequences, seeds, every error status, a client that disconnects mid-stream, a full queue,
# KV-cache reuse across the turns of a conversation, shutdown.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../serve/lib_serve.sh"
D=$(tmpdir cli_serve)
make_model "$D"
KEY=test-key-123
# the page compiled into the binary is the one in serve/page.html
python3 "$(dirname "$0")/../../serve/gen_page.py" --check && ok || fail "serve/serve_page.c is stale"
AUTH=(-H "Authorization: Bearer $KEY")

start_server "$D/srv.log" "$D/tiny.moepack" --threads 1 --slots 2 --api-key "$KEY" --max-body 65536 --ctx 4096 --timeout 10
MAIN_PID=$SRV_PID

# ---- health, models, page ----------------------------------------------------------------
curl -s "$URL/health" >"$D/h.json"
expect_eq "$(js "$D/h.json" 'd["status"]')" ok "health status"
expect_eq "$(js "$D/h.json" 'd["slots"]')" 2 "health slots"
expect_eq "$(curl -s -o "$D/m.json" -w '%{http_code}' "${AUTH[@]}" "$URL/v1/models")" 200 "models status"
expect_eq "$(js "$D/m.json" '[d["object"], d["data"][0]["id"], d["data"][0]["object"]]')" '["list", "tiny", "model"]' "models"
page_headers=$(curl -s -D - -o "$D/page.html" "$URL/")
expect_in "$page_headers" 'HTTP/1.1 200'
expect_in "$page_headers" 'Content-Security-Policy: default-src .none.'
expect_in "$(cat "$D/page.html")" '<title>moepack chat</title>'
if grep -Eq '(src|href)="(https?:)?//' "$D/page.html"; then fail "page loads external resources"; else ok; fi

# ---- chat: non-streaming and streaming agree (greedy) --------------------------------------
CHAT='{"model":"tiny","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Name three colours."}],"temperature":0,"max_tokens":24}'
expect_eq "$(post /v1/chat/completions "$CHAT" "$D/c1.json" "${AUTH[@]}")" 200 "chat status"
expect_eq "$(js "$D/c1.json" 'd["object"]')" chat.completion "chat object"
expect_in "$(js "$D/c1.json" 'd["id"]')" '^chatcmpl-'
expect_eq "$(js "$D/c1.json" 'd["model"]')" tiny "chat model"
expect_eq "$(js "$D/c1.json" 'd["choices"][0]["message"]["role"]')" assistant "chat role"
expect_in "$(js "$D/c1.json" 'd["choices"][0]["finish_reason"]')" '^(stop|length)$'
expect_eq "$(js "$D/c1.json" 'd["usage"]["prompt_tokens"] + d["usage"]["completion_tokens"] == d["usage"]["total_tokens"]')" true "usage sum"
expect_eq "$(js "$D/c1.json" 'd["usage"]["completion_tokens"] <= 24 and d["usage"]["prompt_tokens"] > 5')" true "usage counts"
text1=$(js "$D/c1.json" 'd["choices"][0]["message"]["content"]')
[ -n "$text1" ] && ok || fail "empty chat answer"
# the same request again: same text (greedy), the whole prompt but its last token from the cache
post /v1/chat/completions "$CHAT" "$D/c1b.json" "${AUTH[@]}" >/dev/null
expect_eq "$(js "$D/c1b.json" 'd["choices"][0]["message"]["content"]')" "$text1" "greedy repeat"
expect_eq "$(js "$D/c1b.json" 'd["usage"]["prompt_tokens_details"]["cached_tokens"] == d["usage"]["prompt_tokens"] - 1')" true "repeat cached"

STREAM=${CHAT%\}},\"stream\":true,\"stream_options\":{\"include_usage\":true}}
expect_eq "$(post /v1/chat/completions "$STREAM" "$D/s1.txt" "${AUTH[@]}")" 200 "stream status"
sse "$D/s1.txt" >"$D/s1.json" && ok || fail "bad event stream: $(head -c 300 "$D/s1.txt")"
expect_eq "$(js "$D/s1.json" 'd["content"]')" "$text1" "streamed text = non-streamed text"
expect_eq "$(js "$D/s1.json" '[d["done"], d["after_done"], d["role_first"], d["objects"], len(d["ids"])]')" \
    '[true, 0, true, ["chat.completion.chunk"], 1]' "stream shape"
expect_eq "$(js "$D/s1.json" 'd["finish"]')" "$(js "$D/c1.json" 'd["choices"][0]["finish_reason"]')" "stream finish"
expect_eq "$(js "$D/s1.json" 'd["usage"]["completion_tokens"]')" "$(js "$D/c1.json" 'd["usage"]["completion_tokens"]')" "stream usage"
hdr=$(curl -s -D - -o /dev/null "${AUTH[@]}" -H 'Content-Type: application/json' --data-binary "$STREAM" "$URL/v1/chat/completions")
expect_in "$hdr" 'Content-Type: text/event-stream'

# sampling with a seed is repeatable, streamed or not
SEEDED='{"messages":[{"role":"user","content":"Tell me a story."}],"temperature":0.9,"top_p":0.95,"seed":1234,"max_tokens":20'
post /v1/chat/completions "$SEEDED}" "$D/r1.json" "${AUTH[@]}" >/dev/null
post /v1/chat/completions "$SEEDED,\"stream\":true}" "$D/r2.txt" "${AUTH[@]}" >/dev/null
sse "$D/r2.txt" >"$D/r2.json"
expect_eq "$(js "$D/r2.json" 'd["content"]')" "$(js "$D/r1.json" 'd["choices"][0]["message"]["content"]')" "seeded stream = seeded"

# ---- stop sequences: cut before the first match, streamed or not, never leaked -------------
stop=$(python3 -c 'import sys; t=sys.argv[1]; print(t[len(t)//2:len(t)//2+2])' "$text1")
want=$(python3 -c 'import sys; t,s=sys.argv[1],sys.argv[2]; print(t[:t.index(s)])' "$text1" "$stop")
STOPREQ=$(python3 -c 'import json,sys; print(json.dumps({"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Name three colours."}],"temperature":0,"max_tokens":24,"stop":["\u0001never", sys.argv[1]]}))' "$stop")
post /v1/chat/completions "$STOPREQ" "$D/st.json" "${AUTH[@]}" >/dev/null
expect_eq "$(js "$D/st.json" 'd["choices"][0]["message"]["content"]')" "$want" "stop sequence cut"
expect_eq "$(js "$D/st.json" 'd["choices"][0]["finish_reason"]')" stop "stop finish_reason"
post /v1/chat/completions "${STOPREQ%\}},\"stream\":true}" "$D/st.txt" "${AUTH[@]}" >/dev/null
sse "$D/st.txt" >"$D/st2.json"
expect_eq "$(js "$D/st2.json" 'd["content"]')" "$want" "streamed stop sequence cut"

# ---- completions ---------------------------------------------------------------------------
COMP='{"prompt":"The quick brown fox","temperature":0,"max_tokens":16}'
expect_eq "$(post /v1/completions "$COMP" "$D/p1.json" "${AUTH[@]}")" 200 "completions status"
expect_eq "$(js "$D/p1.json" '[d["object"], d["choices"][0]["index"], d["id"][:5]]')" '["text_completion", 0, "cmpl-"]' "completion shape"
post /v1/completions "${COMP%\}},\"stream\":true}" "$D/p2.txt" "${AUTH[@]}" >/dev/null
sse "$D/p2.txt" >"$D/p2.json"
expect_eq "$(js "$D/p2.json" 'd["content"]')" "$(js "$D/p1.json" 'd["choices"][0]["text"]')" "streamed completion"
expect_eq "$(js "$D/p2.json" '[d["done"], d["objects"]]')" '[true, ["text_completion"]]' "completion stream shape"

# ---- errors: status and OpenAI's error shape -------------------------------------------------
err_case() { # STATUS CODE_OR_- DESCRIPTION CURL_ARGS...
    local want=$1 code=$2 what=$3; shift 3
    local got
    got=$(curl -s -o "$D/e.json" -w '%{http_code}' "$@")
    expect_eq "$got" "$want" "$what: status"
    expect_eq "$(js "$D/e.json" 'sorted(d["error"].keys())')" '["code", "message", "param", "type"]' "$what: error shape"
    [ "$code" = - ] || expect_eq "$(js "$D/e.json" 'd["error"]["code"]')" "$code" "$what: code"
}
J=(-H 'Content-Type: application/json')
err_case 400 invalid_json "bad JSON" "${AUTH[@]}" "${J[@]}" --data-binary '{"messages": [' "$URL/v1/chat/completions"
err_case 400 - "n=2" "${AUTH[@]}" "${J[@]}" --data-binary '{"messages":[{"role":"user","content":"x"}],"n":2}' "$URL/v1/chat/completions"
err_case 400 - "negative max_tokens" "${AUTH[@]}" "${J[@]}" --data-binary '{"messages":[{"role":"user","content":"x"}],"max_tokens":-1}' "$URL/v1/chat/completions"
err_case 400 - "unknown role" "${AUTH[@]}" "${J[@]}" --data-binary '{"messages":[{"role":"wizard","content":"x"}]}' "$URL/v1/chat/completions"
err_case 400 - "wrong type" "${AUTH[@]}" "${J[@]}" --data-binary '{"messages":[{"role":"user","content":"x"}],"temperature":"warm"}' "$URL/v1/chat/completions"
err_case 400 - "no prompt" "${AUTH[@]}" "${J[@]}" --data-binary '{"max_tokens":3}' "$URL/v1/completions"
long=$(python3 -c 'print("hello " * 6000)')
err_case 400 context_length_exceeded "prompt over the context" "${AUTH[@]}" "${J[@]}" --data-binary "{\"prompt\":\"$long\"}" "$URL/v1/completions"
err_case 401 invalid_api_key "missing key" "${J[@]}" --data-binary "$CHAT" "$URL/v1/chat/completions"
err_case 401 invalid_api_key "wrong key" -H "Authorization: Bearer nope" "${J[@]}" --data-binary "$CHAT" "$URL/v1/chat/completions"
err_case 401 invalid_api_key "models without key" "$URL/v1/models"
big=$(head -c 100000 /dev/zero | tr '\0' a)
err_case 413 request_too_large "body over --max-body" "${AUTH[@]}" "${J[@]}" --data-binary "{\"prompt\":\"$big\"}" "$URL/v1/completions"
err_case 413 request_too_large "chunked body over --max-body" "${AUTH[@]}" "${J[@]}" -H 'Transfer-Encoding: chunked' --data-binary "{\"prompt\":\"$big\"}" "$URL/v1/completions"
err_case 404 not_found "unknown path" "$URL/v1/nothing"
err_case 404 not_found "no files from disk" "$URL/../../etc/passwd" --path-as-is
err_case 405 method_not_allowed "GET on a POST path" "${AUTH[@]}" "$URL/v1/chat/completions"
err_case 405 method_not_allowed "POST on a GET path" -X POST "$URL/health"
allow=$(curl -s -D - -o /dev/null "$URL/v1/completions" | tr -d '\r' | sed -n 's/^Allow: //p')
expect_eq "$allow" POST "405 Allow header"
# oversized headers: refused by libmicrohttpd's connection memory limit
hbig=$(head -c 100000 /dev/zero | tr '\0' b)
st=$(curl -s -o /dev/null -w '%{http_code}' -H "X-Big: $hbig" "$URL/health")
expect_in "$st" '^4[0-9][0-9]$'

# ---- a client that hangs up mid-stream frees its slot --------------------------------------
before=$(curl -s "$URL/health")
LONG='{"messages":[{"role":"user","content":"Write a long essay."}],"stream":true,"ignore_eos":true,"max_tokens":4000,"temperature":0}'
# 0.3 s: the tiny model streams 4000 tokens in under a second on a fast machine, and the stream must be cut
curl -s -N --max-time 0.3 "${AUTH[@]}" "${J[@]}" --data-binary "$LONG" "$URL/v1/chat/completions" >"$D/cut.txt"
rc=$?
expect_eq "$rc" 28 "curl --max-time cut the stream"
expect_in "$(head -c 200 "$D/cut.txt")" '^data: '
expect_eq "$(wait_health "$D/h2.json" 'd["slots_busy"]' 0 60 0.05)" yes "slot freed within 3 s of the disconnect"
expect_eq "$(js "$D/h2.json" 'd["cancelled"]')" "$(( $(printf '%s' "$before" | python3 -c 'import json,sys; print(json.load(sys.stdin)["cancelled"])') + 1 ))" "cancelled counter"
expect_eq "$(post /v1/chat/completions "$CHAT" "$D/c3.json" "${AUTH[@]}")" 200 "served after the disconnect"
expect_eq "$(js "$D/c3.json" 'd["choices"][0]["message"]["content"]')" "$text1" "same answer after the disconnect"

# ---- KV cache reuse across turns -----------------------------------------------------------
T1='{"messages":[{"role":"user","content":"Plan a trip to the sea."}],"temperature":0,"max_tokens":12}'
post /v1/chat/completions "$T1" "$D/t1.json" "${AUTH[@]}" >/dev/null
n1=$(js "$D/t1.json" 'd["usage"]["prompt_tokens"]')
a1=$(js "$D/t1.json" 'd["choices"][0]["message"]["content"]')
T2=$(python3 -c 'import json,sys; print(json.dumps({"messages":[{"role":"user","content":"Plan a trip to the sea."},{"role":"assistant","content":sys.argv[1]},{"role":"user","content":"And back?"}],"temperature":0,"max_tokens":12}))' "$a1")
curl -s "$URL/health" >"$D/hb.json"
post /v1/chat/completions "$T2" "$D/t2.json" "${AUTH[@]}" >/dev/null
curl -s "$URL/health" >"$D/ha.json"
n2=$(js "$D/t2.json" 'd["usage"]["prompt_tokens"]')
c2=$(js "$D/t2.json" 'd["usage"]["prompt_tokens_details"]["cached_tokens"]')
[ "$c2" -ge "$n1" ] && ok || fail "second turn reused $c2 tokens, want >= $n1 (the first turn's prompt)"
evald=$(( $(js "$D/ha.json" 'd["prompt_tokens_evaluated"]') - $(js "$D/hb.json" 'd["prompt_tokens_evaluated"]') ))
expect_eq "$evald" "$((n2 - c2))" "second turn evaluated only the new tokens"
[ "$evald" -lt "$n2" ] && ok || fail "second turn evaluated $evald of $n2 prompt tokens"

stop_server "$MAIN_PID"
expect_in "$(cat "$D/srv.log")" 'SIGTERM, stopping'

# ---- a full queue: 503 (one slot, one queue place) -------------------------------------------
start_server "$D/srv2.log" "$D/tiny.moepack" --threads 1 --slots 1 --queue 1 --ctx 4096 --max-tokens 100000
curl -s -N "${J[@]}" --data-binary "$LONG" "$URL/v1/chat/completions" >"$D/a.txt" &
A=$!
expect_eq "$(wait_health "$D/hq.json" 'd["slots_busy"]' 1 500 0.02)" yes "long request running"
post /v1/completions '{"prompt":"queued","max_tokens":4,"temperature":0}' "$D/b.json" >"$D/b.status" &
B=$!
expect_eq "$(wait_health "$D/hq.json" 'd["queued"]' 1 500 0.02)" yes "second request queued"
hdr=$(curl -s -D - -o "$D/c.json" -H 'Content-Type: application/json' --data-binary '{"prompt":"x","max_tokens":2}' "$URL/v1/completions" | tr -d '\r')
expect_in "$hdr" '^HTTP/1.1 503'
expect_in "$hdr" 'Retry-After: 1'
expect_eq "$(js "$D/c.json" 'd["error"]["code"]')" server_busy "503 code"
kill "$A" 2>/dev/null; wait "$A" 2>/dev/null
wait "$B"
expect_eq "$(cat "$D/b.status")" 200 "queued request served once the slot was freed"
expect_eq "$(js "$D/b.json" 'd["object"]')" text_completion "queued request answer"
curl -s "$URL/health" >"$D/h3.json"
expect_eq "$(js "$D/h3.json" '[d["rejected_busy"], d["cancelled"], d["slots_busy"], d["queued"]]')" '[1, 1, 0, 0]' "503 counters"
stop_server "$SRV_PID"

# ---- R1: the answer opens inside <think>: reasoning_content, streamed the same way -----------
make_r1_model "$D"
start_server "$D/srv3.log" "$D/r1.moepack" --threads 1 --slots 1
expect_in "$(cat "$D/srv3.log")" 'deepseek-r1'
R1='{"messages":[{"role":"user","content":"Why is the sky blue?"}],"temperature":0,"max_tokens":16}'
post /v1/chat/completions "$R1" "$D/r1.json" >/dev/null
reasoning=$(js "$D/r1.json" 'd["choices"][0]["message"].get("reasoning_content", "")')
[ -n "$reasoning" ] && ok || fail "no reasoning_content from an R1 model: $(cat "$D/r1.json")"
# the random model never closes the block, so everything is reasoning (the split itself is unit-tested)
expect_eq "$(js "$D/r1.json" 'd["choices"][0]["message"]["content"]')" "" "R1 content"
post /v1/chat/completions "${R1%\}},\"stream\":true}" "$D/r1s.txt" >/dev/null
sse "$D/r1s.txt" >"$D/r1s.json"
expect_eq "$(js "$D/r1s.json" 'd["reasoning"]')" "$reasoning" "streamed reasoning_content"
stop_server "$SRV_PID"

# ---- --prefill-chunk: the prompt read 5 tokens per round gives the same greedy answer ------------
start_server "$D/srv5.log" "$D/tiny.moepack" --threads 1 --slots 1 --prefill-chunk 5
expect_eq "$(post /v1/chat/completions "$CHAT" "$D/c5.json")" 200 "--prefill-chunk 5"
expect_eq "$(js "$D/c5.json" 'd["choices"][0]["message"]["content"]')" "$text1" "--prefill-chunk 5: same answer"
expect_eq "$(js "$D/c5.json" 'd["usage"]["prompt_tokens"] > 5')" true "--prefill-chunk 5: the prompt took several rounds"
stop_server "$SRV_PID"

# ---- the default back end (hybrid on a GPU machine, where the tests above ran with --cpu-only) ---
# answers and cache reuse; the text is not compared across cache states (see start_server)
start_server_default_backend "$D/srv4.log" "$D/tiny.moepack" --threads 2 --slots 1
curl -s "$URL/health" >"$D/h4.json"
expect_in "$(js "$D/h4.json" 'd["backend"]')" '^(cpu \(|hybrid \(cuda \+ )[a-z0-9]+\)$'
GPU8='{"messages":[{"role":"user","content":"Hello there"}],"temperature":0,"max_tokens":8,"ignore_eos":true}'
for i in 1 2; do
    expect_eq "$(post /v1/chat/completions "$GPU8" "$D/g$i.json")" 200 "default back end, request $i"
    expect_eq "$(js "$D/g$i.json" '[d["usage"]["completion_tokens"], len(d["choices"][0]["message"]["content"]) > 0]')" \
        '[8, true]' "default back end, answer $i"
done
expect_eq "$(js "$D/g2.json" 'd["usage"]["prompt_tokens_details"]["cached_tokens"] == d["usage"]["prompt_tokens"] - 1')" true \
    "default back end, repeat cached"
expect_eq "$(post /v1/chat/completions "${GPU8%\}},\"stream\":true,\"stream_options\":{\"include_usage\":true}}" "$D/g3.txt")" 200 \
    "default back end, stream"
sse "$D/g3.txt" >"$D/g3.json" && ok || fail "default back end: bad event stream: $(head -c 300 "$D/g3.txt")"
expect_eq "$(js "$D/g3.json" '[d["done"], d["usage"]["completion_tokens"]]')" '[true, 8]' "default back end, stream shape"
stop_server "$SRV_PID"

# ---- usage errors (timeout: a server that starts by mistake must not hang the test) ------------
expect_exit 1 "$MP" serve
expect_exit 1 "$MP" serve "$D/tiny.moepack" --slots 0
expect_exit 1 "$MP" serve "$D/tiny.moepack" --prefill-chunk 0
expect_exit 1 "$MP" serve "$D/tiny.moepack" --port 70000
expect_exit 1 timeout 30 "$MP" serve "$D/tiny.moepack" --port 0 --ctx 100000
expect_in "$err" "tiny\.moepack: --ctx 100000 is more than the model's [0-9]+ positions \(max_position_embeddings\)"
expect_exit 1 timeout 30 "$MP" serve "$D/tiny.moepack" --port 0 --model-name ''
expect_in "$err" "^moepack: serve: --model-name needs a non-empty NAME"
expect_exit 1 timeout 30 "$MP" serve "$D/tiny.moepack" --port 0 --model-name "$(printf 'ab\377')"
expect_in "$err" "^moepack: serve: --model-name NAME is not valid UTF-8"
expect_exit 1 "$MP" serve "$D/tiny.moepack" --bogus
expect_in "$err" "^moepack: serve: unknown option '--bogus'"
expect_exit 2 "$MP" serve "$D/missing.moepack" --port 0
expect_exit 1 "$MP" serve "$D/tiny.moepack" --host localhost --port 0
finish
