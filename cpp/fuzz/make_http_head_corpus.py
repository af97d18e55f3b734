#!/usr/bin/env python3
"""Writes the seed corpus of http_head_fuzz into http_head_corpus/ beside this script.

Each seed is named "<expected>--<description>", where <expected> is what RequestParser::parseHead
(routing header x-envoy-original-dst-host, max head 1024 bytes; cpp/test/http_tests.cc uses the
same settings) answers for the whole file: done, need_more, malformed or too_large. http_tests
(ctest) checks every seed against its name, so the corpus is also a table of expected outcomes.
Re-run after changing the list; files the list no longer names are removed.
"""

import os

from corpus_writer import write_corpus

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "http_head_corpus")
H = "x-envoy-original-dst-host"

SEEDS = {
    # complete heads
    "done--get-minimal": b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "done--get-http10": b"GET / HTTP/1.0\r\n\r\n",
    "done--get-routing-header": f"GET /x HTTP/1.1\r\nHost: a\r\n{H}: 10.0.0.7:8080\r\n\r\n".encode(),
    "done--get-routing-header-v6": f"GET / HTTP/1.1\r\n{H}: [2001:db8::1]:443\r\nHost: a\r\n\r\n".encode(),
    "done--get-routing-header-twice": f"GET / HTTP/1.1\r\n{H}: 10.0.0.7:80\r\nHost: a\r\nX-Envoy-Original-Dst-Host: 10.0.0.8:80\r\n\r\n".encode(),
    "done--get-routing-header-invalid-value": f"GET / HTTP/1.1\r\n{H}: example.com:80\r\n\r\n".encode(),
    "done--post-content-length-with-body": b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    "done--post-chunked-with-body": b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "done--pipelined": b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
    "done--connect": b"CONNECT 10.0.0.7:443 HTTP/1.1\r\nHost: 10.0.0.7:443\r\n\r\n",
    "done--upgrade-websocket": b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    "done--absolute-form": b"GET http://10.0.0.7:80/x HTTP/1.1\r\nHost: 10.0.0.7\r\n\r\n",
    "done--connection-close": b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
    # incomplete
    "need_more--empty": b"",
    "need_more--request-line-only": b"GET / HTTP/1.1\r\n",
    "need_more--mid-routing-header": f"GET / HTTP/1.1\r\n{H}: 10.0.".encode(),
    # smuggling and syntax
    "malformed--cl-and-te": b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "malformed--te-and-cl": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    "malformed--duplicate-cl": b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "malformed--conflicting-cl": b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "malformed--cl-list": b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\nhello",
    "malformed--obs-fold": b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: one\r\n two\r\n\r\n",
    "malformed--obs-fold-tab": b"GET / HTTP/1.1\r\nX-Long: one\r\n\ttwo\r\nHost: a\r\n\r\n",
    "malformed--bare-lf": b"GET / HTTP/1.1\nHost: a\n\n",
    "malformed--bare-lf-header": b"GET / HTTP/1.1\r\nHost: a\n\r\n",
    # found by the fuzzer: strict llhttp takes a bare LF as the blank line ending the head
    # a finding of the fuzz target: an address spelled non-canonically in the routing header
    "done--regress-v6-non-canonical-header-value": f"GET / HTTP/1.1\r\n{H}: [2001:db8::0]:443\r\nHost: a\r\n\r\n".encode(),
    "malformed--regress-bare-lf-blank-line": b"GET /1 HTTP/1.1\r\nHost: a\r\n\n\nG\xb4T /2 HTTP/1.1\rHEAD\nHost: a\r\n\r\n",
    "malformed--bare-lf-blank-line": b"GET / HTTP/1.1\r\nHost: a\r\n\nGET /smuggled HTTP/1.1\r\n\r\n",
    "malformed--space-before-colon": b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
    "malformed--te-chunked-not-last": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
    "malformed--te-gzip-no-length": b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nbody",
    # framing review: RFC 9112 6.1, an empty TE (llhttp 8 flags none), an empty field name
    "malformed--te-in-http10": b"POST / HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "malformed--te-empty-with-cl": b"POST / HTTP/1.1\r\nTransfer-Encoding:\r\nContent-Length: 5\r\n\r\nhello",
    "malformed--te-list-chunked-last": b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "malformed--te-two-lines": b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "done--te-chunked-any-case": b"POST / HTTP/1.1\r\nTransfer-Encoding:  CHUNKED \r\n\r\n0\r\n\r\n",
    "malformed--empty-header-name": b"GET / HTTP/1.1\r\n: a\r\nHost: a\r\n\r\n",
    "malformed--http09": b"GET /\r\n\r\n",
    "malformed--http2-version": b"GET / HTTP/2.0\r\n\r\n",
    "malformed--control-char-in-value": b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",
    "malformed--bad-method": b"G@T / HTTP/1.1\r\n\r\n",
    "malformed--too-many-routing-headers": (b"GET / HTTP/1.1\r\n" + f"{H}: 10.0.0.1:80\r\n".encode() * 9 + b"\r\n"),
    # size cap (1024 in the tests)
    "too_large--long-header": b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 1100 + b"\r\n\r\n",
    "too_large--endless-header-line": b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 1100,
}


def main():
    write_corpus(OUT, SEEDS)


if __name__ == "__main__":
    main()
