"""The HTTP/1.1 protocol layer alone, no sockets: one request/response cycle of each parser.

    python benchmarks/bench_protocol.py                  # both parsers
    python benchmarks/bench_protocol.py --parsers httptools --cycles 50000

A cycle is what a connection asks of its protocol per request: the request head, the end of the
(empty) body, nginx's response to `GET /small` (9 header fields, 12-byte body) fed in one read
and taken out event by event, and the next cycle's start. Printed: the best of --repeat timed
batches, in microseconds per cycle. Without the network or the event loop it is steady enough
to compare two versions of the parsing code (run each in turn, a few times); it says nothing
about throughput, which `run_all.py` measures.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asyncpool._h1.protocol import END_OF_MESSAGE, PARSERS, make_protocol

RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 21 Nov 2026 12:00:00 GMT\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Length: 12\r\n"
    b"Last-Modified: Sat, 21 Nov 2026 11:00:00 GMT\r\nConnection: keep-alive\r\n"
    b'ETag: "abc-c"\r\nAccept-Ranges: bytes\r\n\r\nhello world!'
)
REQUEST_FIELDS = [("Host", "127.0.0.1:8080"), ("Accept-Encoding", "gzip, deflate")]


def per_cycle(parser: str, cycles: int, repeat: int) -> float:
    """Best microseconds per cycle over ``repeat`` batches of ``cycles``."""
    p = make_protocol(parser, "127.0.0.1:8080", max_header_bytes=65536)

    def cycle() -> None:
        p.request_head("GET", "/small", REQUEST_FIELDS)
        p.end_of_body()
        p.feed(RESPONSE)
        while p.next_event() is not END_OF_MESSAGE:
            pass
        if not p.start_next_cycle():
            raise RuntimeError("the connection was not kept alive")

    for _ in range(cycles // 10):  # warm up
        cycle()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(cycles):
            cycle()
        best = min(best, (time.perf_counter() - start) / cycles)
    return best * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parsers", default=",".join(PARSERS), help="comma list of parsers")
    ap.add_argument("--cycles", type=int, default=20000, help="cycles per timed batch")
    ap.add_argument("--repeat", type=int, default=7, help="timed batches; the best is shown")
    args = ap.parse_args()
    for parser in args.parsers.split(","):
        try:
            us = per_cycle(parser, args.cycles, args.repeat)
        except ImportError as e:
            print(f"{parser:10} skipped: {e}")
            continue
        print(f"{parser:10} {us:6.2f} µs per cycle")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
