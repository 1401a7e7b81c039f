# The binary runs, prints its version, and uses the documented exit codes.
. "$(dirname "$0")/../lib.sh"
expect_exit 0 "$MP" version
expect_in "$out" '^moepack [0-9]+\.[0-9]+\.[0-9]+'
expect_exit 1 "$MP" no-such-command
expect_in "$err" "unknown command 'no-such-command'"
expect_exit 1 "$MP"
expect_exit 0 "$MP" --help
expect_in "$out" 'exit codes'
finish
