#!/usr/bin/env python3
"""Writes the seed corpus of http_response_fuzz into http_response_corpus/ beside this script.

Each seed is the fuzz target's input: byte 0 the request's kind (bit 0 HEAD, bit 1 Upgrade asked,
bit 2 the upstream closes after the bytes), byte 1 where the two-piece feed cuts, then what the
upstream sends. The names say what the seed exercises. Re-run after changing the list; files the
list no longer names are removed.
"""

import os

from corpus_writer import write_corpus

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "http_response_corpus")

GET, HEAD, UPGRADE, CLOSES = 0, 1, 2, 4


def seed(kind, cut, stream):
    return bytes([kind, cut]) + stream


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"

SEEDS = {
    "length": seed(GET, 20, OK),
    "length-then-next-response": seed(GET, 40, OK + OK),
    "length-zero": seed(GET, 10, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    "chunked": seed(GET, 50, CHUNKED),
    "chunked-trailers": seed(GET, 60, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\n"),
    "chunked-bare-lf-trailer-end": seed(GET, 45, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\n"),
    "until-close": seed(CLOSES, 17, b"HTTP/1.1 200 OK\r\n\r\nbody until close"),
    "until-close-http10": seed(CLOSES, 9, b"HTTP/1.0 200 OK\r\n\r\nold"),
    "http10-keep-alive": seed(GET, 30, b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"),
    "http10-te-chunked": seed(CLOSES, 30, b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"),
    "te-gzip-until-close": seed(CLOSES, 30, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzzz"),
    "te-empty-beside-length": seed(CLOSES, 30, b"HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\nContent-Length: 2\r\n\r\nokmore"),
    "head-with-length": seed(HEAD, 20, b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"),
    "no-content-with-length": seed(GET, 20, b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello"),
    "not-modified": seed(GET, 20, b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n"),
    "continue-then-ok": seed(GET, 25, b"HTTP/1.1 100 Continue\r\n\r\n" + OK),
    "early-hints-with-length": seed(GET, 30, b"HTTP/1.1 103 Early Hints\r\nContent-Length: 40\r\n\r\n" + OK),
    "upgrade-asked": seed(UPGRADE, 30, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nraw"),
    "upgrade-unasked": seed(GET, 30, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"),
    "obs-fold": seed(GET, 22, b"HTTP/1.1 200 OK\r\nX: y\r\n Content-Length: 2\r\n\r\nok"),
    "bare-lf-head": seed(GET, 18, b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok"),
    "version-2": seed(GET, 5, b"HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    "status-099": seed(GET, 5, b"HTTP/1.1 099 X\r\nContent-Length: 2\r\n\r\nok"),
    "length-and-chunked": seed(GET, 30, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"),
    "connection-close": seed(GET, 30, b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"),
    "cut-short": seed(CLOSES, 30, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"),
}

if __name__ == "__main__":
    write_corpus(OUT, SEEDS)
