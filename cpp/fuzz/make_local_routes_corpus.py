#!/usr/bin/env python3
"""Writes the seed corpus of local_routes_fuzz into local_routes_corpus/ beside this script.

Byte 0 of a seed picks the entry point (0: a route dump reply, 1: a batch of notices), the rest is
rtnetlink messages laid out as the kernel sends them. Re-run after changing the list.
"""

import os
import socket
import struct

from corpus_writer import write_corpus

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "local_routes_corpus")

NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWADDR, RTM_DELADDR, RTM_NEWROUTE, RTM_DELROUTE = 20, 21, 24, 25
RTA_DST, RTA_PRIORITY, RTA_TABLE = 1, 6, 15
RTN_UNICAST, RTN_LOCAL, RTN_BROADCAST = 1, 2, 3
LOCAL, MAIN = 255, 254


def pad(b):
    return b + bytes(-len(b) % 4)


def attr(kind, value):
    return pad(struct.pack("=HH", 4 + len(value), kind) + value)


def message(kind, body):
    return pad(struct.pack("=IHHII", 16 + len(body), kind, 0, 1, 0) + body)


def route(kind, family, dst, length, table, rtype, table_attr=None):
    body = struct.pack("=BBBBBBBBI", family, length, 0, 0, table if table < 256 else 252, 2, 0, rtype, 0)
    body += attr(RTA_PRIORITY, struct.pack("=I", 0))
    if table_attr is not None:
        body += attr(RTA_TABLE, struct.pack("=I", table_attr))
    if dst is not None:
        body += attr(RTA_DST, socket.inet_pton(family, dst))
    return message(kind, body)


DONE = message(NLMSG_DONE, struct.pack("=i", 0))
SEEDS = {
    "dump-anyip-and-host-routes": b"\x00"
    + route(RTM_NEWROUTE, socket.AF_INET, "192.0.2.0", 24, LOCAL, RTN_LOCAL)
    + route(RTM_NEWROUTE, socket.AF_INET, "10.1.0.5", 32, LOCAL, RTN_LOCAL)
    + route(RTM_NEWROUTE, socket.AF_INET, "10.1.0.255", 32, LOCAL, RTN_BROADCAST)
    + DONE,
    "dump-ipv6-and-other-tables": b"\x00"
    + route(RTM_NEWROUTE, socket.AF_INET6, "2001:db8:5::", 64, LOCAL, RTN_LOCAL)
    + route(RTM_NEWROUTE, socket.AF_INET, "0.0.0.0", 0, 100, RTN_LOCAL)
    + route(RTM_NEWROUTE, socket.AF_INET, "10.9.0.0", 16, MAIN, RTN_UNICAST),
    "dump-table-attribute": b"\x00" + route(RTM_NEWROUTE, socket.AF_INET, "198.51.100.0", 24, 252, RTN_LOCAL, LOCAL) + DONE,
    "dump-error": b"\x00" + message(NLMSG_ERROR, struct.pack("=i", -22) + bytes(16)),
    "dump-truncated": b"\x00" + route(RTM_NEWROUTE, socket.AF_INET, "192.0.2.0", 24, LOCAL, RTN_LOCAL)[:-6],
    "notices-main-table": b"\x01" + route(RTM_NEWROUTE, socket.AF_INET, "10.9.0.0", 16, MAIN, RTN_UNICAST),
    "notices-address-added": b"\x01" + message(RTM_NEWADDR, bytes(8)),
    "notices-local-route-removed": b"\x01"
    + route(RTM_DELROUTE, socket.AF_INET6, "2001:db8:5::", 64, LOCAL, RTN_LOCAL)
    + message(RTM_DELADDR, bytes(8)),
}

if __name__ == "__main__":
    write_corpus(OUT, SEEDS)
