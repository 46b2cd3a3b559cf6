#!/usr/bin/python3
"""A scripted, misbehaving HTTP/2 server (h2c, prior knowledge) for
tests/test_fault_matrix.c.

    h2peer.py --mode NAME [options]

Listens on 127.0.0.1 port 0 and prints the port on the first line of stdout.
Then one line per thing it saw or did ("req conn=1 sid=3 GET /x",
"rst conn=1 sid=1 code=8", ...), flushed, so the test can read them back.
It exits by itself after --lifetime seconds (SIGALRM), and on SIGTERM.

Frames are read and written by hand, with HPACK from python3-h2's own
dependency (hpack): h2's connection state machine refuses to misbehave
(frames after GOAWAY, streams beyond MAX_CONCURRENT_STREAMS, floods), and
misbehaving is the point here.  Each connection is served by its own thread.
"""
import argparse
import signal
import socket
import struct
import sys
import threading
import time

from hpack import Decoder, Encoder

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS = 0, 1, 2, 3, 4
PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 5, 6, 7, 8, 9
END_STREAM, ACK, END_HEADERS, PADDED, PRIO = 0x1, 0x1, 0x4, 0x8, 0x20
S_MAX_CONCURRENT_STREAMS, S_INITIAL_WINDOW_SIZE, S_MAX_FRAME_SIZE = 3, 4, 5
NO_ERROR, REFUSED_STREAM = 0, 7
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_FRAME = 16384

lock = threading.Lock()
counters = {"conns": 0, "streams": 0}
args = None


def log(msg):
    with lock:
        sys.stdout.write(msg + "\n")
        sys.stdout.flush()


def bump(name):
    with lock:
        counters[name] = counters.get(name, 0) + 1
        return counters[name]


class Closed(Exception):
    pass


class Conn:
    """One accepted connection: frame I/O, header blocks, request bodies."""

    def __init__(self, sock, num):
        self.sock, self.num = sock, num
        self.buf = b""
        self.enc, self.dec = Encoder(), Decoder()
        self.dec.max_header_list_size = 1 << 20
        self.hdr_sid, self.hdr_block, self.hdr_end_stream = 0, b"", False
        self.reqs = {}      # sid -> [headers dict, body bytes]
        self.ready = []     # complete requests, in arrival order: sid
        self.on_data = None  # mode hook: (sid, length) for flow control
        self.on_headers = None  # mode hook: (sid) -> False to ignore it
        self.max_frame = MAX_FRAME  # the client's SETTINGS_MAX_FRAME_SIZE

    # --- output -----------------------------------------------------------
    def frame(self, ftype, flags, sid, payload=b""):
        hdr = struct.pack(">I", len(payload))[1:] + struct.pack(
            ">BBI", ftype, flags, sid & 0x7FFFFFFF)
        return hdr + payload

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError:
            raise Closed()

    def settings(self, pairs=()):
        payload = b"".join(struct.pack(">HI", k, v) for k, v in pairs)
        self.send(self.frame(SETTINGS, 0, 0, payload))

    def headers(self, sid, hdrs, end_stream=False):
        block = self.enc.encode(hdrs)
        mf = self.max_frame
        chunks = [block[i:i + mf] for i in range(0, len(block), mf)] or [b""]
        out = []
        for i, c in enumerate(chunks):
            flags = END_HEADERS if i == len(chunks) - 1 else 0
            if i == 0:
                out.append(self.frame(HEADERS, flags | (
                    END_STREAM if end_stream else 0), sid, c))
            else:
                out.append(self.frame(CONTINUATION, flags, sid, c))
        self.send(b"".join(out))

    def data(self, sid, payload, end_stream=False):
        self.send(self.frame(DATA, END_STREAM if end_stream else 0, sid,
                             payload))

    def rst(self, sid, code):
        self.send(self.frame(RST_STREAM, 0, sid, struct.pack(">I", code)))

    def goaway(self, last_sid, code=NO_ERROR):
        self.send(self.frame(GOAWAY, 0, 0, struct.pack(">II", last_sid, code)))
        log("goaway_sent conn=%d last=%d code=%d" % (self.num, last_sid, code))

    def window_update(self, sid, n):
        self.send(self.frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", n)))

    def respond(self, sid, body=None, status=200):
        hdrs, rbody = self.reqs.get(sid, ({}, b""))
        if body is None:
            body = b"ok %d" % len(rbody)
        self.headers(sid, [(":status", str(status)),
                           ("content-length", str(len(body)))])
        self.data(sid, body, end_stream=True)

    def close(self):
        """FIN after everything sent, drain briefly so the kernel does not
        turn the close into an RST that could eat what we sent, then close."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
            self.sock.settimeout(0.2)
            end = time.time() + 0.5
            while time.time() < end and self.sock.recv(65536):
                pass
        except OSError:
            pass
        self.sock.close()
        log("closed conn=%d" % self.num)

    # --- input ------------------------------------------------------------
    def fill(self, timeout):
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return False
        except OSError:
            raise Closed()
        if not chunk:
            raise Closed()
        self.buf += chunk
        return True

    def read_preface(self):
        while len(self.buf) < len(PREFACE):
            self.fill(5)
        if not self.buf.startswith(PREFACE):
            raise Closed()
        self.buf = self.buf[len(PREFACE):]

    def pump(self, timeout):
        """Read and handle frames for up to `timeout` s, returning as soon as
        a request is complete (or at once if one already is)."""
        end = time.time() + timeout
        while not self.ready:
            while len(self.buf) >= 9:
                n = struct.unpack(">I", b"\0" + self.buf[:3])[0]
                if len(self.buf) < 9 + n:
                    break
                ftype, flags, sid = struct.unpack(">BBI", self.buf[3:9])
                payload = self.buf[9:9 + n]
                self.buf = self.buf[9 + n:]
                self.handle(ftype, flags, sid & 0x7FFFFFFF, payload)
            if self.ready:
                break
            left = end - time.time()
            if left <= 0 or not self.fill(left):
                break
        return bool(self.ready)

    def next_request(self, timeout=10):
        if self.pump(timeout):
            return self.ready.pop(0)
        return None

    def handle(self, ftype, flags, sid, p):
        if ftype in (HEADERS, CONTINUATION):
            if ftype == HEADERS:
                if flags & PADDED:
                    p = p[1:len(p) - p[0]]
                if flags & PRIO:
                    p = p[5:]
                self.hdr_sid, self.hdr_block = sid, b""
                self.hdr_end_stream = bool(flags & END_STREAM)
            self.hdr_block += p
            if flags & END_HEADERS:
                hdrs = dict(self.dec.decode(self.hdr_block))
                sid = self.hdr_sid
                bump("streams")
                log("req conn=%d sid=%d %s %s" % (
                    self.num, sid, hdrs.get(":method"), hdrs.get(":path")))
                if self.on_headers and not self.on_headers(sid):
                    return
                self.reqs[sid] = [hdrs, b""]
                if self.hdr_end_stream:
                    self.ready.append(sid)
        elif ftype == DATA:
            if flags & PADDED:
                p = p[1:len(p) - p[0]]
            if sid in self.reqs:
                self.reqs[sid][1] += p
            if self.on_data:
                self.on_data(sid, len(p))
            else:  # give the window back at once
                if p:
                    self.window_update(0, len(p))
                    self.window_update(sid, len(p))
            if flags & END_STREAM and sid in self.reqs:
                self.ready.append(sid)
        elif ftype == SETTINGS:
            if not flags & ACK:
                for i in range(0, len(p) - 5, 6):
                    k, v = struct.unpack(">HI", p[i:i + 6])
                    if k == S_MAX_FRAME_SIZE:
                        self.max_frame = v
                self.send(self.frame(SETTINGS, ACK, 0))
        elif ftype == PING:
            if not flags & ACK:
                self.send(self.frame(PING, ACK, 0, p))
        elif ftype == RST_STREAM:
            log("rst conn=%d sid=%d code=%d" % (
                self.num, sid, struct.unpack(">I", p)[0]))
            if sid in self.ready:
                self.ready.remove(sid)
        elif ftype == GOAWAY:
            last, code = struct.unpack(">II", p[:8])
            log("goaway_recv conn=%d last=%d code=%d" % (self.num, last, code))
        elif ftype == WINDOW_UPDATE:
            if sid:
                log("wu conn=%d sid=%d n=%d" % (
                    self.num, sid, struct.unpack(">I", p)[0]))

    def drain_forever(self):
        """Keep reading (and logging) until the client closes."""
        while True:
            self.pump(3600)
            self.ready.clear()


# --- modes -----------------------------------------------------------------
# Each takes a Conn whose preface has been read; the SETTINGS it sends are
# its own business (most send them first thing).

def serve_normal(c, first_settings=()):
    c.settings(first_settings)
    while True:
        sid = c.next_request(3600)
        if sid is not None:
            c.respond(sid)


def mode_normal(c):
    serve_normal(c)


def mode_midbody(c):
    c.settings()
    sid = c.next_request()
    c.headers(sid, [(":status", "200"), ("content-length", "100")])
    c.data(sid, b"partial")
    c.close()


def mode_close_before_response(c):
    if c.num > args.count:
        return serve_normal(c)
    c.settings()
    c.next_request()
    c.close()


def mode_stall(c):
    c.settings()
    sid = c.next_request()
    c.headers(sid, [(":status", "200")])
    c.drain_forever()


rst_seen = set()


def mode_rst_midbody(c):
    # /rst/N: the first time, a partial body then RST_STREAM(N); any later
    # request for the same path (a retry, on any connection) gets "SECOND".
    c.settings()
    seen = rst_seen
    while True:
        sid = c.next_request(3600)
        path = c.reqs[sid][0].get(":path", "")
        with lock:
            first = path not in seen
            seen.add(path)
        if path.startswith("/rst/") and first:
            code = int(path[5:])
            c.headers(sid, [(":status", "200"), ("content-length", "100")])
            c.data(sid, b"partial-%d" % code)
            c.rst(sid, code)
            log("rst_sent conn=%d sid=%d code=%d" % (c.num, sid, code))
        else:
            c.respond(sid, b"SECOND")


def mode_refuse(c):
    # The first --count streams (over all connections) are refused.
    c.settings()
    while True:
        sid = c.next_request(3600)
        if bump("refused") <= args.count:
            c.rst(sid, REFUSED_STREAM)
            log("refused conn=%d sid=%d" % (c.num, sid))
        else:
            c.respond(sid)


def mode_goaway_low(c):
    # The first --conns connections: collect up to --count requests, answer
    # the two lowest streams, GOAWAY(NO_ERROR, the second of them), close.
    # Later connections: normal.
    if c.num > args.conns:
        return serve_normal(c)
    c.settings()
    got = []
    end = time.time() + 1.0
    while len(got) < args.count and time.time() < end:
        sid = c.next_request(0.3 if got else 1.0)
        if sid is None:
            break
        got.append(sid)
    got.sort()
    for sid in got[:2]:
        c.respond(sid)
    c.goaway(got[1] if len(got) > 1 else got[0] if got else 0)
    c.close()


def mode_nginx(c):
    # nginx with http2_max_concurrent_streams 4 and keepalive_requests 5: the
    # 5th request's HEADERS trigger GOAWAY(NO_ERROR, its id); streams above
    # it are ignored; the connection closes once the rest are answered.
    c.settings([(S_MAX_CONCURRENT_STREAMS, args.max_streams)])
    st = {"n": 0, "last": None, "open": set()}

    def on_headers(sid):
        if st["last"] is not None:
            log("ignored conn=%d sid=%d" % (c.num, sid))
            return False
        if len(st["open"]) >= args.max_streams:
            log("over_limit conn=%d sid=%d" % (c.num, sid))
            c.rst(sid, REFUSED_STREAM)
            return False
        st["n"] += 1
        st["open"].add(sid)
        if st["n"] == args.keepalive:
            st["last"] = sid
            c.goaway(sid)
        return True
    c.on_headers = on_headers
    while True:
        sid = c.next_request(10)
        if sid is None:
            break
        c.respond(sid)
        st["open"].discard(sid)
        if st["last"] is not None and not st["open"]:
            break
    c.close()


def mode_graceful(c):
    # Connection 1: once --count requests are in, GOAWAY(2^31-1), answer
    # them all, GOAWAY(NO_ERROR, last id), close.  Later: normal.
    if c.num > 1:
        return serve_normal(c)
    c.settings()
    got = []
    end = time.time() + 2.0
    while len(got) < args.count and time.time() < end:
        sid = c.next_request(max(0.01, end - time.time()))
        if sid is not None:
            got.append(sid)
    c.goaway(0x7FFFFFFF)
    time.sleep(0.05)
    for sid in got:
        c.respond(sid)
    c.goaway(max(got) if got else 0)
    c.close()


def mode_mcs_zero_after(c):
    # MAX_CONCURRENT_STREAMS 1; after each response, SETTINGS
    # MAX_CONCURRENT_STREAMS 0, for good.  A stream opened anyway is refused.
    c.settings([(S_MAX_CONCURRENT_STREAMS, 1)])
    served = 0
    while True:
        sid = c.next_request(3600)
        if served:
            log("over_limit conn=%d sid=%d" % (c.num, sid))
            c.rst(sid, REFUSED_STREAM)
            continue
        c.respond(sid)
        served += 1
        c.settings([(S_MAX_CONCURRENT_STREAMS, 0)])


def mode_mcs_zero(c):
    # Every connection: MAX_CONCURRENT_STREAMS 0.  Streams opened anyway are
    # refused.
    c.settings([(S_MAX_CONCURRENT_STREAMS, 0)])
    while True:
        sid = c.next_request(3600)
        log("over_limit conn=%d sid=%d" % (c.num, sid))
        c.rst(sid, REFUSED_STREAM)


def mode_tiny_window(c):
    # SETTINGS_INITIAL_WINDOW_SIZE 1: each DATA byte is granted back alone.
    def on_data(sid, n):
        if n:
            log("data conn=%d sid=%d n=%d" % (c.num, sid, n))
            c.window_update(0, n)
            for _ in range(n):
                c.window_update(sid, 1)
    c.on_data = on_data
    serve_normal(c, [(S_INITIAL_WINDOW_SIZE, 1)])


def mode_big_headers(c):
    # /big/N/SIZE: a response with N headers of SIZE bytes each, all
    # different (N * ~SIZE*5/8 bytes on the wire); /same/N/SIZE: one such
    # header N times (HPACK indexes it: a few bytes each on the wire, the
    # same size decoded).  Else normal.
    c.settings()
    while True:
        sid = c.next_request(3600)
        path = c.reqs[sid][0].get(":path", "")
        if path.startswith(("/big/", "/same/")):
            n, size = (int(x) for x in path.split("/")[2:4])
            same = path.startswith("/same/")
            hdrs = [(":status", "200")]
            hdrs += [("x-h-%04d" % (0 if same else i),
                      ("%04d" % (0 if same else i)) * (size // 4))
                     for i in range(n)]
            c.headers(sid, hdrs)
            c.data(sid, b"big", end_stream=True)
        else:
            c.respond(sid)


def mode_ping_flood(c):
    # Once the request is in: PINGs without end, and never read again.
    c.settings()
    c.next_request()
    ping = c.frame(PING, 0, 0, b"12345678")
    sent = 0
    try:
        while sent < args.count:
            c.send(ping * 1000)
            sent += 1000
    except Closed:
        pass
    log("pings_sent conn=%d n=%d" % (c.num, sent))
    time.sleep(3600)


def mode_silent(c):
    time.sleep(3600)


def mode_http1(c):
    pass  # handled before the preface, see serve()


def mode_delay_settings(c):
    time.sleep(args.delay_ms / 1000.0)
    serve_normal(c, [(S_MAX_CONCURRENT_STREAMS, args.max_streams)])


def serve(sock, num):
    log("conn conn=%d" % num)
    c = Conn(sock, num)
    try:
        if args.mode == "http1":
            c.fill(2)
            c.send(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
                   b"Content-Length: 11\r\nConnection: close\r\n\r\n"
                   b"Bad Request")
            c.close()
            return
        if args.mode == "silent":
            return mode_silent(c)
        c.read_preface()
        MODES[args.mode](c)
    except Closed:
        log("eof conn=%d" % num)
        try:
            sock.close()
        except OSError:
            pass


MODES = {name[5:]: fn for name, fn in globals().items()
         if name.startswith("mode_")}


def main():
    global args
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", required=True, choices=sorted(MODES))
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--conns", type=int, default=1)
    ap.add_argument("--max-streams", type=int, default=100)
    ap.add_argument("--keepalive", type=int, default=5)
    ap.add_argument("--delay-ms", type=int, default=200)
    ap.add_argument("--lifetime", type=int, default=30)
    ap.add_argument("--rcvbuf", type=int, default=0)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.alarm(args.lifetime)  # default action: the process ends

    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if args.rcvbuf:  # inherited by accepted sockets
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, args.rcvbuf)
    ls.bind(("127.0.0.1", 0))
    ls.listen(128)
    log("%d" % ls.getsockname()[1])
    while True:
        sock, _ = ls.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        num = bump("conns")
        threading.Thread(target=serve, args=(sock, num), daemon=True).start()


if __name__ == "__main__":
    main()
