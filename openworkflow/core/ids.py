"""Record ids: UUIDs whose first 48 bits are the creation time (UUID version 7).

They are ordinary 36-character UUID strings, as the original writes, so both
engines read them alike. Ordered by time, they keep the primary-key indexes
of a busy queue appending at one end instead of touching pages all over the
index (random UUIDs dirty a page per row once the table is large, which
makes every commit and checkpoint write more), and they break ties between
records created in the same millisecond in creation order.
"""

from __future__ import annotations

import os
import threading
import time

_lock = threading.Lock()
_last_ms = 0
_sequence = 0


def new_id() -> str:
    """A new UUIDv7 string: 48-bit Unix milliseconds, a 12-bit counter, 62 random bits."""
    global _last_ms, _sequence
    with _lock:
        now_ms = time.time_ns() // 1_000_000
        if now_ms > _last_ms:
            _last_ms, _sequence = now_ms, int.from_bytes(os.urandom(2), "big") & 0x3FF
        else:  # same millisecond (or the clock stepped back): count on, keep order
            _sequence += 1
            if _sequence > 0xFFF:
                _last_ms, _sequence = _last_ms + 1, 0
        ms, sequence = _last_ms, _sequence
    tail = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms << 80) | (0x7 << 76) | (sequence << 64) | (0b10 << 62) | tail
    # The canonical 8-4-4-4-12 form, as str(uuid.UUID(int=value)) writes it
    # without building the UUID (a third of the cost; a few ids per run).
    digits = f"{value:032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"
