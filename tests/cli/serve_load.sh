# Load on loopback: 8 concurrent clients, 200 greedy requests over 16 prompts; every answer must
# equal the single-client answer (nothing lost or mixed up); prints latency percentiles.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../serve/lib_serve.sh"
D=$(tmpdir cli_serve_load)
make_model "$D"
start_server "$D/srv.log" "$D/tiny.moepack" --threads 1 --slots 4 --queue 16 --ctx 512
python3 "$(dirname "$0")/../serve/load.py" "$URL" --clients 8 --requests 200 --prompts 16 --max-tokens 8 && ok ||
    fail "load test"
curl -s "$URL/health" >"$D/h.json"
expect_eq "$(js "$D/h.json" '[d["failed"], d["rejected_busy"], d["slots_busy"], d["queued"]]')" '[0, 0, 0, 0]' "health after load"
stop_server "$SRV_PID"
finish
