"""The generated stream: simulated flows -> rule violations -> disorder (out-of-order, late).

Each stage draws from its own seeded random source, so changing a fraction changes only what
that stage does: the same seed with ``invalid_fraction`` 0 and 0.1 gives the same flows.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable, Iterator

from headwater.generator.faults import violate
from headwater.generator.flows import FlowSimulator
from headwater.generator.model import GeneratedEvent, GeneratorConfig


def generate(config: GeneratorConfig, limit: int | None = None) -> Iterator[GeneratedEvent]:
    """The full stream (exactly ``limit`` events, or endless), deterministic for ``config``."""
    stream = FlowSimulator(config).events(limit)
    if config.invalid_fraction:
        stream = _invalidate(stream, config)
    return _disorder(stream, config)


def _invalidate(stream: Iterable[GeneratedEvent], config: GeneratorConfig) -> Iterator[GeneratedEvent]:
    rng = random.Random(f"{config.seed}:invalid")
    fraction = config.invalid_fraction
    for event in stream:
        if rng.random() < fraction:
            violate(event, rng)
        yield event


def _disorder(stream: Iterable[GeneratedEvent], config: GeneratorConfig) -> Iterator[GeneratedEvent]:
    """Hold some events back until the stream's event time passed them by a delay.

    Out-of-order events wait 1..``max_disorder_ms`` of event time; late events ``late_by_ms``..1.5x
    that, so their ``lateness_ms`` is at least ``late_by_ms`` unless the stream ends first (held
    events still pending then are flushed in release order). ``lateness_ms`` is measured against
    the max event time emitted before the event.
    """
    rng = random.Random(f"{config.seed}:disorder")
    p_ooo, p_late = config.out_of_order_fraction, config.late_fraction
    held: list[tuple[int, int, GeneratedEvent]] = []
    seq, high = 0, -(2**63)
    for event in stream:
        draw = rng.random() if p_ooo or p_late else 1.0
        if draw < p_ooo + p_late:
            late = draw >= p_ooo
            event.delayed = "late" if late else "out-of-order"
            lo, hi = (config.late_by_ms, config.late_by_ms * 3 // 2) if late else (1, config.max_disorder_ms)
            seq += 1
            heapq.heappush(held, (event.timestamp + rng.randint(lo, hi), seq, event))
            continue
        high = max(high, event.timestamp)
        yield event
        while held and held[0][0] <= high:
            yield _release(heapq.heappop(held)[2], high)
    while held:
        event = _release(heapq.heappop(held)[2], high)
        high = max(high, event.timestamp)
        yield event


def _release(event: GeneratedEvent, high: int) -> GeneratedEvent:
    event.lateness_ms = max(0, high - event.timestamp)
    return event
