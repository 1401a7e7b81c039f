# Sourced by the tests/cli/*.sh tests: helpers for checking the moepack binary.
set -u
MP="${MOEPACK_BIN:?MOEPACK_BIN not set}"
FIX="${MOEPACK_FIXTURES:-}"
fails=0
checks=0

need_fixtures() {
    if [ -z "$FIX" ] || [ ! -d "$FIX" ]; then echo "SKIP: fixtures not found"; exit 77; fi
}

# tmpdir NAME: a fresh scratch folder for this test
tmpdir() {
    local d="${MOEPACK_TEST_TMP:-/tmp/moepack-test}/$1"
    rm -rf "$d" && mkdir -p "$d" && echo "$d"
}

ok() { checks=$((checks + 1)); }
fail() { checks=$((checks + 1)); fails=$((fails + 1)); echo "FAIL: $*" >&2; }

# expect_exit CODE CMD...: runs CMD, checks its exit code, keeps stdout/stderr in $out/$err
expect_exit() {
    local want=$1; shift
    out=$("$@" 2>/tmp/mp_cli_err.$$); local rc=$?
    err=$(cat /tmp/mp_cli_err.$$); rm -f /tmp/mp_cli_err.$$
    if [ "$rc" -eq "$want" ]; then ok; else fail "exit $rc (want $want): $*"; echo "stderr: $err" >&2; fi
}

# expect_in TEXT PATTERN: grep -E PATTERN in TEXT
expect_in() {
    if printf '%s' "$1" | grep -Eq -- "$2"; then ok; else fail "no match for /$2/ in: $(printf '%s' "$1" | head -c 600)"; fi
}

finish() {
    if [ "$fails" -ne 0 ]; then echo "$fails of $checks checks failed"; exit 1; fi
    echo "all $checks checks passed"; exit 0
}
