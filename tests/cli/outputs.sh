# Commands that write files check the output path before the work: never onto their input, never into a
# folder that cannot be written; an interrupted reference removes its partial file; bench prints its
# report before writing its files. convert warns about a
# defaulted routing and a leftover partial file, and records options that convert accepts again; it
# refuses a second conversion to an output being written, says on SIGINT what it keeps and how to
# continue, and re-checks the finished units it resumes.
. "$(dirname "$0")/../lib.sh"
T=$(tmpdir cli_outputs)
X="$T/tiny.moepack"
"$MP" synth --like tiny -q -o "$T/src" && ok || fail "synth tiny"
"$MP" convert "$T/src" -o "$X" --quiet && ok || fail "convert tiny"
sum=$(cksum < "$X")

expect_exit 2 "$MP" reference "$X" -o "$X" --prompts 1 --len 4 --greedy 0
expect_in "$err" 'tiny\.moepack: is the input file .*tiny\.moepack; choose another output path'
expect_exit 2 "$MP" reference "$X" -o "$T/no/such/dir/r.safetensors" --prompts 1 --len 4
expect_in "$err" 'r\.safetensors: cannot be created: No such file or directory'
expect_exit 0 "$MP" reference "$X" -o "$T/r.safetensors" --prompts 1 --len 4 --greedy 1
expect_in "$out" ': 1 prompt of 4 tokens, 1 greedy token each'
# an interrupted reference (it cannot be resumed) leaves no partial file behind
"$MP" reference "$X" -o "$T/killed.safetensors" --prompts 40 --len 256 --greedy 0 --threads 1 &
pid=$!
for _ in $(seq 1 200); do [ -e "$T/killed.safetensors.partial" ] && break; sleep 0.02; done
[ -e "$T/killed.safetensors.partial" ] && ok || fail "reference made no partial file to interrupt"
kill -TERM "$pid"; wait "$pid"; rc=$?
[ "$rc" -eq 143 ] && ok || fail "reference ended with $rc after SIGTERM (want 143: the signal)"
[ ! -e "$T/killed.safetensors.partial" ] && [ ! -e "$T/killed.safetensors" ] && ok || fail "files left after SIGTERM"
for opt in --svg --json-file; do
    expect_exit 2 "$MP" bench "$X" --prompt 8 --gen 1 --no-limits -q $opt "$X"
    expect_in "$err" 'is the input file'
    expect_exit 2 "$MP" bench "$X" --prompt 8 --gen 1 --no-limits -q $opt "$T/no/such/dir/b.out"
    expect_in "$err" 'b\.out: cannot be created'
    [ -z "$out" ] && ok || fail "bench $opt measured before refusing its output path"
done
[ "$(cksum < "$X")" = "$sum" ] && ok || fail "the container changed"
expect_exit 1 "$MP" bench "$X" --prompt 8 --gen 1 --no-limits -q --svg "$T/b.out" --json-file "$T/b.out"
# a path that only fails at the end (the file turned into a folder while measuring is not
# reproducible here), so check the order instead: the report is on stdout when the files are written
expect_exit 0 "$MP" bench "$X" --prompt 8 --gen 1 --no-limits -q --svg "$T/b.svg" --json-file "$T/b.json"
expect_in "$out" 'speed'
[ -s "$T/b.svg" ] && [ -s "$T/b.json" ] && ok || fail "bench files not written"

# the recorded options are a command line convert takes again, giving the same file
expect_exit 0 "$MP" convert "$T/src" -o "$T/sym.moepack" --quiet --gpu-quant int4-sym --int8-group 128
expect_exit 0 "$MP" inspect "$T/sym.moepack" --json
opts=$(printf '%s' "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["provenance"]["options"])')
expect_in "$opts" '^--cpu-quant int8 --gpu-quant int4-sym --int4-fit mse --int8-group 128$'
# shellcheck disable=SC2086
expect_exit 0 "$MP" convert "$T/src" -o "$T/again.moepack" --quiet $opts
cmp -s "$T/sym.moepack" "$T/again.moepack" && ok || fail "re-running the recorded options gave another file"

# options made moot by the others are said to be
expect_exit 0 "$MP" convert "$T/src" -o "$T/moot.moepack" --quiet --gpu-quant bf16 --int4-fit minmax --cpu-quant bf16 \
    --int8-group 128
expect_in "$err" 'note: --int4-fit has no effect with --gpu-quant bf16'
expect_in "$err" 'note: --int8-group has no effect with --cpu-quant bf16'

# a conversion interrupted, then started over without --resume: said, not silent
expect_exit 2 "$MP" convert "$T/src" -o "$T/cut.moepack" --stop-after-units 1 --quiet
[ -e "$T/cut.moepack.partial" ] && ok || fail "no partial file kept"
expect_exit 2 "$MP" inspect "$T/cut.moepack.partial"
expect_in "$err" 'cut\.moepack\.partial: an unfinished conversion, not a moepack container; .* -o .*cut\.moepack --resume'
expect_exit 0 "$MP" convert "$T/src" -o "$T/cut.moepack" --quiet
expect_in "$err" 'cut\.moepack\.partial: left by an interrupted conversion; starting over \(--resume continues it\)'
expect_exit 0 "$MP" convert "$T/src" -o "$T/fresh.moepack" --quiet --resume
expect_in "$err" 'fresh\.moepack: nothing to resume'

# --resume refuses a source whose shard was replaced by another of the same size and header (another
# model's): before, it mixed the two models' tensors and verify passed
"$MP" synth --like tiny -q -o "$T/other" --seed 9 && ok || fail "synth a second model"
cp -r "$T/src" "$T/mixed"
expect_exit 2 "$MP" convert "$T/mixed" -o "$T/mixed.moepack" --stop-after-units 1 --quiet
shard=$(basename "$(ls "$T/mixed"/*.safetensors | tail -1)")
cmp -s "$T/mixed/$shard" "$T/other/$shard" && fail "the two synth models are the same" || ok
st_header() { python3 -c 'import struct,sys; f=open(sys.argv[1],"rb"); n=struct.unpack("<Q",f.read(8))[0]; sys.stdout.write(f.read(n).hex())' "$1"; }
[ "$(st_header "$T/mixed/$shard")" = "$(st_header "$T/other/$shard")" ] && ok || fail "headers differ: not the case under test"
cp "$T/other/$shard" "$T/mixed/$shard"
expect_exit 2 "$MP" convert "$T/mixed" -o "$T/mixed.moepack" --resume --quiet
expect_in "$err" 'mixed\.moepack\.partial\.journal: belongs to a conversion with other input or options \(or a source file was replaced'

# a resumed conversion that fails keeps what the earlier run finished (before, the journal was
# deleted and the work lost): here OUT.partial cannot be opened, then can again
expect_exit 2 "$MP" convert "$T/src" -o "$T/keep.moepack" --stop-after-units 1 --quiet
mv "$T/keep.moepack.partial" "$T/keep.saved" && mkdir "$T/keep.moepack.partial"
expect_exit 2 "$MP" convert "$T/src" -o "$T/keep.moepack" --resume --quiet
expect_in "$err" 'keep\.moepack\.partial and its journal are kept; the same command with --resume continues'
[ -s "$T/keep.moepack.partial.journal" ] && ok || fail "a failed resume deleted the journal"
rmdir "$T/keep.moepack.partial" && mv "$T/keep.saved" "$T/keep.moepack.partial"
expect_exit 0 "$MP" convert "$T/src" -o "$T/keep.moepack" --resume --quiet
expect_exit 0 "$MP" convert "$T/src" -o "$T/keep-ref.moepack" --quiet
cmp -s "$T/keep.moepack" "$T/keep-ref.moepack" && ok || fail "the resumed conversion differs from one run"

# a GGUF without the expert groups: the routing change is said before converting, --config keeps them
if [ -n "$FIX" ] && [ -d "$FIX" ]; then
    expect_exit 0 "$MP" convert "$FIX/tiny-v3-bf16.gguf" -o "$T/g.moepack" --quiet
    expect_in "$err" 'warning: .*tiny-v3-bf16\.gguf: the expert groups \(n_group, topk_group\) are not recorded'
    expect_exit 0 "$MP" convert "$FIX/tiny-v3-bf16.gguf" -o "$T/g2.moepack" --quiet --config "$FIX/tiny-v3/config.json"
    # (the fixture's chat template is not the official one: that warning stays, convert.sh checks it)
    if printf '%s' "$err" | grep -v 'the chat template' | grep -q 'warning'; then fail "warned with --config: $err"; else ok; fi
fi
expect_exit 0 "$MP" convert "$T/src" -o "$T/plain.moepack" --quiet
if printf '%s' "$err" | grep -q 'warning'; then fail "warned on a safetensors checkpoint: $err"; else ok; fi

# ---- a conversion that takes a while: concurrent, interrupted and resumed runs ----
"$MP" synth --like tiny --layers 30 -q -o "$T/long" && ok || fail "synth a 30-layer model"
# wait_for_journal_line FILE PATTERN: until the journal FILE has a line matching PATTERN (the conversion
# is past its lock)
wait_for_journal_line() {
    for _ in $(seq 1 1000); do grep -qE "$2" "$1" 2>/dev/null && return 0; sleep 0.01; done
    return 1
}

# a second conversion to the output that another one is writing is refused at once, with or without
# --resume, and the first finishes undisturbed. Before, the second truncated the first's live partial
# file calling it "left by an interrupted conversion", and exited 0; the first failed at its rename.
"$MP" convert "$T/long" -o "$T/busy.moepack" --quiet --threads 1 &
pid=$!
# its journal's first line: written under the lock, before any unit, so the pause below comes with the
# whole conversion still ahead, however fast the machine
wait_for_journal_line "$T/busy.moepack.partial.journal" '^moepack-journal 1 ' && ok || fail "the first conversion wrote no journal"
kill -STOP "$pid" # held mid-conversion, however fast the machine is
[ ! -e "$T/busy.moepack" ] && ok || fail "the first conversion finished before the second started"
expect_exit 2 "$MP" convert "$T/long" -o "$T/busy.moepack" --quiet --gpu-quant bf16
# the pid comes from /proc/locks, where there is one
expect_in "$err" "^moepack: .*busy\.moepack: another moepack convert( \(pid $pid\))? is writing .*busy\.moepack\.partial; wait for it to finish or choose another output path\$"
if printf '%s' "$err" | grep -q 'left by an interrupted conversion'; then fail "took the live file for a leftover"; else ok; fi
expect_exit 2 "$MP" convert "$T/long" -o "$T/busy.moepack" --quiet --resume
expect_in "$err" 'another moepack convert .*is writing .*busy\.moepack\.partial'
kill -CONT "$pid"
wait "$pid"; rc=$?
[ "$rc" -eq 0 ] && ok || fail "the first conversion ended with $rc after the second was refused"
expect_exit 0 "$MP" verify "$T/busy.moepack"
expect_exit 0 "$MP" inspect "$T/busy.moepack" --json
expect_in "$out" '"options": "--cpu-quant int8 --gpu-quant int4-asym '
[ ! -e "$T/busy.moepack.partial" ] && [ ! -e "$T/busy.moepack.partial.journal" ] && ok || fail "files left after it"
# once it is done, the same output can be converted to again
expect_exit 0 "$MP" convert "$T/long" -o "$T/busy.moepack" --quiet --gpu-quant bf16

# SIGINT: one line naming the files kept and the command that continues, exit 130 (the signal's).
# Before, nothing was said. The command, run as printed, finishes the same file as one run.
"$MP" convert "$T/long" -o "$T/ref.moepack" --quiet && ok || fail "convert the reference"
o="$T/sig int's.moepack" # a name that the printed command must quote
set -m # job control: a script's background job would otherwise ignore SIGINT
"$MP" convert "$T/long" -o "$o" --threads 1 2>"$T/sigint.err" &
pid=$!
set +m
wait_for_journal_line "$o.partial.journal" 'end 1' && ok || fail "the conversion to interrupt wrote no journal"
kill -INT "$pid"
wait "$pid"; rc=$?
[ "$rc" -eq 130 ] && ok || fail "convert ended with $rc after SIGINT (want 130: the signal)"
said=$(grep 'interrupted' "$T/sigint.err")
expect_in "$said" "^moepack: convert interrupted; .*sig int's\.moepack\.partial and .*sig int's\.moepack\.partial\.journal are kept; to continue: moepack convert .* --resume\$"
[ -s "$o.partial" ] && [ -s "$o.partial.journal" ] && ok || fail "the partial file or its journal is gone"
if [ -n "$said" ]; then
    continue_cmd=${said#*to continue: moepack }
    eval "expect_exit 0 \"\$MP\" $continue_cmd"
else
    "$MP" convert "$T/long" -o "$o" --threads 1 --resume 2>/dev/null # finish it, for the checks below
fi
expect_in "$err" "resuming .*sig int's\.moepack\.partial: [1-9][0-9]* of 31 units restored, checked against the journal's checksums"
cmp -s "$o" "$T/ref.moepack" && ok || fail "the interrupted and continued conversion differs from one run"
# --resume re-hashes the finished units it takes from OUT.partial: 4 KiB changed in one of them since
# is found, that unit converted again, and the container verifies. Before, the changed bytes went into
# the container under the old checksum: exit 0, then verify failed.
expect_exit 2 "$MP" convert "$T/long" -o "$T/flip.moepack" --quiet --stop-after-units 3
expect_exit 0 "$MP" inspect "$T/ref.moepack" --json --tensors
off=$(printf '%s' "$out" | python3 -c '
import json, sys
t = [t for t in json.load(sys.stdin)["tensors"] if t["name"] == "blk.1.ffn_down_exps.3"][0]
assert t["data_bytes"] >= 8192
print(t["offset"] + 4096)')
python3 -c '
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(int(sys.argv[2])); b = f.read(4096); f.seek(int(sys.argv[2])); f.write(bytes(x ^ 0x55 for x in b))' \
    "$T/flip.moepack.partial" "$off" && ok || fail "flip 4 KiB of the partial file"
expect_exit 0 "$MP" convert "$T/long" -o "$T/flip.moepack" --resume
expect_in "$err" 'flip\.moepack\.partial: 1 of the 3 finished units differ from the checksums the journal recorded \(first: blk\.1\.ffn_down_exps\.3, in layer 1\): the file was changed or damaged since; converting it again'
expect_in "$err" "resuming .*flip\.moepack\.partial: 2 of 31 units restored, checked against the journal's checksums \([0-9.]+ MB in [0-9.]+ s\); 1 more differed and is converted again"
expect_in "$out" '2 units taken from the interrupted run'
expect_exit 0 "$MP" verify "$T/flip.moepack"
cmp -s "$T/flip.moepack" "$T/ref.moepack" && ok || fail "the resumed conversion differs from one run"
# a journal without its partial file: every unit converted again, not taken on trust
expect_exit 2 "$MP" convert "$T/long" -o "$T/gone.moepack" --quiet --stop-after-units 2
rm "$T/gone.moepack.partial"
expect_exit 0 "$MP" convert "$T/long" -o "$T/gone.moepack" --quiet --resume
expect_in "$err" 'gone\.moepack\.partial: 2 of the 2 finished units differ from the checksums'
cmp -s "$T/gone.moepack" "$T/ref.moepack" && ok || fail "a journal without its partial file gave another file"
finish
