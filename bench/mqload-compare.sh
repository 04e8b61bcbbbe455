#!/usr/bin/env bash
# bench/mqload-compare.sh -- cross-check `npm run bench` with the C load generator mqload.
#
# Copies mqload (read-only in ../shared/tools/mqload) to a temporary directory, builds it
# (`make`, `npm ci` for its Aedes), and runs its compare.sh with Midge as the extra broker:
#   EXTRA_BROKER_CMD='node $PROJECT/dist/main.js -p {PORT}' EXTRA_BROKER_NAME=midge
# so that mosquitto, aedes and midge are measured by the same C generator.
#
# Environment:
#   MQLOAD_DIR=../shared/tools/mqload (relative to the repository)   where mqload lives
#   MIDGE=dist/main.js                the broker entry point to run (built if missing)
#   KEEP=1                            keep the temporary copy (results are inside it)
#   and compare.sh's own: BROKERS SCENARIOS REPS DUR HOLD DRAIN MOSQ_MAX_QUEUED OUT ...
# Examples:
#   bench/mqload-compare.sh                                    # compare.sh defaults (~10 min)
#   REPS=1 DUR=5 HOLD=2 bench/mqload-compare.sh                # the short cross-check
#   SCENARIOS="fanin_q1 latency_q1" REPS=1 bench/mqload-compare.sh
set -euo pipefail

PROJECT=$(cd "$(dirname "$0")/.." && pwd)
MQLOAD_DIR=${MQLOAD_DIR:-$PROJECT/../shared/tools/mqload}
MIDGE=${MIDGE:-$PROJECT/dist/main.js}
KEEP=${KEEP:-1}

[ -f "$MQLOAD_DIR/mqload.c" ] && [ -f "$MQLOAD_DIR/compare.sh" ] || {
  echo "mqload not found in $MQLOAD_DIR (set MQLOAD_DIR)" >&2
  exit 2
}
if [ ! -f "$MIDGE" ]; then
  echo "building Midge (npm run build)" >&2
  (cd "$PROJECT" && npm run build >&2)
fi
MIDGE=$(cd "$(dirname "$MIDGE")" && pwd)/$(basename "$MIDGE")

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mqload.XXXXXX")
cleanup() { [ "$KEEP" = 1 ] || rm -rf "$WORK"; }
trap cleanup EXIT
cp -r "$MQLOAD_DIR"/. "$WORK"/
chmod -R u+w "$WORK"
cd "$WORK"
make -s mqload
# mqload's own Aedes; without a registry, fall back to the project's (the same aedes 1.x)
if ! npm ci --silent --no-audit --no-fund >/dev/null 2>&1; then
  echo "npm ci failed here: using $PROJECT/node_modules for aedes" >&2
  rm -rf node_modules
  ln -s "$PROJECT/node_modules" node_modules
fi

echo "# mqload copy: $WORK" >&2
EXTRA_BROKER_CMD="node $MIDGE -p {PORT}" EXTRA_BROKER_NAME=midge ./compare.sh
[ "$KEEP" = 1 ] && echo "# mqload copy and its results kept in $WORK" >&2
