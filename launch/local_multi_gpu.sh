#!/usr/bin/env bash
# Run an experiment on one multi-GPU machine through a local Ray head (dashboard on :8265,
# `ray job submit` possible). Usage: bash launch/local_multi_gpu.sh SPEC
set -euo pipefail
spec="${1:?usage: local_multi_gpu.sh SPEC}"
raysweep validate "$spec"
ray start --head --node-ip-address 127.0.0.1 --dashboard-host 127.0.0.1 \
  --num-gpus "$(python -c 'import torch; print(torch.cuda.device_count())')"
trap 'ray stop' EXIT
RAY_ADDRESS=127.0.0.1:6379 raysweep run "$spec"
