# shellcheck shell=bash disable=SC2034  # the variables are used by up.sh and down.sh
# Shared by up.sh and down.sh: where the state lives and how the processes are stopped.
# Sourced, not executed.

testenv_here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
testenv_cache="${LLMDEPLOY_TESTENV_CACHE:-$HOME/.cache/llmdeploy-testenv}"
# The state dir is a fixed, well-known place so that down.sh and the e2e tests find the
# cluster that up.sh started. Everything in it is thrown away by down.sh.
state_dir="${LLMDEPLOY_TESTENV_DIR:-$testenv_cache/run}"
lock_file="${state_dir%/}.lock"
kubeconfig="$state_dir/kubeconfig"
# Stop order: the clients first, etcd last.
components=(kwok kube-scheduler kube-controller-manager kube-apiserver etcd)

log() { echo "[testenv] $*" >&2; }
die() { log "error: $*"; exit 1; }

# take_lock: serialise up.sh/down.sh runs against the same state dir (fd 9 stays open
# until the script exits). Nested calls from up.sh to the stop function do not re-lock.
take_lock() {
  mkdir -p "$(dirname "$lock_file")"
  exec 9>"$lock_file"
  flock -w 600 9 || die "timed out waiting for the lock $lock_file"
}

# pid_alive <pid>: true if the process exists and is not a zombie (PID 1 in some sandboxes
# does not reap, so a killed process can linger as a zombie).
pid_alive() {
  local pid="$1" state
  [[ -r "/proc/$pid/stat" ]] || return 1
  state="$(sed -E 's/^[0-9]+ \(.*\) ([A-Z]).*/\1/' "/proc/$pid/stat" 2>/dev/null)" || return 1
  [[ -n "$state" && "$state" != Z && "$state" != X ]]
}

# group_alive <pgid>: true if any live (non-zombie) process is still in the process group.
group_alive() {
  local pgid="$1" p
  for p in $(pgrep -g "$pgid" 2>/dev/null); do
    pid_alive "$p" && return 0
  done
  return 1
}

# owned_pid <name>: prints the recorded pid of a component if that pid still runs the binary
# we started (guards against killing an unrelated process that reused the pid).
owned_pid() {
  local name="$1" pidf="$state_dir/$1.pid" pid exe want
  [[ -f "$pidf" ]] || return 1
  read -r pid want <"$pidf" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  pid_alive "$pid" || return 1
  exe="$(readlink "/proc/$pid/exe" 2>/dev/null)" || return 1
  [[ "${exe% (deleted)}" == "$want" ]] || return 1
  echo "$pid"
}

# stop_all: TERM every recorded component's process group in order, wait, then KILL what
# is left, and remove the state dir. Safe to call when nothing runs.
stop_all() {
  local name pid deadline
  local -a pgids=()
  for name in "${components[@]}"; do
    pid="$(owned_pid "$name")" || continue
    log "stopping $name (pid $pid)"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    pgids+=("$pid")
    # Give each component a moment so that the ones after it (etcd) stay up while it exits.
    deadline=$((SECONDS + 10))
    while group_alive "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
  done
  for pid in "${pgids[@]}"; do
    if group_alive "$pid"; then
      log "process group $pid did not exit on TERM; sending KILL"
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
  done
  deadline=$((SECONDS + 10))
  for pid in "${pgids[@]}"; do
    while group_alive "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
    group_alive "$pid" && log "warning: process group $pid is still alive"
  done
  # The daemons were re-parented when up.sh exited; give their new parent a moment to reap
  # them, so that they do not linger as <defunct> entries in ps/pgrep right after this.
  deadline=$((SECONDS + 5))
  for pid in "${pgids[@]}"; do
    while [[ -e "/proc/$pid" ]] && ((SECONDS < deadline)); do sleep 0.1; done
  done
  if [[ -f "$state_dir/.llmdeploy-testenv" ]]; then
    rm -rf "$state_dir"
    log "removed $state_dir"
  elif [[ -e "$state_dir" ]]; then
    log "warning: $state_dir has no .llmdeploy-testenv marker; not removing it"
  fi
}
