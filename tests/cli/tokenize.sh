# `moepack tokenize` / `detokenize` on the fixture tokenizer. The expected ids come from the
# fixture's reference files (tiny-v3.tokenizer-cases.json, and prompt5.ids of
# tiny-v3.reference.safetensors), which Hugging Face tokenizers / transformers produced.
. "$(dirname "$0")/../lib.sh"
need_fixtures
T="$FIX/tiny-v3"
D=$(tmpdir cli_tokenize)
U=$'<\xef\xbd\x9cUser\xef\xbd\x9c>'
A=$'<\xef\xbd\x9cAssistant\xef\xbd\x9c>'

expect_exit 0 "$MP" tokenize "$T" "Hello world"
expect_in "$out" '^42 464 331 317 268 78 70$'
expect_exit 0 "$MP" tokenize "$T/tokenizer.json" " Hello world"
expect_in "$out" '^670 464 331 317 268 78 70$'
expect_exit 0 "$MP" tokenize "$T" --bos "Hello world"
expect_in "$out" '^0 42 464 331 317 268 78 70$'
expect_exit 0 "$MP" tokenize "$T" --special "${U}hi${A}"
expect_in "$out" '^1276 74 75 1277$'
expect_exit 0 "$MP" tokenize "$T" "${U}hi${A}"
if printf '%s' "$out" | grep -Eq '(^| )(1276|1277)( |$)'; then fail "special tokens parsed without --special: $out"; else ok; fi
expect_exit 0 "$MP" tokenize "$T" ""
[ -z "$out" ] && ok || fail "empty text gave '$out'"
expect_exit 0 "$MP" tokenize "$T" --chat "Explain MLA in one sentence."
expect_in "$out" '^0 1276 1010 82 350 264 524 46 35 308 1232 422 326 295 313 16 1277$'
printf '12' > "$D/text.txt"
expect_exit 0 "$MP" tokenize "$T" --file "$D/text.txt"
expect_in "$out" '^765$'
out=$(printf '1234567' | "$MP" tokenize "$T" --file -) && ok || fail "tokenize --file - failed"
expect_in "$out" '^765 21 22 23 24 25$'
expect_exit 0 "$MP" tokenize "$T" -- "-12"
expect_in "$out" '^15 765$'

expect_exit 0 "$MP" detokenize "$T" 42 464 331 317 268 78 70
[ "$out" = "Hello world" ] && ok || fail "detokenize gave '$out'"
expect_exit 0 "$MP" detokenize "$T" "1276,74,75" 1277
[ "$out" = "${U}hi${A}" ] && ok || fail "detokenize gave '$out'"
expect_exit 0 "$MP" detokenize "$T" --skip-special "1276 74 75 1277"
[ "$out" = "hi" ] && ok || fail "detokenize --skip-special gave '$out'"

# bad sources and inputs: exit 2 with the file named
expect_exit 2 "$MP" tokenize "$D/no-such-model" "x"
expect_in "$err" "no-such-model: no such file or directory"
mkdir -p "$D/empty"
expect_exit 2 "$MP" tokenize "$D/empty" "x"
expect_in "$err" "empty: no tokenizer.json in this directory"
printf '{"model": ' > "$D/bad.json"
expect_exit 2 "$MP" tokenize "$D/bad.json" "x"
expect_in "$err" "bad.json: bad JSON"
# another JSON file of the model folder is named as not a tokenizer.json, not as a loader detail
expect_exit 2 "$MP" tokenize "$T/config.json" "x"
expect_in "$err" '^moepack: .*tiny-v3/config\.json: not a tokenizer\.json \(it has no "model" object\)'
expect_exit 2 "$MP" detokenize "$T/tokenizer_config.json" 1
expect_in "$err" 'tokenizer_config\.json: not a tokenizer\.json'
printf 'not a tokenizer' > "$D/notes.txt"
expect_exit 2 "$MP" tokenize "$D/notes.txt" "x"
expect_in "$err" "not a tokenizer source"
printf 'ab\xffcd' > "$D/invalid.txt"
expect_exit 2 "$MP" tokenize "$T" --file "$D/invalid.txt"
expect_in "$err" "invalid.txt: text is not valid UTF-8 at byte 2"
expect_exit 2 "$MP" tokenize "$T" --file "$D/missing.txt"
expect_in "$err" "missing.txt"
expect_exit 2 "$MP" detokenize "$D/no-such-model" 1
expect_in "$err" "no such file or directory"

# usage errors: exit 1
expect_exit 1 "$MP" tokenize
expect_exit 1 "$MP" tokenize "$T"
expect_in "$err" "missing TEXT"
expect_exit 1 "$MP" tokenize "$T" "x" --file "$D/text.txt"
expect_exit 1 "$MP" tokenize "$T" --frobnicate "x"
expect_exit 1 "$MP" tokenize "$T" "x" "y"
expect_exit 1 "$MP" detokenize "$T"
expect_exit 1 "$MP" detokenize "$T" "12x"
expect_exit 1 "$MP" detokenize "$T" 99999
expect_in "$err" "ids are 0..1279"
# malformed lists are refused, naming the bad item, never decoded with an item skipped
expect_exit 1 "$MP" detokenize "$T" "1,,2"
expect_in "$err" "^moepack: detokenize: '1,,2': item 2 is empty"
expect_exit 1 "$MP" detokenize "$T" "1,"
expect_in "$err" "'1,': item 2 is empty"
expect_exit 1 "$MP" detokenize "$T" ",1"
expect_in "$err" "',1': item 1 is empty"
expect_exit 1 "$MP" detokenize "$T" 1 ""
expect_in "$err" "'' holds no token ids"
expect_exit 1 "$MP" detokenize "$T" "1,x"
expect_in "$err" "'x' in '1,x' is not a token id \(ids are 0\.\.1279\)"
expect_exit 1 "$MP" detokenize "$T" -1
expect_in "$err" "'-1' is not a token id \(ids are 0\.\.1279\)"
expect_exit 1 "$MP" detokenize "$T" "1,-2"
expect_in "$err" "'-2' in '1,-2' is not a token id"
expect_exit 0 "$MP" detokenize "$T" " 42, 464 ,331" "317  268" $'78\n70\n'
[ "$out" = "Hello world" ] && ok || fail "detokenize with blanks around ids gave '$out'"
# the same ids from a GGUF's vocabulary and from a converted container
expect_exit 0 "$MP" tokenize "$T" "Hello wörld 12345, 混合专家"
want=$out
expect_exit 0 "$MP" tokenize "$FIX/tiny-v3-bf16.gguf" "Hello wörld 12345, 混合专家"
[ "$out" = "$want" ] && ok || fail "GGUF tokenizer gives '$out', tokenizer.json '$want'"
"$MP" convert "$T" -o "$D/t.moepack" --quiet --threads 2
expect_exit 0 "$MP" tokenize "$D/t.moepack" "Hello wörld 12345, 混合专家"
[ "$out" = "$want" ] && ok || fail "container tokenizer gives '$out', tokenizer.json '$want'"

expect_exit 0 "$MP" tokenize --help
expect_in "$out" "usage: moepack tokenize"
# the help names every kind of SRC that works (the GGUF and the container above)
expect_in "$(printf '%s' "$out" | tr '\n' ' ')" "SRC is a model directory .*tokenizer\.json.*GGUF file.*\.moepack container"
expect_exit 0 "$MP" detokenize --help
expect_in "$(printf '%s' "$out" | tr '\n' ' ')" "GGUF file.*\.moepack container"
finish
