#!/usr/bin/env bash
# Mutation testing with mutmut over the code where a wrong line is a security or data-loss
# bug: the request status machine, report claims, authentication, report rendering, mail.
# Not run in CI: each scope takes minutes on two cores. Results go to docs/testing.md.
#
#   scripts/mutation.sh                  # every scope in turn, each within its time budget
#   scripts/mutation.sh claims mail      # some scopes: status claims auth rendering mail
#   MUTATION_BUDGET=300 scripts/mutation.sh auth   # seconds per scope (default 900)
#   MUTATION_ONLY='auth.x_log_in* models.users.xǁUserǁregister*' scripts/mutation.sh auth
#                                        # only the scope's mutants these name globs match
#   .venv/bin/mutmut show NAME           # the diff of one mutant; `mutmut browse` for all
#
# mutmut copies the code into mutants/, runs the test selection of [tool.mutmut] in
# pyproject.toml once to learn which tests reach which function, then runs, for each
# mutant, only the tests that reach its function. A scope stopped by its budget keeps the
# verdicts it reached; the next run of the same scope tries only its mutants not yet killed
# (not checked, survived, no tests), so a survivor is re-checked once a test is added for it.
# Survivors judged equivalent or not worth a test are listed, each with its reason, in
# scripts/mutation-accepted.txt; a re-run skips them. After a change to the mutated code
# (mutant numbers shift), MUTATION_ALL=1 runs every mutant of the scope again.
# MUTATION_ONLY narrows a run to some functions of the scope (globs over mutant names, as in
# `mutmut results`; end one with `*`, not `__mutmut_*`, so that it also names the function
# and mutmut's clean run is only that function's tests); the figures still cover the scope.
#
#   MUTATION_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres scripts/mutation.sh status
#                                        # each mutant's tests on SQLite and PostgreSQL
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

budget="${MUTATION_BUDGET:-900}"
# SQLite only by default: a PostgreSQL pass doubles every mutant's run. MUTATION_DATABASE_URL
# (a PostgreSQL server, as TEST_DATABASE_URL) adds one, for the lines only PostgreSQL runs:
# BookRequest.create's row lock and count
if [ -n "${MUTATION_DATABASE_URL:-}" ]; then
  export TEST_DATABASE_URL="$MUTATION_DATABASE_URL"
else
  unset TEST_DATABASE_URL
fi
# every mutant runs a test session of its own: it starts from a copy of one migrated
# database (made by the first session of this run) instead of migrating its own
mkdir -p mutants
export TEST_SQLITE_TEMPLATE="$ROOT/mutants/schema.db"
rm -f "$TEST_SQLITE_TEMPLATE"
# one process: the machine's other work keeps the second core
children="${MUTATION_CHILDREN:-1}"
only="${MUTATION_ONLY:-}"

declare -A SCOPES=(
  [status]="models.book_requests.xǁBookRequestǁ* models.book_requests.x_decided__mutmut_*
    models.users.x_lock_users__mutmut_*"
  [claims]="models.reports.xǁReportǁ* models.report_chunks.xǁReportChunkǁ*"
  [auth]="auth.* login_sessions.* models.users.xǁUserǁ* models.users.x_username_key__mutmut_*
    models.users.x_release_stale_address__mutmut_* models.users.x_conflict_message__mutmut_*"
  [rendering]="report_builder.* report_formats.* monthly_reports.*
    library_report.x_pending_rows__mutmut_* library_report.x_overdue_rows__mutmut_*
    library_report.x_parse_stored__mutmut_* library_report.xǁLibraryHtmlRendererǁ*"
  [mail]="mail.*"
)
ORDER=(status claims auth rendering mail)

scopes=("$@")
[ ${#scopes[@]} -eq 0 ] && scopes=("${ORDER[@]}")
for scope in "${scopes[@]}"; do
  [ -n "${SCOPES[$scope]:-}" ] || die "unknown scope '$scope': use ${ORDER[*]}"
done

# the words of stdin that match one of the name globs given as arguments
matching() {
  python -c '
import fnmatch
import sys

for word in sys.stdin.read().split():
    if any(fnmatch.fnmatchcase(word, pattern) for pattern in sys.argv[1:]):
        print(word)
' "$@"
}

# "NAME VERDICT" of every mutant of a scope that mutmut has generated
verdicts() {
  mutmut results --all true 2>/dev/null | python -c '
import fnmatch
import sys

for line in sys.stdin:
    name, _, verdict = line.strip().rpartition(": ")
    if any(fnmatch.fnmatchcase(name, pattern) for pattern in sys.argv[1:]):
        print(name, verdict.replace(" ", "_"))
' "$@"
}

# the scopes are globs over mutant names ("mail.*"), never file names
set -f
for scope in "${scopes[@]}"; do
  # shellcheck disable=SC2086  # split into one name glob per word
  known=$(verdicts ${SCOPES[$scope]})
  names=$(awk 'NR == FNR { if ($1 !~ /^#/) accepted[$1] = 1; next }
    $2 != "killed" && $2 != "timeout" && !($1 in accepted) { print $1 }' \
    "$ROOT/scripts/mutation-accepted.txt" - <<< "$known")
  if [ "${MUTATION_ALL:-0}" = 1 ] || [ -z "$known" ]; then
    names="${SCOPES[$scope]}"  # a first run, or every mutant again
    # the globs of MUTATION_ONLY stand for the scope's: they are meant to lie within it
    [ -z "$only" ] || names="$only"
  elif [ -n "$only" ]; then
    # shellcheck disable=SC2086  # one name glob per word
    names=$(matching $only <<< "$names")
  fi
  if [ -z "$names" ]; then
    say "Scope '$scope': every mutant${only:+ matching MUTATION_ONLY} is killed"
    continue
  fi
  say "Mutating scope '$scope' ($(wc -w <<< "$names") names or globs), at most ${budget}s"
  # shellcheck disable=SC2086  # one mutant name or name glob per word
  timeout --signal=INT "$budget" mutmut run --max-children "$children" $names \
    > "mutants-$scope.log" 2>&1 || say "scope '$scope' stopped (budget or error): see mutants-$scope.log"
done

say "Verdicts per scope (survivors accepted in scripts/mutation-accepted.txt in brackets)"
mutmut results --all true > mutants-results.txt 2>/dev/null
args=()
for scope in "${scopes[@]}"; do args+=("$scope=${SCOPES[$scope]}"); done
python - "${args[@]}" <<'EOF'
import fnmatch
import sys
from collections import Counter

with open("mutants-results.txt", encoding="utf-8") as results:
    verdicts = [line.strip().rsplit(": ", 1) for line in results if ": " in line]
with open("scripts/mutation-accepted.txt", encoding="utf-8") as listed:
    accepted = {line.split()[0] for line in listed if line.strip() and not line.startswith("#")}
for arg in sys.argv[1:]:
    scope, patterns = arg.split("=", 1)
    mine = [
        (name, verdict)
        for name, verdict in verdicts
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns.split())
    ]
    counts = Counter(verdict for _, verdict in mine)
    explained = sum(verdict == "survived" and name in accepted for name, verdict in mine)
    tried = counts["killed"] + counts["survived"] + counts["timeout"]
    score = f"{(counts['killed'] + counts['timeout']) / tried:.0%}" if tried else "n/a"
    print(
        f"{scope:10} killed {counts['killed']:4}  survived {counts['survived']:4} "
        f"(accepted {explained:3})  "
        f"no tests {counts['no tests']:4}  timeout {counts['timeout']:3}  "
        f"not checked {counts['not checked']:4}  score {score}"
    )
EOF
say "Survivors: .venv/bin/mutmut results; one mutant's diff: .venv/bin/mutmut show NAME"
