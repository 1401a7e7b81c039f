# moepack serve with the official `openai` Python package as the client (skipped when it is not
# installed: pip install openai).
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../serve/lib_serve.sh"
python3 -c 'import openai' 2>/dev/null || { echo "SKIP: python package openai not installed"; exit 77; }
D=$(tmpdir cli_serve_openai)
make_model "$D"
start_server "$D/srv.log" "$D/tiny.moepack" --threads 1 --slots 2 --api-key sk-local
python3 "$(dirname "$0")/../serve/openai_client.py" "$URL" sk-local && ok || fail "openai client checks"
stop_server "$SRV_PID"
finish
