# The chat page in headless Chromium (skipped when chromium is not installed): load /, type a
# message, click Send, wait for the streamed answer (it must equal the API's answer for the same
# request), screenshot, then a long second turn stopped with the Stop button frees its slot.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../serve/lib_serve.sh"
CHROMIUM=""
for c in chromium chromium-browser google-chrome; do command -v "$c" >/dev/null && { CHROMIUM=$(command -v "$c"); break; }; done
[ -n "$CHROMIUM" ] || { echo "SKIP: chromium not installed (apt-get install chromium)"; exit 77; }
D=$(tmpdir cli_serve_page)
make_model "$D"
# the Stop turn asks for 16000 tokens (16 s or more at the tiny model's ~1000 tokens/s on one thread):
# 4000 took about 4 s, and on a loaded machine the turn could end before the click arrived
start_server "$D/srv.log" "$D/tiny.moepack" --threads 1 --slots 1 --ctx 16384 --max-tokens 100000
python3 "$(dirname "$0")/../serve/page_cdp.py" "$CHROMIUM" "$URL/" "$D/page.png" "$D/profile" >"$D/report.json" &&
    ok || fail "browser session: $(cat "$D/report.json")"
cat "$D/report.json"; echo
want=$(curl -s -H 'Content-Type: application/json' --data-binary \
    '{"messages":[{"role":"user","content":"Hello! What can you do?"}],"temperature":0,"max_tokens":24}' \
    "$URL/v1/chat/completions" | python3 -c 'import json,sys; print(json.load(sys.stdin)["choices"][0]["message"]["content"])')
[ -n "$want" ] && ok || fail "no API answer"
expect_eq "$(js "$D/report.json" 'd["first"]["answer"]')" "$want" "the page shows the streamed answer"
expect_eq "$(js "$D/report.json" 'd["first"]["user"]')" "Hello! What can you do?" "the page shows the message"
expect_eq "$(js "$D/report.json" '[d["model_shown"], d["first"]["errors"], d["first"]["think_open"]]')" '["tiny", 0, false]' "page state"
expect_in "$(js "$D/report.json" 'd["first"]["meta"]')" 'tokens'
expect_eq "$(js "$D/report.json" '[d["stop_visible"], d["second"]["meta"], d["second"]["stop_hidden"], d["second"]["send_enabled"]]')" \
    '[true, "stopped", true, true]' "stop button"
size=$(stat -c %s "$D/page.png" 2>/dev/null || echo 0)
[ "$size" -gt 10000 ] && ok || fail "screenshot $D/page.png is $size bytes"
python3 -c 'import sys; d=open(sys.argv[1],"rb").read(24); sys.exit(0 if d[:8]==b"\x89PNG\r\n\x1a\n" else 1)' "$D/page.png" && ok || fail "not a PNG"
expect_eq "$(wait_health "$D/h.json" '[d["slots_busy"], d["cancelled"]]' "[0, 1]" 40 0.05)" yes \
    "Stop freed the slot (cancelled 1, no slot busy)"
stop_server "$SRV_PID"

# R1: the reasoning streams into a folded <details>, the same text as the API's reasoning_content
make_r1_model "$D"
start_server "$D/srv2.log" "$D/r1.moepack" --threads 1 --slots 1
python3 "$(dirname "$0")/../serve/page_cdp.py" "$CHROMIUM" "$URL/" "$D/page-r1.png" "$D/profile-r1" r1 >"$D/r1.json" &&
    ok || fail "browser session (r1): $(cat "$D/r1.json")"
curl -s -o "$D/r1api.json" -H 'Content-Type: application/json' --data-binary \
    '{"messages":[{"role":"user","content":"Hello! What can you do?"}],"temperature":0,"max_tokens":24}' \
    "$URL/v1/chat/completions"
# compared in Python: the random model's text may hold NUL characters, which bash drops
python3 - "$D/r1.json" "$D/r1api.json" <<'PY' && ok || fail "the page's reasoning differs from the API's"
import json, sys
page = json.load(open(sys.argv[1]))["first"]["reasoning"]
api = json.load(open(sys.argv[2]))["choices"][0]["message"]["reasoning_content"]
sys.exit(0 if page and page == api else 1)
PY
expect_eq "$(js "$D/r1.json" '[d["first"]["think_hidden"], d["first"]["think_open"], d["opened"], d["first"]["errors"]]')" \
    '[false, false, true, 0]' "reasoning folded until clicked"
expect_in "$(js "$D/r1.json" 'd["first"]["summary"]')" '^Thought for [0-9.]+ s'
stop_server "$SRV_PID"
finish
