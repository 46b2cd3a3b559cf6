#!/usr/bin/env python3
"""A stand-in for a diagnostics endpoint, for what a real one will not do.

    fake_diag.py MODE

listens on 127.0.0.1, an ephemeral port, prints "port N" and serves until
killed.  MODE:
  rows:N    GET /debug/requests answers N made-up requests in flight, the
            shape diag/diag.c gives (h2top's benchmark: 4 x 2500 rows)
  slow      reads the request and never answers
  garbage   answers something that is not HTTP
  badjson   200 with a body that is not JSON
  huge      200 with no length and an endless body
  bigclen   a Content-Length of 1 GB
"""
import json
import random
import socket
import sys
import threading
import time

STATES = [("handler", "in handler"), ("wait_response", "waiting for response"),
          ("receiving", "receiving"), ("flow_blocked", "flow-blocked"),
          ("writing", "writing"), ("read_body", "reading body")]


def rows_body(n):
    rnd = random.Random(n)
    reqs = []
    for i in range(n):
        st, text = rnd.choice(STATES)
        age = rnd.randrange(1000, 60_000_000)
        reqs.append({
            "id": i + 1, "kind": rnd.choice(["server", "client"]),
            "method": rnd.choice(["GET", "POST"]), "scheme": "https",
            "authority": "api-%d.example.com:8443" % rnd.randrange(40),
            "path": "/v1/items/%d?page=%d" % (rnd.randrange(10**6), i),
            "state": st, "state_text": text, "age_us": age,
            "state_age_us": rnd.randrange(0, age), "conn": i // 100 + 1,
            "stream": (i % 100) * 2 + 1, "status": "fetching upstream",
            "http_status": 0, "bytes_in": rnd.randrange(10**5),
            "bytes_out": rnd.randrange(10**5), "start_us": 10**9 + i})
    doc = {"requests": reqs, "count": n, "server_time_us": 2 * 10**9}
    return json.dumps(doc, separators=(",", ":")).encode()


def respond(conn, mode, body):
    conn.settimeout(10)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = conn.recv(4096)
        if not chunk:
            return
        head += chunk
    if mode == "slow":
        time.sleep(3600)
    elif mode == "garbage":
        conn.sendall(b"hello there\r\n\r\nnot http at all\n")
    elif mode == "badjson":
        b = b"{\"requests\": [ {oops"
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(b), b))
    elif mode == "huge":
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
        block = b"[" * 65536
        while True:
            conn.sendall(block)
    elif mode == "bigclen":
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n{")
        time.sleep(3600)
    else:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Connection: close\r\nContent-Length: %d\r\n\r\n"
                     % len(body) + body)


def serve(conn, mode, body):
    try:
        respond(conn, mode, body)
    except OSError:
        pass
    finally:
        conn.close()


def main():
    mode = sys.argv[1]
    body = rows_body(int(mode[5:])) if mode.startswith("rows:") else b""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    print("port %d" % s.getsockname()[1], flush=True)
    while True:
        conn, _ = s.accept()
        threading.Thread(target=serve, args=(conn, mode, body),
                         daemon=True).start()


if __name__ == "__main__":
    main()
