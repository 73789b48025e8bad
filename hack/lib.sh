# Shell helpers shared by the hack/ scripts; source it, don't run it.
# Processes are only ever stopped by PID.

# stop_pid PID: SIGTERM, wait up to 10 s, then SIGKILL.
stop_pid() {
  local pid="$1" i
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

# kill_leftovers DIR: SIGKILL, by PID, every process whose command line names
# DIR/ (the run's own temp dir): shims, monitors and pod holders outlive their
# daemon by design, and a pod holder is PID 1 of its namespace, deaf to
# SIGTERM. Bash builtins only: a grep would find its own command line.
kill_leftovers() {
  local dir="$1" f pid args
  [ -n "$dir" ] || return 0
  for f in /proc/[0-9]*/cmdline; do
    pid="${f#/proc/}"
    pid="${pid%/cmdline}"
    [ "$pid" = "$$" ] && continue
    mapfile -d '' args 2>/dev/null <"$f" || continue
    [[ "${args[*]}" == *"$dir/"* ]] || continue
    echo "$(basename "$0"): killing leftover process $pid: ${args[*]}" >&2
    kill -KILL "$pid" 2>/dev/null || true
  done
}
