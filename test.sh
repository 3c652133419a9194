#!/usr/bin/env bash
# The one command that runs every test of Quasar (what CI runs after fmt and clippy).
# Long soaks, fuzzing and benchmarks are separate commands: see README.md.
set -euo pipefail
cd "$(dirname "$0")"
ulimit -l unlimited 2>/dev/null || true
exec cargo test --workspace --locked "$@"
