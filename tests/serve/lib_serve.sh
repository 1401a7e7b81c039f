# Sourced by tests/cli/serve*.sh (after tests/lib.sh): a tiny model, a server
# on a free port, JSON and SSE helpers (python3).
command -v curl >/dev/null || { echo "SKIP: curl not found"; exit 77; }
command -v python3 >/dev/null || { echo "SKIP: python3 not found"; exit 77; }
SV_PY="$(dirname "${BASH_SOURCE[0]}")/sv.py"
SERVER_PIDS=()

# make_model DIR: converts the tiny fixture into DIR/tiny.moepack
make_model() {
    need_fixtures
    "$MP" convert "$FIX/tiny-v3" -o "$1/tiny.moepack" --quiet --threads 2 >/dev/null || { echo "convert failed"; exit 1; }
}

# make_r1_model DIR: DIR/r1.moepack, the tiny fixture with DeepSeek-R1's chat template (taken from
# `moepack synth --like deepseek-r1 --dry-run`), so the server opens a <think> block for it
make_r1_model() {
    need_fixtures
    rm -rf "$1/r1-src" "$1/r1-dry"
    cp -r "$FIX/tiny-v3" "$1/r1-src" && chmod -R u+w "$1/r1-src"
    "$MP" synth --like deepseek-r1 -o "$1/r1-dry" --dry-run -q >/dev/null || { echo "synth failed"; exit 1; }
    python3 - "$1/r1-dry/tokenizer_config.json" "$1/r1-src/tokenizer_config.json" <<'PY' || exit 1
import json, sys
src = json.load(open(sys.argv[1], encoding="utf-8"))
cfg = json.load(open(sys.argv[2], encoding="utf-8"))
cfg["chat_template"] = src["chat_template"]
json.dump(cfg, open(sys.argv[2], "w", encoding="utf-8"), ensure_ascii=False)
PY
    "$MP" convert "$1/r1-src" -o "$1/r1.moepack" --quiet --threads 2 >/dev/null || { echo "convert failed"; exit 1; }
}

# start_server LOG ARGS...: moepack serve ARGS --cpu-only on a free port (the kernel picks it: --port
# 0); sets SRV_PID, PORT and URL, and waits until /health answers. --cpu-only because the tests compare
# answers bit for bit across cache states (prefix reuse), which only the CPU path promises: on the
# hybrid path the GPU rounds a prompt evaluated whole differently from one taken from the cache plus
# its last token. start_server_default_backend LOG ARGS... leaves the back end to the server.
start_server() {
    local log=$1; shift
    start_server_default_backend "$log" "$@" --cpu-only
}

start_server_default_backend() {
    local log=$1; shift
    "$MP" serve "$@" --port 0 >"$log" 2>&1 &
    SRV_PID=$!
    SERVER_PIDS+=("$SRV_PID")
    PORT=""
    for _ in $(seq 1 600); do
        PORT=$(sed -n 's|.* on http://[^ ]*:\([0-9][0-9]*\)/ .*|\1|p' "$log" | head -1)
        [ -n "$PORT" ] && break
        kill -0 "$SRV_PID" 2>/dev/null || { echo "server exited: $(cat "$log")"; exit 1; }
        sleep 0.05
    done
    [ -n "$PORT" ] || { echo "server did not start: $(cat "$log")"; exit 1; }
    URL="http://127.0.0.1:$PORT"
    for _ in $(seq 1 200); do
        curl -sf "$URL/health" >/dev/null && return 0
        sleep 0.05
    done
    echo "no /health answer"; exit 1
}

# stop_server PID: SIGTERM, and the server must exit 0 within 10 s
stop_server() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 200); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 "$pid" 2>/dev/null; then fail "server $pid did not stop on SIGTERM"; kill -KILL "$pid"; fi
    wait "$pid"; local rc=$?
    [ "$rc" -eq 0 ] && ok || fail "server exited $rc after SIGTERM"
}

cleanup_servers() {
    for p in "${SERVER_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
}
trap cleanup_servers EXIT

# js FILE EXPR: evaluates a Python expression over the JSON in FILE (as d)
js() { python3 "$SV_PY" get "$1" "$2"; }
# wait_health FILE EXPR WANT TRIES PAUSE: asks /health up to TRIES times, PAUSE seconds apart,
# until EXPR over its JSON (as in js) is WANT; prints yes or no, and leaves the last answer in FILE
wait_health() {
    local file=$1 expr=$2 want=$3 tries=$4 pause=$5
    for _ in $(seq 1 "$tries"); do
        curl -s "$URL/health" >"$file"
        [ "$(js "$file" "$expr")" = "$want" ] && { echo yes; return; }
        sleep "$pause"
    done
    echo no
}
# sse FILE: checks an event stream, prints a JSON summary (content, reasoning, finish, usage, ...)
sse() { python3 "$SV_PY" sse "$1"; }

# post PATH BODY OUT [curl args...]: POSTs JSON, body to OUT, prints the HTTP status
post() {
    local path=$1 body=$2 out=$3; shift 3
    curl -s -o "$out" -w '%{http_code}' -H 'Content-Type: application/json' "$@" --data-binary "$body" "$URL$path"
}

expect_eq() {
    if [ "$1" == "$2" ]; then ok; else fail "$3: got '$1', want '$2'"; fi
}
