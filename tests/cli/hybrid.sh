# `run --prefault` and `--cpu-only` on the tiny-v3 fixture: the text does not change with either; compare
# accepts --cpu-only; with a GPU (hybrid is the default) and without, greedy text is the same.
. "$(dirname "$0")/../lib.sh"
need_fixtures
D=$(tmpdir cli_hybrid)
Q="$D/int8.moepack"
"$MP" convert "$FIX/tiny-v3" -o "$Q" --quiet && ok || fail "convert"

expect_exit 0 "$MP" run "$Q" -p "The quick brown fox" -n 16 --cpu-only
base="$out"
[ -n "$base" ] && ok || fail "run printed nothing"
expect_exit 0 "$MP" run "$Q" -p "The quick brown fox" -n 16 --cpu-only --prefault
[ "$out" = "$base" ] && ok || fail "--prefault changed the text"
# the default back end (hybrid when this machine has a GPU)
expect_exit 0 "$MP" run "$Q" -p "The quick brown fox" -n 16 --prefault
[ "$out" = "$base" ] && ok || fail "default back end and --cpu-only differ: '$out' vs '$base'"
expect_exit 0 "$MP" compare "$Q" "$FIX/tiny-v3.reference.safetensors" --cpu-only --no-greedy --prompt 1 --min-top1 0.75
expect_in "$out" "all"
expect_exit 1 "$MP" run "$Q" -p "x" --prefault=yes
finish
