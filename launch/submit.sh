#!/usr/bin/env bash
# Submit a raysweep experiment to a running Ray cluster.
#   RAY_ADDRESS=http://HEAD:8265 RAY_AUTH_MODE=token RAY_AUTH_TOKEN=... bash launch/submit.sh SPEC [--no-wait]
# The working directory (this checkout) is uploaded; the job runs `raysweep run SPEC` on the head.
set -euo pipefail
spec="${1:?usage: submit.sh SPEC [ray job submit options]}"
shift
: "${RAY_ADDRESS:?set RAY_ADDRESS=http://<head>:8265}"
raysweep validate "$spec"
exec ray job submit \
  --working-dir . \
  --runtime-env-json '{"excludes": [".venv", ".git", "benchmarks/out"]}' \
  "$@" \
  -- raysweep run "$spec"
