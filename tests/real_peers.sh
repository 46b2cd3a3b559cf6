#!/bin/bash
# The client against real servers configured to be strict: nginx with
# keepalive_requests 5 and http2_max_concurrent_streams 4 (every connection
# ends with a GOAWAY after 5 requests; streams over 4 are refused), h2o
# with 4 requests per connection at once, and Node's http2 server with
# maxConcurrentStreams 1.  Many requests at once
# must all succeed: streams above a GOAWAY's last_stream_id or refused were
# not processed and are retried without spending max_retries.  Each server
# is started on 127.0.0.1 with an ephemeral port and stopped by PID.
# Args: SOURCE_DIR BINARY_DIR.
set -u
BENCH="$2/bin/h2bench"
. "$(dirname "$0")/support/lib.sh"
fail() {
  echo "FAIL: $*"
  for f in "$T"/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -20 "$f"; }; done
  exit 1
}
# bench NAME URL N M: N requests, M at once on one connection's worth of
# client; every one must succeed.
bench() {
  local out
  out=$("$BENCH" client -n "$3" -c 1 -m "$4" -T 10000 "$2" 2>&1) || fail "$1: h2bench exited non-zero: $out"
  echo "$out" | grep -q "$3 succeeded, 0 failed, 0 errored, 0 timeout" ||
    fail "$1: not every request succeeded: $out"
  echo "ok: $1: $3 requests, $4 at a time: $(echo "$out" | grep -o 'connections *: [0-9]* opened')"
}

printf abcdef > "$T/6"
head -c 16384 /dev/zero | tr '\0' x > "$T/16k"
ran=0

NGINX=/usr/sbin/nginx
if [ -x "$NGINX" ]; then
  port=$(free_port)
  mkdir -p "$T/ngx"
  cat > "$T/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
error_log $T/nginx-error.log;
pid $T/nginx.pid;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $T/ngx;
  proxy_temp_path $T/ngx;
  fastcgi_temp_path $T/ngx;
  uwsgi_temp_path $T/ngx;
  scgi_temp_path $T/ngx;
  server {
    listen 127.0.0.1:$port http2;
    http2_max_concurrent_streams 4;
    keepalive_requests 5;
    root $T;
  }
}
EOF
  "$NGINX" -c "$T/nginx.conf" -p "$T" > "$T/nginx.log" 2>&1 &
  PIDS+=($!)
  wait_port "$port" || fail "nginx did not start"
  bench "nginx 6 B" "http://127.0.0.1:$port/6" 600 50
  bench "nginx 16 KiB" "http://127.0.0.1:$port/16k" 300 50
  ran=$((ran + 1))
else
  echo "skip: nginx not installed (apt-get install nginx-light)"
fi

H2O=$(command -v h2o || true)
if [ -n "$H2O" ]; then
  port=$(free_port)
  cat > "$T/h2o.conf" <<EOF
listen:
  host: 127.0.0.1
  port: $port
user: $(id -un)
num-threads: 1
http2-max-concurrent-requests-per-connection: 4
hosts:
  default:
    paths:
      /:
        file.dir: $T
EOF
  "$H2O" -c "$T/h2o.conf" > "$T/h2o.log" 2>&1 &
  PIDS+=($!)
  wait_port "$port" || fail "h2o did not start"
  bench "h2o 6 B" "http://127.0.0.1:$port/6" 600 50
  bench "h2o 16 KiB" "http://127.0.0.1:$port/16k" 300 50
  ran=$((ran + 1))
else
  echo "skip: h2o not installed"
fi

NODE=$(command -v node || true)
if [ -n "$NODE" ]; then
  cat > "$T/srv.js" <<'EOF'
const http2 = require('http2');
const srv = http2.createServer({settings: {maxConcurrentStreams: 1}});
srv.on('stream', (s) => { s.respond({':status': 200}); s.end('abcdef'); });
srv.listen(0, '127.0.0.1', () => console.log(srv.address().port));
setTimeout(() => process.exit(0), 60000);
EOF
  "$NODE" "$T/srv.js" > "$T/node.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do
    port=$(head -1 "$T/node.log" 2>/dev/null)
    [ -n "$port" ] && break
    sleep 0.05
  done
  [ -n "$port" ] || fail "node did not start"
  bench "node http2, maxConcurrentStreams 1" "http://127.0.0.1:$port/" 200 20
  ran=$((ran + 1))
else
  echo "skip: node not installed"
fi
[ "$ran" -gt 0 ] || fail "no real peer available"
echo "real peers: ok"
