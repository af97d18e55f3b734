#!/usr/bin/env python3
"""Writes the seed corpus of proxy_protocol_fuzz into proxy_protocol_corpus/ beside this script.

Each seed is named "<expected>--<description>", where <expected> is what the parser must answer
for the whole file: done, need_more, or a ParseError name. proxy_protocol_tests (ctest) checks
every seed against its name, so the corpus is also a table of expected outcomes. Re-run after
changing the list; files the list no longer names are removed. Crash or mismatch inputs that
the fuzzer finds are added here as regression seeds.
"""

import os
import struct

from corpus_writer import write_corpus

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "proxy_protocol_corpus")

SIG = b"\r\n\r\n\x00\r\nQUIT\n"
INET4 = bytes([192, 0, 2, 1, 198, 51, 100, 7]) + struct.pack(">HH", 56260, 443)
INET6 = bytes.fromhex("20010db8000000000000000000000001") + bytes(15) + b"\x01" + struct.pack(">HH", 80, 65535)
HTTP = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"


def v2(ver_cmd, fam, rest):
    return SIG + bytes([ver_cmd, fam]) + struct.pack(">H", len(rest)) + rest


def tlv(t, value):
    return bytes([t]) + struct.pack(">H", len(value)) + value


SEEDS = {
    # valid v1
    "done--v1-tcp4": b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
    "done--v1-tcp4-then-http": b"PROXY TCP4 10.0.0.1 10.0.0.2 1 65535\r\n" + HTTP,
    "done--v1-tcp4-max": b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
    "done--v1-tcp6": b"PROXY TCP6 2001:db8::1 ::1 0 80\r\n",
    "done--v1-tcp6-max": b"PROXY TCP6 " + b":".join([b"ffff"] * 8) + b" " + b":".join([b"FFFF"] * 8) + b" 65535 65535\r\n",
    "done--v1-unknown": b"PROXY UNKNOWN\r\n",
    "done--v1-unknown-worst-case": b"PROXY UNKNOWN " + b":".join([b"ffff"] * 8) + b" " + b":".join([b"ffff"] * 8) + b" 65535 65535\r\n",
    # valid v2
    "done--v2-proxy-tcp4": v2(0x21, 0x11, INET4),
    "done--v2-proxy-tcp4-then-http": v2(0x21, 0x11, INET4) + HTTP,
    "done--v2-proxy-tcp6": v2(0x21, 0x21, INET6),
    "done--v2-proxy-tcp4-tlvs": v2(0x21, 0x11, INET4 + tlv(0x02, b"example.com") + tlv(0x04, b"") + tlv(0x20, b"\x01\x00\x00\x00\x00" + tlv(0x21, b"TLSv1.3"))),
    "done--v2-proxy-tcp6-max-size": v2(0x21, 0x21, INET6 + tlv(0x04, bytes(520 - 36 - 3))),
    "done--v2-local-empty": v2(0x20, 0x00, b""),
    "done--v2-local-with-addresses": v2(0x20, 0x11, INET4 + tlv(0x05, b"conn-42")),
    "done--v2-proxy-udp4": v2(0x21, 0x12, INET4),
    "done--v2-proxy-unix": v2(0x21, 0x31, b"/run/a.sock".ljust(108, b"\0") + b"/run/b.sock".ljust(108, b"\0")),
    "done--v2-proxy-unspec": v2(0x21, 0x00, b"opaque"),
    # incomplete
    "need_more--empty": b"",
    "need_more--v1-partial": b"PROXY TCP4 192.168.0.1 192.16",
    "need_more--v2-partial": v2(0x21, 0x21, INET6)[:40],
    # not a PROXY header
    "not_proxy--http": HTTP,
    "not_proxy--tls-client-hello": bytes.fromhex("16030100a5010000a10303") + bytes(32),
    "not_proxy--lowercase-proxy": b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    "not_proxy--v2-signature-typo": SIG[:11] + b"\x0b\x21\x11\x00\x0c" + INET4,
    # malformed v1
    "v1_bad_syntax--double-space": b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
    "v1_bad_syntax--lf-only": b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
    "v1_bad_syntax--cr-only": b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",
    "v1_bad_syntax--missing-port": b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
    "v1_bad_syntax--trailing-space": b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
    "v1_bad_protocol--udp4": b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
    "v1_bad_protocol--tcp": b"PROXY TCP 1.2.3.4 5.6.7.8 1 2\r\n",
    # Found by the fuzzer: the bad word was judged after the read that a non-ASCII byte stopped,
    # so "PROXY UD" (bad protocol) and "PROXY UD\xff" (bad syntax) disagreed.
    "v1_bad_protocol--partial-word-then-non-ascii": b"PROXY UD" + b"\xff" * 13 + b"6.7.8 1 2\r\n",
    "v1_bad_address--leading-zero": b"PROXY TCP4 010.0.0.1 5.6.7.8 1 2\r\n",
    "v1_bad_address--octet-256": b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
    "v1_bad_address--v6-in-tcp4": b"PROXY TCP4 ::1 ::1 1 2\r\n",
    "v1_bad_address--two-double-colons": b"PROXY TCP6 1::2::3 ::1 1 2\r\n",
    "v1_bad_address--dotted-tail": b"PROXY TCP6 ::ffff:1.2.3.4 ::1 1 2\r\n",
    "v1_bad_port--leading-zero": b"PROXY TCP4 1.2.3.4 5.6.7.8 080 443\r\n",
    "v1_bad_port--65536": b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 443\r\n",
    "v1_too_long--unknown-no-crlf": b"PROXY UNKNOWN " + b"x" * 100 + b"\r\n",
    # malformed v2
    "v2_bad_version--v1-nibble": v2(0x11, 0x11, INET4),
    "v2_bad_command--2": v2(0x22, 0x11, INET4),
    "v2_bad_family--0x41": v2(0x21, 0x41, INET4),
    "v2_bad_family--0x13": v2(0x21, 0x13, INET4),
    "v2_too_long--521": v2(0x21, 0x11, INET4 + tlv(0x04, bytes(521 - 12 - 3))),
    "v2_too_long--ffff": SIG + b"\x21\x11\xff\xff",
    "v2_bad_address_length--tcp4-11": v2(0x21, 0x11, INET4[:11]),
    "v2_bad_address_length--tcp6-with-v4-block": v2(0x21, 0x21, INET4),
    "v2_bad_tlv--overrun": v2(0x21, 0x11, INET4 + b"\x02\x00\x0aabc"),
    "v2_bad_tlv--stray-byte": v2(0x21, 0x11, INET4 + b"\x04"),
}


def main():
    write_corpus(OUT, SEEDS)


if __name__ == "__main__":
    main()
