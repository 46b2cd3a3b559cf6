# Sourced by the script tests: a temporary directory $T, processes started
# in the background stopped by PID at exit (track PID), newest first (a
# client before its server), bounded waits.  A script defines its own
# fail() (what to show of its processes' logs), and cleanup_more() if it
# has more to stop first.
T=$(mktemp -d)
PIDS=()
track() { PIDS+=("$1"); }
cleanup() {
  declare -F cleanup_more >/dev/null && cleanup_more
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill "${PIDS[i]}" 2>/dev/null
    wait "${PIDS[i]}" 2>/dev/null
  done
  rm -rf "$T"
}
trap cleanup EXIT
# poll CMD... : up to 15 s until CMD succeeds (slow when the machine is busy)
poll() {
  for _ in $(seq 300); do
    "$@" && return 0
    sleep 0.05
  done
  return 1
}
# A free TCP port on 127.0.0.1 (bound to 0, then released).
free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
# Until something accepts on 127.0.0.1:PORT, at most 10 s.
wait_port() {
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}
# A self-signed P-256 certificate for localhost: $T/cert.pem, $T/key.pem.
make_cert() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$T/key.pem" -out "$T/cert.pem" -days 2 -subj /CN=localhost \
    >/dev/null 2>&1
}
