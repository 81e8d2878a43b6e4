#!/usr/bin/env bash
# Run an experiment on one multi-GPU machine through a local Ray head with token
# authentication: the dashboard (and `ray job submit`) listen on 127.0.0.1 only, and every Ray
# connection needs the token. The head is this script's own: it is stopped when the run ends
# (or fails, or is interrupted), and no other Ray instance on the machine is touched.
#
#   bash launch/local_multi_gpu.sh SPEC
#
# The token: RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH when set, else Ray's ~/.ray/auth_token,
# created on first use (`ray get-auth-token --generate`, readable by you alone). It is never
# printed. Ports and Ray's temporary folder, for a machine shared with other Ray instances:
# RAYSWEEP_RAY_PORT (default 6379), RAYSWEEP_DASHBOARD_PORT (8265),
# RAYSWEEP_DASHBOARD_AGENT_PORT (52365), RAYSWEEP_RAY_CLIENT_PORT (10001),
# RAYSWEEP_RAY_TEMP_DIR (/tmp/ray); the head's log goes to $RAYSWEEP_RAY_TEMP_DIR/raysweep-head.log.
set -euo pipefail

spec="${1:?usage: local_multi_gpu.sh SPEC}"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
port="${RAYSWEEP_RAY_PORT:-6379}"
temp_dir="${RAYSWEEP_RAY_TEMP_DIR:-/tmp/ray}"

python -m raysweep.cli validate "$spec"

export RAY_AUTH_MODE=token
if [ -z "${RAY_AUTH_TOKEN:-}" ] && [ -z "${RAY_AUTH_TOKEN_PATH:-}" ] && [ ! -s "$HOME/.ray/auth_token" ]; then
  (umask 077 && ray get-auth-token --generate >/dev/null)
fi

gpus="$(python -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)')"
mkdir -p "$temp_dir"
log="$temp_dir/raysweep-head.log"
ray start --head --block --disable-usage-stats \
  --node-ip-address 127.0.0.1 --port "$port" --temp-dir "$temp_dir" \
  --dashboard-host 127.0.0.1 --dashboard-port "${RAYSWEEP_DASHBOARD_PORT:-8265}" \
  --dashboard-agent-listen-port "${RAYSWEEP_DASHBOARD_AGENT_PORT:-52365}" \
  --ray-client-server-port "${RAYSWEEP_RAY_CLIENT_PORT:-10001}" \
  --num-gpus "$gpus" >"$log" 2>&1 &
head_pid=$!
run_pid_file="$temp_dir/raysweep-run.pid"
watch_pid=""
stop_head() {
  if [ -n "$watch_pid" ]; then kill "$watch_pid" 2>/dev/null || true; fi
  kill -TERM "$head_pid" 2>/dev/null || true   # `ray start --block` stops its node on SIGTERM
  wait "$head_pid" 2>/dev/null || true
  rm -f "$run_pid_file"
}
trap stop_head EXIT
trap 'exit 130' INT TERM

for _ in $(seq 180); do   # the head is up once `ray status` answers (with the token)
  if ray status --address "127.0.0.1:$port" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$head_pid" 2>/dev/null; then
    echo "error: local_multi_gpu.sh: the Ray head did not start; its log: $log" >&2
    exit 1
  fi
  sleep 1
done
echo "Ray head on 127.0.0.1:$port ($gpus GPUs); dashboard http://127.0.0.1:${RAYSWEEP_DASHBOARD_PORT:-8265}"

# Should the head stop under the run (`ray start --block` stops every process of its node when
# one of them fails), interrupt the run instead of leaving it waiting for a cluster that is gone.
(
  while kill -0 "$head_pid" 2>/dev/null; do sleep 2; done
  if [ -s "$run_pid_file" ]; then
    run_pid="$(cat "$run_pid_file")"
    echo "error: local_multi_gpu.sh: the Ray head stopped during the run; its log: $log" >&2
    kill -INT "$run_pid" 2>/dev/null && sleep 30 && kill -KILL "$run_pid" 2>/dev/null
  fi
) &
watch_pid=$!
status=0
RAY_ADDRESS="127.0.0.1:$port" bash -c 'echo $$ > "$1"; exec python -m raysweep.cli run "$2"' \
  run "$run_pid_file" "$spec" || status=$?
rm -f "$run_pid_file"
exit "$status"
