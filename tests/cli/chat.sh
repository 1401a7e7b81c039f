# moepack chat past its context: the oldest exchanges are dropped and the chat goes on; a message that
# cannot fit even alone is refused and the chat goes on without it, its history intact.
. "$(dirname "$0")/../lib.sh"
T=$(tmpdir cli_chat)
X="$T/tiny.moepack"
"$MP" synth --like tiny -q -o "$T/src" && ok || fail "synth tiny"
"$MP" convert "$T/src" -o "$X" --quiet && ok || fail "convert tiny"

line="a long line of text that goes on and on and on for quite a while"
expect_exit 0 bash -c "yes '$line' | head -12 | '$MP' chat '$X' -n 24 --ctx 160 --threads 2"
expect_in "$err" '^turn 12: '
expect_in "$err" 'dropped the oldest exchange to fit the context of 160 tokens'
if printf '%s' "$err" | grep -q 'context full\|no room for an answer'; then fail "the chat hit the context"; else ok; fi

long=$(python3 -c "print('word ' * 400)")
expect_exit 0 bash -c "printf 'hello\n%s\nagain\n' '$long' | '$MP' chat '$X' -n 8 --ctx 160 --threads 2"
expect_in "$err" 'chat: this message needs [0-9]+ tokens, which leaves no room for an answer in the context of 160 \(raise --ctx\); not sent'
expect_in "$err" '^turn 2: '
if printf '%s' "$err" | grep -q 'dropped'; then fail "history dropped for a message that was not sent"; else ok; fi
# turn 2 is the third line answered with the first exchange still in the prompt (it shares its prefix)
expect_in "$err" '^turn 2: prompt tokens: [0-9]+ \([1-9][0-9]* cached, [0-9]+ evaluated\)'
read -r total cached evaluated <<< "$(printf '%s\n' "$err" | sed -nE 's/^turn 2: prompt tokens: ([0-9]+) \(([0-9]+) cached, ([0-9]+) evaluated\).*/\1 \2 \3/p')"
[ "$total" -eq $((cached + evaluated)) ] && ok || fail "turn 2: $total tokens, $cached cached, $evaluated evaluated"
# a first message that fits but leaves the reply less than -n: nothing to drop, the reply stops at the context
mid=$(python3 -c "print('word ' * 68)")
expect_exit 0 bash -c "printf '%s\nshort\n' '$mid' | '$MP' chat '$X' -n 24 --ctx 160 --threads 2"
expect_in "$err" '^turn 1: .*\(stopped: context full\)'
expect_in "$err" '^turn 2: '
# --ctx holds the prompt and the answer together in chat too: a first turn with a context 3 tokens
# longer than its prompt gets 3 tokens at most (fewer only if the model ends the reply)
expect_exit 0 "$MP" tokenize "$X" --chat "hello"
plen=$(printf '%s' "$out" | wc -w)
expect_exit 0 bash -c "printf 'hello\n' | '$MP' chat '$X' -n 8 --ctx $((plen + 3)) --temp 0"
gen=$(printf '%s' "$err" | sed -n 's/^turn 1: prompt tokens: [0-9]* .*, generated \([0-9]*\),.*/\1/p')
[ -n "$gen" ] && [ "$gen" -ge 1 ] && [ $((plen + gen)) -le $((plen + 3)) ] && ok ||
    fail "chat: a $plen-token prompt and $gen generated tokens in a context of $((plen + 3)): $err"
# and when it took all 3, it says the context stopped it
[ "$gen" != 3 ] || expect_in "$err" '^turn 1: .*generated 3, .*\(stopped: context full\)'
finish
