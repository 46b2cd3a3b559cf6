#!/usr/bin/env python3
"""Write the seed corpora of tests/fuzz/corpus/<target>/ (run from anywhere;
the files are committed, so this only needs to run again to change them).

Frames are built here by hand (HPACK literals without Huffman, a few static
table indexes) so that nothing but python3 is needed.  Each seed is a small,
meaningful case: a request or response the peer would really send, or one
of the protocol's edge cases (padding, CONTINUATION, flow control, GOAWAY,
RST_STREAM, trailers, 1xx, malformed fields)."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus")

DATA, HEADERS, PRIORITY, RST, SETTINGS, PUSH, PING, GOAWAY, WINUP, CONT = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIO = 0x1, 0x1, 0x4, 0x8, 0x20


def frame(t, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([t, flags]) + \
        struct.pack(">I", sid) + payload


def hint(v, prefix, first=0):
    """HPACK integer with an N-bit prefix."""
    m = (1 << prefix) - 1
    if v < m:
        return bytes([first | v])
    out = [first | m]
    v -= m
    while v >= 128:
        out.append((v & 127) | 128)
        v >>= 7
    out.append(v)
    return bytes(out)


def lit(name, value):
    """Literal field without indexing, new name, no Huffman."""
    if isinstance(name, str):
        name = name.encode()
    if isinstance(value, str):
        value = value.encode()
    return b"\x00" + hint(len(name), 7) + name + hint(len(value), 7) + value


def block(fields):
    return b"".join(lit(n, v) for n, v in fields)


def settings(*pairs, ack=False):
    return frame(SETTINGS, ACK if ack else 0, 0,
                 b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def req(path="/", method="GET", extra=(), authority="example.com"):
    return [(":method", method), (":scheme", "http"),
            (":authority", authority), (":path", path)] + list(extra)


def resp(status=200, extra=()):
    return [(":status", str(status))] + list(extra)


def write(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def server_seeds():
    """After the client preface (magic + empty SETTINGS, from the harness)."""
    ack = settings(ack=True)
    s = {}
    s["get"] = ack + frame(HEADERS, END_HEADERS | END_STREAM, 1, block(req()))
    s["get_indexed"] = ack + frame(HEADERS, END_HEADERS | END_STREAM, 1,
                                   b"\x82\x86\x84" + lit(":authority", "a"))
    s["post_echo"] = ack + frame(HEADERS, END_HEADERS, 1,
                                 block(req("/echo", "POST", [("content-length", "5")]))) + \
        frame(DATA, 0, 1, b"hel") + frame(DATA, END_STREAM, 1, b"lo")
    s["gen_trailers"] = ack + frame(HEADERS, END_HEADERS | END_STREAM, 1, block(req("/gen"))) + \
        frame(WINUP, 0, 0, struct.pack(">I", 1 << 20)) + \
        frame(WINUP, 0, 1, struct.pack(">I", 1 << 20))
    s["reset_route"] = ack + frame(HEADERS, END_HEADERS | END_STREAM, 1, block(req("/reset")))
    s["not_found"] = ack + frame(HEADERS, END_HEADERS | END_STREAM, 1, block(req("nope")))
    s["continuation"] = ack + frame(HEADERS, 0, 1, block(req("/")[:2])) + \
        frame(CONT, 0, 1, block(req("/")[2:3])) + \
        frame(CONT, END_HEADERS, 1, block(req("/")[3:]))
    s["padded_prio"] = ack + frame(HEADERS, END_HEADERS | END_STREAM | PADDED | PRIO, 1,
                                   b"\x03" + struct.pack(">IB", 0, 15) + block(req()) + b"\0\0\0")
    s["padded_data"] = ack + frame(HEADERS, END_HEADERS, 1, block(req("/echo", "POST"))) + \
        frame(DATA, PADDED | END_STREAM, 1, b"\x04body\0\0\0\0")
    s["many_streams"] = ack + b"".join(
        frame(HEADERS, END_HEADERS | END_STREAM, sid, block(req("/?n=%d" % sid)))
        for sid in range(1, 40, 2))
    s["rst_stream"] = ack + frame(HEADERS, END_HEADERS, 1, block(req("/echo", "POST"))) + \
        frame(RST, 0, 1, struct.pack(">I", 8))
    s["ping_goaway"] = ack + frame(PING, 0, 0, b"12345678") + \
        frame(GOAWAY, 0, 0, struct.pack(">II", 0, 0) + b"bye")
    s["settings_window"] = settings((4, 1), (5, 16384), (1, 0)) + ack + \
        frame(HEADERS, END_HEADERS | END_STREAM, 1, block(req("/gen")))
    s["trailers_in"] = ack + frame(HEADERS, END_HEADERS, 1, block(req("/echo", "POST"))) + \
        frame(DATA, 0, 1, b"x") + frame(HEADERS, END_HEADERS | END_STREAM, 1,
                                        block([("x-t", "1")]))
    s["upper_case_name"] = ack + frame(HEADERS, END_HEADERS | END_STREAM, 1,
                                       block(req(extra=[("X-Upper", "1")])))
    s["lower_stream_id"] = ack + frame(HEADERS, END_HEADERS | END_STREAM, 5, block(req())) + \
        frame(HEADERS, END_HEADERS | END_STREAM, 3, block(req()))
    s["big_headers"] = ack + frame(HEADERS, END_HEADERS | END_STREAM, 1,
                                   block(req(extra=[("x-big", "v" * 9000)])))
    s["priority_update"] = ack + frame(PRIORITY, 0, 3, struct.pack(">IB", 1, 200)) + \
        frame(0x10, 0, 0, struct.pack(">I", 1) + b"u=1")
    s["bad_frame_size"] = ack + frame(PING, 0, 0, b"123")
    s["window_overflow"] = ack + frame(WINUP, 0, 0, struct.pack(">I", 0x7fffffff))
    s["empty"] = b""
    for k, v in s.items():
        write("server", k, v)
    return s


def client_seeds():
    """The server's bytes from the first (flags byte first; see fuzz_client.c)."""
    sset = settings((3, 100), (4, 65535))
    ack = settings(ack=True)
    ok = lambda sid, body=b"ok": frame(HEADERS, END_HEADERS, sid, block(resp(200, [("content-type", "text/plain")]))) + \
        frame(DATA, END_STREAM, sid, body)
    s = {}
    s["three_ok"] = b"\x00" + sset + ack + ok(1) + ok(3) + ok(5)
    s["indexed_status"] = b"\x00" + sset + ack + frame(HEADERS, END_HEADERS | END_STREAM, 1, b"\x88") + \
        frame(HEADERS, END_HEADERS | END_STREAM, 3, b"\x8d") + frame(HEADERS, END_HEADERS | END_STREAM, 5, b"\x8e")
    s["post_expect_100"] = b"\x03" + sset + ack + \
        frame(HEADERS, END_HEADERS, 3, block(resp(100))) + ok(1) + ok(3) + ok(5)
    s["early_final_before_100"] = b"\x03" + sset + ack + \
        frame(HEADERS, END_HEADERS | END_STREAM, 3, block(resp(417)))
    s["info_103"] = b"\x00" + sset + ack + frame(HEADERS, END_HEADERS, 1, block(resp(103, [("link", "</s>")]))) + ok(1)
    s["trailers"] = b"\x00" + sset + ack + \
        frame(HEADERS, END_HEADERS, 1, block(resp(200))) + frame(DATA, 0, 1, b"abc") + \
        frame(HEADERS, END_HEADERS | END_STREAM, 1, block([("grpc-status", "0")]))
    s["goaway_last_1"] = b"\x00" + sset + ack + ok(1) + \
        frame(GOAWAY, 0, 0, struct.pack(">II", 1, 0))
    s["goaway_error"] = b"\x00" + sset + frame(GOAWAY, 0, 0, struct.pack(">II", 0, 1) + b"debug")
    s["refused"] = b"\x00" + sset + ack + frame(RST, 0, 1, struct.pack(">I", 7)) + \
        frame(RST, 0, 3, struct.pack(">I", 7))
    s["rst_after_data"] = b"\x00" + sset + ack + frame(HEADERS, END_HEADERS, 1, block(resp(200))) + \
        frame(DATA, 0, 1, b"part") + frame(RST, 0, 1, struct.pack(">I", 2))
    s["max_streams_0"] = b"\x00" + settings((3, 0)) + ack
    s["max_streams_1"] = b"\x00" + settings((3, 1)) + ack + ok(1)
    s["small_window_post"] = b"\x05" + settings((4, 2)) + ack + \
        frame(WINUP, 0, 0, struct.pack(">I", 10)) + frame(WINUP, 0, 3, struct.pack(">I", 10)) + ok(3)
    s["continuation"] = b"\x00" + sset + ack + frame(HEADERS, 0, 1, block(resp(200))) + \
        frame(CONT, 0, 1, lit("x-a", "1")) + frame(CONT, END_HEADERS | END_STREAM, 1, lit("x-b", "2"))
    s["padded_data"] = b"\x00" + sset + ack + frame(HEADERS, END_HEADERS, 1, block(resp(200))) + \
        frame(DATA, PADDED | END_STREAM, 1, b"\x02hi\0\0")
    s["http1_answer"] = b"\x00HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
    s["no_settings"] = b"\x00" + ok(1)
    s["cancel_on_data"] = b"\x08" + sset + ack + ok(1) + ok(3, b"x" * 100) + ok(5)
    s["reject_headers"] = b"\x10" + sset + ack + ok(1) + ok(3) + ok(5)
    s["cancel_one_stream"] = b"\x24" + sset + ack + ok(3) + ok(5)
    s["huge_header"] = b"\x00" + sset + ack + frame(HEADERS, END_HEADERS | END_STREAM, 1,
                                                   block(resp(200, [("x-big", "v" * 9000)])))
    s["bad_status"] = b"\x00" + sset + ack + frame(HEADERS, END_HEADERS | END_STREAM, 1, block(resp("2x0"))) + \
        frame(HEADERS, END_HEADERS | END_STREAM, 3, block([(":status", "200"), (":status", "204")]))
    s["push_promise"] = b"\x00" + sset + ack + frame(PUSH, END_HEADERS, 1, struct.pack(">I", 2) + block(req()))
    s["ping"] = b"\x00" + sset + ack + frame(PING, 0, 0, b"abcdefgh") + ok(1)
    s["data_on_idle"] = b"\x00" + sset + frame(DATA, 0, 7, b"zz")
    s["content_length_mismatch"] = b"\x00" + sset + ack + \
        frame(HEADERS, END_HEADERS, 1, block(resp(200, [("content-length", "10")]))) + frame(DATA, END_STREAM, 1, b"abc")
    s["flags_only"] = b"\xff"
    for k, v in s.items():
        write("client", k, v)


def header_seeds():
    """flags byte, then "name\\tvalue" lines; the first line's value is the method."""
    s = {
        "get": b"\x00\tGET\n:scheme\thttp\n:authority\texample.com\n:path\t/\naccept\t*/*",
        "post_body": b"\x05\tPOST\n:scheme\thttp\n:authority\ta\n:path\t/echo\ncontent-type\ttext/plain",
        "upper_case": b"\x00\tGET\n:scheme\thttp\n:authority\ta\n:path\t/\nX-Mixed-Case\tv",
        "hop_by_hop": b"\x00\tGET\n:scheme\thttp\n:authority\ta\n:path\t/\nconnection\tclose\nhost\th\nTE\ttrailers\nupgrade\th2c",
        "lf_in_value": b"\x00\tGET\n:scheme\thttp\n:authority\ta\n:path\t/\nx-a\tb\x01c",
        "cr_in_value": b"\x00\tGET\n:scheme\thttp\n:authority\ta\n:path\t/\nx-a\tb\rc",
        "nul_in_value": b"\x00\tGET\n:scheme\thttp\n:authority\ta\n:path\t/\nx-a\tb\0c",
        "spaces_around": b"\x00\tGET\n:scheme\thttp\n:authority\ta\n:path\t/\nx-a\t v ",
        "separator_in_name": b"\x00\tGET\n:scheme\thttp\n:authority\ta\n:path\t/\nx(a)\tv",
        "pseudo_as_user": b"\x00\tGET\n:scheme\thttp\n:authority\ta\n:path\t/\n:status\t200",
        "expect_100": b"\x01\tPUT\n:scheme\thttp\n:authority\ta\n:path\t/echo\nexpect\t100-continue",
        "content_length": b"\x05\tPOST\n:scheme\thttp\n:authority\ta\n:path\t/echo\ncontent-length\t4",
        "bad_method": b"\x00\tG T\n:scheme\thttp\n:authority\ta\n:path\t/",
        "connect": b"\x00\tCONNECT\n:authority\ta:443",
        "no_path": b"\x00\tGET\n:scheme\thttp\n:authority\ta",
        "empty_name": b"\x00\tGET\n:scheme\thttp\n:authority\ta\n:path\t/\n\tv",
        "utf8_value": "\x00\tGET\n:scheme\thttp\n:authority\ta\n:path\t/\nx-u\tcaf\u00e9 \u2603".encode(),
        "many": b"\x00\tGET\n:scheme\thttp\n:authority\ta\n:path\t/" +
                b"".join(b"\nx-%d\t%d" % (i, i) for i in range(40)),
    }
    for k, v in s.items():
        write("headers", k, v)


def url_seeds():
    s = ["http://example.com/", "https://example.com:8443/a/b?c=d#frag",
         "http://127.0.0.1:8080", "http://[::1]:9000/x", "HTTPS://Example.COM?q",
         "http://[fe80::1%25eth0]/", "http://a@b/", "http://host:0/",
         "http://host:65536/", "http://host:/", "http://ho st/", "ftp://x/",
         "http:///path", "http://[::1/", "http://[::1]x/", "http://x/a b",
         "http://" + "a" * 253 + "/", "http://" + "a" * 254 + "/", "http://x/\x7f",
         "http://x/#", "http://x?#", "http://1.2.3.4.5/", "http://[1.2.3.4]/",
         "http://x:00080/"]
    for i, u in enumerate(s):
        write("url", "u%02d" % i, u.encode("latin-1"))


def diag_seeds():
    auth = "Authorization: Bearer fuzz-token\r\n"
    s = {
        "index": "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "requests": "GET /debug/requests HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "one": "GET /debug/requests/1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "bad_id": "GET /debug/requests/01 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "huge_id": "GET /debug/requests/99999999999999999999 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "cancel": "POST /debug/requests/7/cancel?reason=fuzz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + auth +
                  "Content-Length: 0\r\n\r\n",
        "cancel_wrong_token": "POST /debug/requests/7/cancel HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              "Authorization: Bearer fuzz-tokeN\r\nContent-Length: 0\r\n\r\n",
        "cancel_no_bearer": "POST /debug/requests/7/cancel HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                            "Authorization: Basic eDp5\r\n\r\n",
        "cancel_get": "GET /debug/requests/7/cancel HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "recent_head": "HEAD /debug/recent HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "connections": "GET /debug/connections HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "profile": "GET /debug/profile HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "metrics": "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "threads": "GET /debug/threads HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "post_index": "POST /debug HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\n\r\nabc",
        "too_big": "POST /debug/requests/1/cancel HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 99999\r\n\r\n",
        "chunked": "POST /debug/requests/1/cancel HTTP/1.1\r\nHost: 127.0.0.1\r\n" + auth +
                   "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "pipelined": "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /debug HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "escaped": "GET /debug/requests/%31%32 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "http10": "GET /debug HTTP/1.0\r\n\r\n",
        "garbage": "\x00\x01 / HTTP/9\r\n\r\n",
    }
    for k, v in s.items():
        write("diag", k, v.encode())


def event_json_seeds():
    """sizeof(h2t_event) bytes of numbers (type first), then NUL-separated
    strings.  The struct is 104 bytes on x86-64; shorter input is zero-filled."""
    def ev(t, strings, nums=b""):
        head = struct.pack("<I", t) + nums
        head = head.ljust(104, b"\x01")
        return head + b"\0".join(strings)
    s = {}
    strs = [b"example.com", "caf\u00e9".encode(), b"\xff\xfe bad utf8", b"q\"uo\\te\n\t\x01",
            b"\xed\xa0\x80 surrogate", b"\xf4\x90\x80\x80 too big", b"\xc0\xaf overlong", b""]
    for t in range(39):
        s["type%02d" % t] = ev(t, strs)
    s["header_field_sensitive"] = ev(8, [b"authorization", b"Bearer x"])
    s["header_field_lengths"] = ev(8, [b"x-a", b"v1", b"v2"], struct.pack("<IQ", 0, 4))
    for k, v in s.items():
        write("event_json", k, v)


def cli_seeds():
    s = ["Accept: */*", "X-Mixed: value with spaces  ", "bad header", ": empty",
         "x(y): z", "x: a\rb", "65535", "0", "18446744073709551616", "1.5", "0x10",
         "1e9", "1e10", "-1", "nan", "@/etc/passwd", "body data", "Name:\t\ttabbed\t"]
    for i, v in enumerate(s):
        write("cli", "c%02d" % i, v.encode())


if __name__ == "__main__":
    server_seeds()
    client_seeds()
    header_seeds()
    url_seeds()
    diag_seeds()
    event_json_seeds()
    cli_seeds()
