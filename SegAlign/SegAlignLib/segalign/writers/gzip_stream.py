"""A gzip file compressed on several threads, as pigz does: one gzip member whose deflate stream is made of
independently compressed blocks, each ended on a byte boundary (``Z_SYNC_FLUSH``), the last one finished. Any gzip
reader (zlib, Python's gzip, nibabel, ITK, dcm2niix's tools) reads it as one stream; the blocks do not share a
dictionary, which costs a fraction of a percent in size. zlib releases the GIL while it compresses, so two threads
halve the time a volume of a few hundred MB takes to write (deflate is most of ``--volume``'s time).
"""

from __future__ import annotations

import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

#: Bytes compressed as one block: large enough that the blocks' separate dictionaries cost nothing measurable,
#: small enough that a few blocks in flight stay a few MB.
BLOCK = 4 << 20
#: nibabel's default level for .nii.gz: the fastest, and volumes of labels and CT values compress well at it.
LEVEL = 1


def _deflate(block: memoryview, last: bool, level: int) -> bytes:
    compressor = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(block) + compressor.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


def write_gzip(path: Path, parts: Iterable[bytes | memoryview], threads: int = 2, level: int = LEVEL) -> None:
    """Write the concatenation of ``parts`` (buffers, read and never copied whole) to ``path`` as gzip."""
    blocks: list[tuple[memoryview, bool]] = []
    views = [memoryview(part).cast("B") for part in parts]
    views = [view for view in views if view.nbytes] or [memoryview(b"")]
    for number, view in enumerate(views):
        starts = range(0, max(view.nbytes, 1), BLOCK)
        for start in starts:
            last = number == len(views) - 1 and start + BLOCK >= view.nbytes
            blocks.append((view[start:start + BLOCK], last))
    crc, size = 0, 0
    with open(path, "wb") as stream, ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        # magic, deflate, no flags, no time, fastest level (XFL 4), unknown OS (255)
        stream.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\xff")
        in_flight = 2 * max(1, threads)
        pending = [pool.submit(_deflate, block, last, level) for block, last in blocks[:in_flight]]
        for index, (block, _) in enumerate(blocks):
            if index + in_flight < len(blocks):
                block_, last_ = blocks[index + in_flight]
                pending.append(pool.submit(_deflate, block_, last_, level))
            crc = zlib.crc32(block, crc)
            size += block.nbytes
            stream.write(pending[index].result())
            pending[index] = None  # type: ignore[call-overload]  # done: let its bytes go
        stream.write(struct.pack("<II", crc & 0xFFFFFFFF, size & 0xFFFFFFFF))
