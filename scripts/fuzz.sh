#!/usr/bin/env bash
# Runs every cargo-fuzz target (dataplane/fuzz, control/fuzz) for a bounded time.
#   scripts/fuzz.sh [SECONDS]        (default 60 per target)
#   FUZZ_TARGETS="parse" scripts/fuzz.sh 30   (a subset)
# Targets: parse, pipeline (dataplane/fuzz); bgp (control/fuzz: the BGP
# decoder and session state machine).
# Each target is built (nightly, release, with debug assertions and overflow
# checks, without AddressSanitizer: both crates are safe Rust, so ASan would
# find nothing the bounds checks do not, at several times the cost; the
# pipeline harness checks buffer leaks itself), then run for
# SECONDS on a temporary working corpus seeded from the checked-in one in
# <crate>/fuzz/corpus/<target>, which is only read: the repository stays
# clean. A crash, leak or timeout fails the script; the input that caused it
# is kept in <crate>/fuzz/artifacts/<target>/ (git-ignored) and its path is
# printed. Reproduce with:
#   cd <crate> && cargo +nightly fuzz run -O -a -s none <target> fuzz/artifacts/<target>/<file>
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

secs="${1:-60}"
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [ "$secs" -lt 1 ]; then
    echo "usage: $0 [SECONDS]   (a positive whole number of seconds per target)" >&2
    exit 2
fi

root="$(pwd)"
targets=(${FUZZ_TARGETS:-parse pipeline bgp})
# The crate a target fuzzes (cargo-fuzz finds `fuzz/` next to it).
crate_of() {
    case "$1" in
        bgp) echo control ;;
        *) echo dataplane ;;
    esac
}

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz is not installed (cargo install --locked cargo-fuzz)" >&2
    exit 1
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/sluice-fuzz.XXXXXX")"
trap 'rm -rf "$work"' EXIT

fuzz_flags=(--release --debug-assertions --sanitizer none)

echo "fuzz: building ${targets[*]}"
for t in "${targets[@]}"; do
    (cd "$root/$(crate_of "$t")" && cargo +nightly fuzz build "${fuzz_flags[@]}" "$t")
done

failed=()
for t in "${targets[@]}"; do
    cd "$root/$(crate_of "$t")"
    fuzz_dir="$root/$(crate_of "$t")/fuzz"
    corpus="$work/corpus-$t"
    artifacts="$fuzz_dir/artifacts/$t"
    mkdir -p "$corpus" "$artifacts"
    if [ -d "$fuzz_dir/corpus/$t" ]; then
        cp -R "$fuzz_dir/corpus/$t/." "$corpus/"
    fi
    log="$work/$t.log"
    echo "fuzz: $t for ${secs}s ($(find "$corpus" -type f | wc -l) seeds)"
    set +e
    cargo +nightly fuzz run "${fuzz_flags[@]}" "$t" "$corpus" -- \
        -max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$artifacts/" >"$log" 2>&1
    rc=$?
    set -e
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cov=$(grep -Eo 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1 || true)
    if [ "$rc" -eq 0 ]; then
        echo "fuzz: $t ok: ${runs:-?} runs, ${rate:-?} exec/s, ${cov:-no coverage line}, corpus $(find "$corpus" -type f | wc -l) inputs"
    else
        echo "fuzz: $t FAILED (exit $rc); last lines of its log:" >&2
        tail -n 40 "$log" >&2
        grep -E "panicked at|^ERROR: |^SUMMARY: " "$log" | head -n 5 >&2 || true
        crash=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
        if [ -n "$crash" ]; then
            echo "fuzz: $t crashing input: $crash" >&2
        else
            echo "fuzz: $t: no input was saved (build or harness failure?); see above" >&2
        fi
        failed+=("$t")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: failed targets: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: all targets ran ${secs}s without a crash"
