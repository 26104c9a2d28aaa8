#!/usr/bin/env bash
# Run the test suite against each supported ComfyUI host (installing it first when needed).
#
#   bash scripts/test.sh                 # both hosts: ComfyUI 0.30.0 and 0.3.75
#   ZIT_HOSTS=0.3.75 bash scripts/test.sh -k loaders    # one host, extra pytest arguments
# pytest's "no tests collected" (exit 5) counts as a failure.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
status=0
# chromium (for tests/test_browser.py) installs in the background while the first host is set up
browser_log=$(mktemp); bash scripts/install_browser.sh > "$browser_log" 2>&1 & browser_pid=$!
browser_ready() {
  [[ -z $browser_pid ]] && return 0
  wait "$browser_pid"; local rc=$?; browser_pid=""; cat "$browser_log" >&2; rm -f "$browser_log"
  [[ $rc == 0 ]] && return 0
  [[ -n ${CI:-} ]] && { echo "chromium is needed in CI (tests/test_browser.py)" >&2; return 1; }
  echo "no chromium: browser tests will be skipped" >&2
}
for host in ${ZIT_HOSTS:-0.30 0.3.75}; do
  bash scripts/setup_host.sh "$host" || { echo "setup of ComfyUI $host failed" >&2; exit 1; }
  browser_ready || exit 1
  venv=.venv; [[ $host == 0.3.75 ]] && venv=.venv-0.3.75
  echo "=== tests on ComfyUI $host ==="
  ZIT_SOAK=${ZIT_SOAK:-$([[ " ${ZIT_HOSTS:-0.30 0.3.75} " == " $host "* ]] && echo 1 || echo 0)} "$venv/bin/pytest" -q -p no:randomly "$@"
  rc=$?
  if [[ $rc == 5 ]]; then echo "pytest collected no tests on ComfyUI $host: failing" >&2; rc=1; fi
  [[ $rc != 0 ]] && status=$rc
done
[[ -z ${ZIT_HOSTS:-} ]] && { bash scripts/test_kernels.sh || status=1; }
exit $status
