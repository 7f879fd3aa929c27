#!/usr/bin/env bash
# Run the l2tp.lac benchmarks inside a lab guest and print their figures.
# See bench/README.md for what each figure measures and the last results.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: bench/run.sh [--suite bookworm|bullseye] [--guest GUESTS_JSON] FIGURE...

FIGURE is p3, p1, p2, p4, memory or all (all five). P3 runs first when
requested, because its first site.yml run needs a guest that nothing has
converged yet.

Without --guest, boots the lab guest bench-SUITE (default suite bookworm),
runs the figures in it and stops it at the end, also after a failure or
Ctrl-C. With --guest, uses the first guest of a file written by
`python3 molecule/lab/lab.py up NAME=SUITE --json FILE` and leaves it running.

Needs root, the repository's virtual environment active (lab.py runs on
Python 3.11) and L2TP_LAC_LAB_CACHE (default /var/cache/l2tp-lac-lab).
Prints the figures and keeps a copy in bench/output/SUITE-DATE.txt, with one
JSON line per figure in bench/output/SUITE-DATE.jsonl.

Exit status: 0 when every requested figure was measured, 1 when one failed,
2 for a usage error, 3 when a figure cannot run on the guest (such as P1 on
a kernel that cannot bridge, or P3 on a guest that site.yml already ran on).
EOF
}

repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
export L2TP_LAC_LAB_CACHE=${L2TP_LAC_LAB_CACHE:-/var/cache/l2tp-lac-lab}

# The guest's copy: the collection where Python finds it as ansible_collections.l2tp.lac,
# the session fixture and the benchmark scripts.
guest_root=/root/l2tp-bench
guest_results=$guest_root/results.jsonl

suite=bookworm
guest_json=""
figures=()
while [ $# -gt 0 ]; do
    case "$1" in
        --suite) suite=${2:?--suite needs bookworm or bullseye}; shift 2 ;;
        --guest) guest_json=${2:?--guest needs the JSON file of lab.py up}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        p1|p2|p4|memory|p3) figures+=("$1"); shift ;;
        all) figures+=(p3 p1 p2 p4 memory); shift ;;
        *) echo "run.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
if [ ${#figures[@]} -eq 0 ]; then
    usage >&2
    exit 2
fi
case "$suite" in
    bookworm|bullseye) ;;
    *) echo "run.sh: unknown suite '$suite'; use bookworm or bullseye" >&2; exit 2 ;;
esac

wants() {
    local figure
    for figure in "${figures[@]}"; do
        [ "$figure" = "$1" ] && return 0
    done
    return 1
}

guest_name=""
work=""
clean_up() {
    # A closed output must not stop the clean-up halfway.
    trap '' PIPE
    if [ -n "$guest_name" ]; then
        echo "stopping guest $guest_name"
        (cd "$repo" && "$python" molecule/lab/lab.py down "$guest_name") >/dev/null 2>&1 || true
    fi
    if [ -n "$work" ]; then
        rm -rf "$work"
    fi
}

ssh_guest() {
    ssh -i "$guest_key" -p "$guest_port" \
        -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
        -o BatchMode=yes -o ConnectTimeout=10 -o ServerAliveInterval=30 \
        "$guest_user@$guest_address" "$@"
}

read_guest_field() {
    "$python" -c 'import json, sys; print(json.load(open(sys.argv[1]))[0][sys.argv[2]])' "$guest_json" "$1"
}

copy_to_guest() {
    tar -C "$repo" -cf - --exclude=__pycache__ \
        --transform 's,^plugins,ansible_collections/l2tp/lac/plugins,' \
        --transform 's,^bench/guest,bench,' \
        --transform 's,^molecule/lab/fixture/,,' \
        plugins bench/guest molecule/lab/fixture/ppp_sessions.py |
        ssh_guest "rm -rf $guest_root && mkdir -p $guest_root && tar -C $guest_root -xf - && rm -f $guest_results"
}

failed=()
cannot_run=()
run_figure() {
    local label=$1 status=0
    shift
    echo
    echo "== $label"
    ssh_guest python3 "$guest_root/bench/$*" --json "$guest_results" || status=$?
    case $status in
        0) ;;
        3) cannot_run+=("$label") ;;
        *) failed+=("$label (exit $status)") ;;
    esac
}

main() {
    echo "l2tp.lac benchmarks: ${figures[*]}"
    echo "controller: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores," \
         "$(date -u +%Y-%m-%dT%H:%M:%SZ)"

    if [ -z "$guest_json" ]; then
        guest_name=bench-$suite
        echo "booting guest $guest_name ($suite) under QEMU TCG with molecule/lab/lab.py"
        (cd "$repo" && "$python" molecule/lab/lab.py up "$guest_name=$suite" --json "$work/guest.json") >/dev/null
        guest_json=$work/guest.json
    fi
    guest_address=$(read_guest_field address)
    guest_port=$(read_guest_field port)
    guest_user=$(read_guest_field user)
    guest_key=$(read_guest_field identity_file)
    echo "guest: $(read_guest_field instance), $(read_guest_field suite), kernel $(read_guest_field kernel)"

    copy_to_guest

    if wants p3; then
        echo
        echo "== p3"
        local status=0
        "$python" "$repo/bench/site_rerun.py" --guest "$guest_json" --work "$work" \
            --log-prefix "$repo/bench/output/$suite-$stamp-p3" --json "$work/p3.jsonl" || status=$?
        case $status in
            0) ;;
            3) cannot_run+=(p3) ;;
            *) failed+=("p3 (exit $status)") ;;
        esac
    fi
    local bridge_args=()
    wants p1 && bridge_args+=(p1)
    wants p2 && bridge_args+=(p2)
    if [ ${#bridge_args[@]} -gt 0 ]; then
        run_figure "${bridge_args[*]}" bridge_figures.py "${bridge_args[@]}"
    fi
    if wants p4; then
        run_figure p4 frame_figures.py
    fi
    if wants memory; then
        run_figure memory bridge_figures.py memory
    fi
    ssh_guest cat "$guest_results" > "$results_file" 2>/dev/null || true
    if [ -f "$work/p3.jsonl" ]; then
        cat "$work/p3.jsonl" >> "$results_file"
    fi
    echo
    if [ -s "$results_file" ]; then
        echo "results: $log_file and $results_file"
    else
        # No figure was measured, so there is no JSON line to keep.
        rm -f "$results_file"
        echo "output: $log_file"
    fi
    if [ ${#failed[@]} -gt 0 ]; then
        echo "failed: ${failed[*]}"
        return 1
    fi
    if [ ${#cannot_run[@]} -gt 0 ]; then
        echo "cannot run on this guest: ${cannot_run[*]}"
        return 3
    fi
    return 0
}

mkdir -p "$repo/bench/output"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
log_file=$repo/bench/output/$suite-$stamp.txt
results_file=$repo/bench/output/$suite-$stamp.jsonl

# tee ignores INT and TERM, so that it still logs the clean-up after Ctrl-C.
exec > >(trap '' INT TERM; exec tee "$log_file") 2>&1
work=$(mktemp -d)
trap clean_up EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
main
