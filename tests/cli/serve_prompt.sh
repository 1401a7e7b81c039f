# moepack serve: completion prompts with special tokens or as token ids, logit_bias and the
# presence/frequency penalties, and --ctx holding prompt and answer, against the fixture's oracle
# (tests/serve/prompt_sampling.py).
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../serve/lib_serve.sh"
D=$(tmpdir cli_serve_prompt)
need_fixtures
# exact weights: the greedy answers are compared with transformers' tokens
"$MP" convert "$FIX/tiny-v3" -o "$D/exact.moepack" --cpu-quant bf16 --gpu-quant bf16 --quiet >/dev/null ||
    { echo "convert failed"; exit 1; }
python3 "$(dirname "$0")/../serve/prompt_sampling.py" "$MP" "$D/exact.moepack" "$FIX/tiny-v3.reference.safetensors" "$D" &&
    ok || fail "prompt_sampling.py (FAIL lines above)"
finish
