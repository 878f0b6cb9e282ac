#!/usr/bin/env bash
# Run every benchmark in this folder, one after the other (`make bench`).
# Each script prints its figures and the ratio against the peer it names.
set -euo pipefail
cd "$(dirname "$0")"
for script in bench_*.py; do
    echo "=== ${script}"
    python "${script}"
done
