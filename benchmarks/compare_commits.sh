#!/usr/bin/env bash
# Throughput of two or more commits in alternating order, for a before/after figure.
#
#   bash benchmarks/compare_commits.sh REV [REV ...] [-- BENCHMARK ARGS]
#   e.g. bash benchmarks/compare_commits.sh f218ca7 HEAD -- --runs 2000 --backends postgres
#
# Each REV is checked out in its own git worktree under a temporary folder and
# run with this repository's .venv (the worktree's package comes first on
# sys.path). The order of the commits rotates every rep (REPS, default 6), so a
# machine getting busier does not favour one side. Prints every table row,
# prefixed with the rep and the commit; take medians and ranges from them.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
revs=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do revs+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ ${#revs[@]} -ge 2 ] || { echo "usage: $0 REV REV [REV ...] [-- BENCHMARK ARGS]" >&2; exit 2; }
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--runs 2000 --pickup-runs 0 --backends postgres sqlite)
reps="${REPS:-6}"
work="$(mktemp -d)"
cleanup() {
  for rev in "${revs[@]}"; do git worktree remove --force "$work/$rev" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
for rev in "${revs[@]}"; do git worktree add -q --detach "$work/$rev" "$rev"; done
count=${#revs[@]}
for rep in $(seq 1 "$reps"); do
  for k in $(seq 0 $((count - 1))); do
    rev="${revs[$(((k + rep) % count))]}"
    (cd "$work/$rev" && "$root/.venv/bin/python" -m benchmarks "${args[@]}" 2>&1) \
      | grep '^| python' | sed "s/^/rep$rep $rev /"
  done
done
