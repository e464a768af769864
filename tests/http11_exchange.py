"""What the connection layer sees of a protocol backend, for the tests that compare backends."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import asyncpool
from asyncpool._h1.protocol import END_OF_MESSAGE, NEED_DATA, PAUSED, HTTP1Protocol


def outcome(p: HTTP1Protocol, reads: Iterable[bytes], *, error_text: bool = True) -> list[Any]:
    """Feed ``reads``: the events up to the end of the response (a body as one bytes), then
    whether the connection may be reused and holds unsolicited bytes; or the error, by type
    (and text, unless ``error_text`` is false)."""
    seen: list[Any] = []
    try:
        for data in reads:
            p.feed(data)
            while (event := p.next_event()) is not NEED_DATA and event is not PAUSED:
                if isinstance(event, bytes) and seen and isinstance(seen[-1], bytes):
                    seen[-1] += event
                else:
                    seen.append(event)
                if event is END_OF_MESSAGE:
                    return [*seen, p.start_next_cycle(), p.has_buffered_data]
            if event is PAUSED:
                return [*seen, PAUSED]
    except asyncpool.HTTPError as exc:
        return [*seen, type(exc), str(exc)] if error_text else [*seen, type(exc)]
    return [*seen, NEED_DATA]
