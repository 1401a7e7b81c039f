"""The checks of a Python serve test (edges.py, prompt_sampling.py): check() counts each, prints
FAIL: ... for a failed one, and summary() prints the count and gives the exit status."""
import sys

checks = fails = 0


def check(cond, what):
    global checks, fails
    checks += 1
    if not cond:
        fails += 1
        print("FAIL: " + what, file=sys.stderr)
    return cond


def summary():
    """Prints how many checks ran and failed; 1 if any failed, else 0."""
    if fails:
        print("%d of %d checks failed" % (fails, checks))
        return 1
    print("all %d checks passed" % checks)
    return 0
