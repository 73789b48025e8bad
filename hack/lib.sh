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

# start_registry DIR: a docker-registry on a free loopback port with its
# storage and log in DIR; sets registry_pid (for the caller's cleanup trap)
# and registry_port. Ports are picked at random and retried when the
# registry cannot bind; returns 1 (log on stderr) when it never starts.
start_registry() {
  local dir="$1" attempt i
  mkdir -p "$dir"
  registry_pid=""
  for attempt in 1 2 3 4 5; do
    registry_port=$((20000 + RANDOM % 30000))
    if ss -ltnH "sport = :$registry_port" | grep -q .; then continue; fi
    cat >"$dir/config.yml" <<EOC
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$registry_port
  secret: yonggi-hack
EOC
    env -i /usr/bin/docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 &
    registry_pid=$!
    for i in $(seq 100); do
      if curl -fsS -o /dev/null "http://127.0.0.1:$registry_port/v2/" 2>/dev/null; then return 0; fi
      kill -0 "$registry_pid" 2>/dev/null || break
      sleep 0.1
    done
    stop_pid "$registry_pid"
    registry_pid=""
  done
  echo "$(basename "$0"): the registry did not start:" >&2
  cat "$dir/registry.log" >&2
  return 1
}
