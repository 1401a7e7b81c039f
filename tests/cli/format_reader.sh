# docs/FORMAT.md is enough to read a container: tests/data/container_reader.py, a second reader written
# from the document alone (Python + numpy), reads containers `moepack convert` makes with several option
# sets and must agree with the C tools (inspect --json --tensors, verify), reproduce the source weights
# within the error each quantization scheme allows, the metadata the document defines, and the
# tokenizer; hostile files are refused by both readers.
. "$(dirname "$0")/../lib.sh"
need_fixtures
python3 -c "import numpy" 2> /dev/null || { echo "SKIP: python3 with numpy not found"; exit 77; }
SRC="${MOEPACK_SOURCE_DIR:-$(dirname "$0")/../..}"
READER="$SRC/tests/data/container_reader.py"
python3 "$READER" /dev/null > /dev/null 2>&1
[ $? -eq 77 ] && { python3 "$READER" /dev/null; exit 77; }
D=$(tmpdir cli_format_reader)

# name|source|convert options|value check (full: every tensor against the safetensors source;
# structure: checksums and the tensor table only, a Q4_K_M source would need a GGUF dequantizer)
CASES=(
    "default|$FIX/tiny-v3||full"
    "bf16|$FIX/tiny-v3|--cpu-quant bf16 --gpu-quant bf16|full"
    "sym-minmax|$FIX/tiny-v3|--gpu-quant int4-sym --int4-fit minmax --int8-group 128|full"
    "gguf-bf16|$FIX/tiny-v3-bf16.gguf||full"
    "gguf-q4km|$FIX/tiny-v3-Q4_K_M.gguf||structure"
    "synth-mtp|$D/synth|--keep-mtp --gpu-quant int4-sym --int8-group 192|full"
)
# A different shape: q_lora 192, kv_lora 128 (int4 K padding: attn_q_b has K = 192), moe_intermediate
# 128 (one down group narrower than the slice width), vocab 1000, 4 layers, and an MTP layer.
"$MP" synth --like tiny -o "$D/synth" --mtp --layers 4 --dense 2 --vocab 1000 --seed 5 -q && ok || fail "synth"

PYCHECK="$SRC/tests/data/container_reader_check.py"

for case in "${CASES[@]}"; do
    IFS='|' read -r name source opts check <<< "$case"
    f="$D/$name.moepack"
    # shellcheck disable=SC2086
    "$MP" convert "$source" -o "$f" $opts --quiet && ok || { fail "convert $name"; continue; }
    "$MP" inspect "$f" --json --tensors > "$D/$name.inspect.json" && ok || fail "inspect $name"
    expect_exit 0 "$MP" verify "$f"
    expect_exit 0 python3 "$READER" "$f" --verify
    cases=-
    [ "$source" = "$FIX/tiny-v3" ] && cases="$FIX/tiny-v3.tokenizer-cases.json"
    python3 "$PYCHECK" "$READER" check "$f" "$D/$name.inspect.json" "$source" "$check" "$cases" \
        && ok || fail "$name: the reader disagrees with the C tools or the source (above)"
done

# One flipped byte in a tensor's data, and one in a tensor's scales: both readers name the tensor.
good="$D/default.moepack"
for target in data scale; do
    read -r tname pos <<< "$(python3 - "$READER" "$good" "$target" <<'PYEOF'
import importlib.util, sys
spec = importlib.util.spec_from_file_location("cr", sys.argv[1]); cr = importlib.util.module_from_spec(spec); spec.loader.exec_module(cr)
c = cr.Container(sys.argv[2])
t = [t for t in c.tensors if t.scale_size][len(c.tensors) // 3]
print(t.name, (t.data_offset + t.data_size // 2) if sys.argv[3] == "data" else (t.scale_offset + t.scale_size - 3))
PYEOF
)"
    bad="$D/flipped-$target.moepack"
    cp "$good" "$bad"
    python3 -c "import sys; f=open(sys.argv[1],'r+b'); f.seek(int(sys.argv[2])); b=f.read(1); f.seek(int(sys.argv[2])); f.write(bytes([b[0]^1]))" "$bad" "$pos"
    expect_exit 3 "$MP" verify "$bad"
    c_says="$out $err"
    expect_in "$c_says" "$tname"
    expect_exit 1 python3 "$READER" "$bad" --verify
    expect_in "$err" "tensor $tname: checksum mismatch"
    [ "$(printf '%s\n' "$err" | grep -c 'checksum mismatch')" -eq 1 ] && ok || fail "reader reports other tensors than $tname"
done

# Hostile files: refused by the reader (exit 2, a message naming the problem, no traceback) and by inspect
# (exit 2, or 3 where a checksum check failed).
python3 "$PYCHECK" "$READER" hostile "$good" "$D" && ok || fail "writing hostile files"
for spec in "2|truncated|file_size says .* (truncated|extended)" "3|header_checksum|header checksum mismatch" \
            "2|offset_past_end|tensor .*: data .* outside the (host|gpu|cpu) section" "2|n_tensors_huge|dir_size .* != n_tensors" \
            "2|meta_past_end|metadata .* outside the file" "2|tok_raw_huge|tok_raw_size .* exceeds" \
            "2|role_source_only|role 12|never stored" "2|overlap|overlap" "2|tok_two_frames|not exactly one zstd frame" \
            "2|unused_dim|unused dim" "2|format_version_2|format_version .*(2\.0|1\.x)"; do
    IFS='|' read -r code name pattern <<< "$spec" # the pattern, last, keeps its own '|'
    expect_exit 2 python3 "$READER" "$D/$name.moepack"
    expect_in "$err" "$pattern"
    if printf '%s' "$err" | grep -q Traceback; then fail "$name: the reader printed a traceback"; else ok; fi
    expect_exit "$code" "$MP" inspect "$D/$name.moepack"
done
finish
