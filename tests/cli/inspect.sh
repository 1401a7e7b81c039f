# moepack inspect / verify / help on a tiny synth model: the --layer range, a checkpoint given where a
# container is expected, checksum failures on open as failed checks (exit 3), and the wording of
# unknown options and missing values.
. "$(dirname "$0")/../lib.sh"
T=$(tmpdir cli_inspect)
X="$T/tiny.moepack"
"$MP" synth --like tiny -q -o "$T/src" --layers 3 --dense 1 && ok || fail "synth tiny"
"$MP" convert "$T/src" -o "$X" --quiet && ok || fail "convert tiny"
expect_exit 0 "$MP" convert "$T/src" -o "$T/q.moepack" -q
[ -z "$out$err" ] && ok || fail "convert -q printed: $out$err"

# the model block is indented under its heading; the container's own quantization line is apart
expect_exit 0 "$MP" inspect "$X"
expect_in "$out" '^  model_type: deepseek_v3'
expect_in "$out" '^stored as: cpu experts int8'
expect_in "$out" '^layers: 3 decoder, 0 MTP kept'
# --layer: the last layer is shown, one past it is a usage error naming the range
expect_exit 0 "$MP" inspect "$X" --layer 2
expect_in "$out" 'blk\.2\.'
expect_exit 1 "$MP" inspect "$X" --layer 3
expect_in "$err" 'has layers 0\.\.2'
expect_exit 1 "$MP" inspect "$X" --json --layer 3

# a checkpoint where a container is expected: named, with the command that converts it
expect_exit 2 "$MP" inspect "$T/src"
expect_in "$err" "src: is a folder, not a moepack container; convert it first"
shard=$(ls "$T/src"/*.safetensors | head -1)
expect_exit 2 "$MP" inspect "$shard"
expect_in "$err" 'a safetensors file, not a moepack container'
printf 'GGUF\003\000\000\000' > "$T/tiny.gguf"
expect_exit 2 "$MP" run "$T/tiny.gguf" -p hi
expect_in "$err" 'tiny\.gguf: a GGUF file, not a moepack container; convert it first'

# a checksum that does not match is a failed check (3) on open as in verify; structure errors stay 2
flip() { python3 -c "import sys; f=open(sys.argv[1],'r+b'); f.seek(int(sys.argv[2])); b=f.read(1); f.seek(int(sys.argv[2])); f.write(bytes([b[0]^1]))" "$1" "$2"; }
cp "$X" "$T/hdr.moepack" && flip "$T/hdr.moepack" 200
expect_exit 3 "$MP" verify "$T/hdr.moepack"
expect_in "$err" 'hdr\.moepack: header checksum mismatch'
expect_exit 3 "$MP" inspect "$T/hdr.moepack"
cp "$X" "$T/dir.moepack" && flip "$T/dir.moepack" 4200
expect_exit 3 "$MP" verify "$T/dir.moepack"
expect_in "$err" 'directory checksum mismatch'
head -c 5000 "$X" > "$T/short.moepack"
expect_exit 2 "$MP" verify "$T/short.moepack"

# command-line wording: the option named, whether it is unknown or lacks its value
expect_exit 1 "$MP" inspect "$X" --zzz
expect_in "$err" "inspect: unknown option '--zzz'"
if printf '%s' "$err" | grep -q 'unrecognized option'; then fail "getopt's own message printed too"; else ok; fi
expect_exit 1 "$MP" verify "$X" -x
expect_in "$err" "verify: unknown option '-x'"
expect_exit 1 "$MP" verify "$X" --threads
expect_in "$err" "verify: option '--threads' needs a value"
expect_exit 1 "$MP" convert "$T/src" -o
expect_in "$err" "convert: option '-o' needs a value"
if printf '%s' "$err" | grep -q 'unknown option'; then fail "a missing value called an unknown option"; else ok; fi
# the commands that parse their own options word it the same way
expect_exit 1 "$MP" run "$X" -n
expect_in "$err" "run: option '-n' needs a value"
expect_exit 1 "$MP" synth --like tiny -o
expect_in "$err" "synth: option '-o' needs a value"
expect_exit 1 "$MP" synth --like tiny --bogus x
expect_in "$err" "synth: unknown option '--bogus'"
expect_exit 1 "$MP" tokenize "$X" --file
expect_in "$err" "tokenize: option '--file' needs a value"
# sampling options without a temperature are said to do nothing, not silently ignored
expect_exit 0 "$MP" run "$X" -p hi -n 2 --top-k 40 --seed 7
expect_in "$err" 'run: note: --top-p, --top-k and --seed have no effect at --temp 0'
expect_exit 0 "$MP" run "$X" -p hi -n 2 --top-k 40 --seed 7 --temp 0.8
if printf '%s' "$err" | grep -q 'no effect'; then fail "the note with --temp 0.8"; else ok; fi
# help CMD is CMD --help
expect_exit 0 "$MP" help verify
expect_in "$out" '^usage: moepack verify'
expect_exit 1 "$MP" help nosuchcommand
expect_in "$err" "unknown command 'nosuchcommand'"
finish
