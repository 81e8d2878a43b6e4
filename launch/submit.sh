#!/usr/bin/env bash
# Submit a raysweep experiment to a running Ray cluster (`ray job submit`), with token
# authentication.
#
#   ray dashboard launch/cluster.yaml &              # forwards the head's dashboard to 127.0.0.1:8265
#   export RAY_ADDRESS=http://127.0.0.1:8265
#   export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=~/.ray/raysweep_token   # or RAY_AUTH_TOKEN
#   bash launch/submit.sh SPEC [--insecure] [ray job submit options, e.g. --no-wait]
#
# The checkout this script lives in is uploaded as the job's working directory and the job runs
# `python -m raysweep.cli run SPEC` there, so the cluster runs exactly this code. SPEC is a path
# relative to the checkout's root, or an absolute path on the cluster's shared storage. The spec
# alone is checked here (`validate --spec-only`); its data, weights and storage are checked by
# the job, on the cluster, before anything is written.
#
# Refuses (exit 2) unless RAY_AUTH_MODE=token and a token is available (RAY_AUTH_TOKEN,
# RAY_AUTH_TOKEN_PATH, or Ray's default ~/.ray/auth_token), and refuses to send the token in clear
# text to a plain http:// address of another machine. `--insecure` skips both checks. The token
# is never printed, written or put on a command line: `ray job submit` reads it from the
# environment, and it is not passed to the job (whose runtime environment Ray stores).
set -euo pipefail

usage="usage: submit.sh SPEC [--insecure] [ray job submit options]"
fail() { echo "error: submit.sh: $*" >&2; exit 2; }

[ $# -ge 1 ] || fail "$usage"
spec="$1"
shift
insecure=0
options=()
for arg in "$@"; do
  if [ "$arg" = "--insecure" ]; then insecure=1; else options+=("$arg"); fi
done
[ -n "${RAY_ADDRESS:-}" ] || fail "set RAY_ADDRESS (e.g. http://127.0.0.1:8265, forwarded by \`ray dashboard launch/cluster.yaml\`)"

# Where Ray looks for the token, in Ray's order; prints nothing of the token itself.
token_problem() {
  if [ -n "${RAY_AUTH_TOKEN:-}" ]; then return 0; fi
  if [ -n "${RAY_AUTH_TOKEN_PATH:-}" ]; then
    [ -s "$RAY_AUTH_TOKEN_PATH" ] && [ -r "$RAY_AUTH_TOKEN_PATH" ] && return 0
    echo "RAY_AUTH_TOKEN_PATH=$RAY_AUTH_TOKEN_PATH is not a readable, non-empty file"
    return 1
  fi
  [ -s "$HOME/.ray/auth_token" ] && return 0
  echo "no token: set RAY_AUTH_TOKEN_PATH to the cluster's token file (or RAY_AUTH_TOKEN)"
  return 1
}

# The host of RAY_ADDRESS ("http://host:port", "host:port"), lower case.
address_host() {
  local rest="${RAY_ADDRESS#*://}"
  rest="${rest%%/*}"
  if [ "${rest#\[}" != "$rest" ]; then rest="${rest#\[}"; rest="${rest%%\]*}"; else rest="${rest%%:*}"; fi
  echo "$rest" | tr '[:upper:]' '[:lower:]'
}

if [ "$insecure" -eq 0 ]; then
  [ "${RAY_AUTH_MODE:-}" = "token" ] || fail "RAY_AUTH_MODE is '${RAY_AUTH_MODE:-unset}', not 'token': export RAY_AUTH_MODE=token and the cluster's token (see launch/README.md), or pass --insecure"
  problem="$(token_problem)" || fail "RAY_AUTH_MODE=token but $problem (see launch/README.md), or pass --insecure"
  case "$RAY_ADDRESS" in
    https://*) ;;
    *)
      case "$(address_host)" in
        127.*|localhost|::1) ;;
        *) fail "RAY_ADDRESS=$RAY_ADDRESS is plain http to another machine: the token would cross the network in clear text; forward the dashboard (\`ray dashboard launch/cluster.yaml\`) and use http://127.0.0.1:8265, or pass --insecure" ;;
      esac
      ;;
  esac
fi

cd "$(dirname "${BASH_SOURCE[0]}")/.."
python -m raysweep.cli validate --spec-only "$spec"
exec ray job submit \
  --working-dir . \
  --runtime-env-json '{"excludes": [".git", ".venv", "venv", "benchmarks/out", "**/__pycache__", "*.egg-info"]}' \
  ${options[@]+"${options[@]}"} \
  -- python -m raysweep.cli run "$spec"
