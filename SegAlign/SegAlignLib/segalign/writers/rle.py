"""DICOM RLE Lossless (PS3.5 Annex G) encoding of label frames, vectorised with numpy.

pydicom's own RLE encoder loops over bytes in Python (about 0.1 s for a 512 x 512 frame), and the fast ones
(pylibjpeg-rle, GDCM) are optional extras; label maps are long runs of few values, which numpy encodes in a few
milliseconds. The output is standard PackBits, one segment per byte plane (most significant first), each row
encoded separately, every segment padded to an even length: any RLE decoder reads it (pydicom's, pylibjpeg-rle,
GDCM, DCMTK).
"""

from __future__ import annotations

import struct

import numpy as np

#: The longest run or literal one PackBits packet holds.
PACKET = 128


def encode_frame(frame: np.ndarray) -> bytes:
    """One frame (``(rows, columns)`` uint8 or uint16) as an RLE Lossless fragment: the 64-byte header giving
    the segment offsets, then the segments."""
    frame = np.ascontiguousarray(frame)
    if frame.ndim != 2 or frame.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"RLE encodes 2D uint8 or uint16 frames, not {frame.dtype} of shape {frame.shape}")
    if frame.dtype == np.uint8:
        planes = [frame]
    else:
        big = frame.astype(">u2").view(np.uint8).reshape(frame.shape[0], frame.shape[1], 2)
        planes = [big[:, :, 0], big[:, :, 1]]  # most significant byte first, as Annex G orders the segments
    segments = [encode_segment(np.ascontiguousarray(plane)) for plane in planes]
    offsets = [64]
    for segment in segments[:-1]:
        offsets.append(offsets[-1] + len(segment))
    header = struct.pack("<16I", len(segments), *offsets, *([0] * (15 - len(offsets))))
    return header + b"".join(segments)


def encode_segment(plane: np.ndarray) -> bytes:
    """PackBits of one byte plane ``(rows, columns)`` uint8, row by row, padded to an even length.

    Runs of two or more equal bytes become replicate packets (header ``257 - n``, then the byte), the single
    bytes between them literal packets (header ``n - 1``, then the n bytes); both are cut at 128 bytes and at
    the end of each row.
    """
    rows, columns = plane.shape
    flat = plane.reshape(-1)
    size = flat.size
    if size == 0:
        return b""
    starts_run = np.empty(size, dtype=bool)
    starts_run[0] = True
    np.not_equal(flat[1:], flat[:-1], out=starts_run[1:])
    starts_run[::columns] = True  # no packet crosses a row boundary
    run_starts = np.flatnonzero(starts_run)
    run_lengths = np.diff(np.append(run_starts, size))

    # Replicate packets: every run of 2 or more, cut into pieces of at most 128 (a last piece of 1 byte is written
    # as a literal of one, whose header 0 is what 257 - 1 gives modulo 256).
    long_runs = run_lengths >= 2
    rep_start, rep_length = _pieces(run_starts[long_runs], run_lengths[long_runs])

    # Literal packets: maximal groups of consecutive single-byte runs within a row, cut into pieces of 128.
    single = ~long_runs
    single_starts = run_starts[single]
    if single_starts.size:
        new_group = np.empty(single_starts.size, dtype=bool)
        new_group[0] = True
        new_group[1:] = (np.diff(single_starts) != 1) | (single_starts[1:] % columns == 0)
        group_starts = single_starts[new_group]
        group_lengths = np.diff(np.append(np.flatnonzero(new_group), single_starts.size))
    else:
        group_starts = group_lengths = np.zeros(0, dtype=np.int64)
    lit_start, lit_length = _pieces(group_starts, group_lengths)

    # Interleave both kinds of packet in pixel order and lay them out.
    starts = np.concatenate([rep_start, lit_start])
    lengths = np.concatenate([rep_length, lit_length])
    literal = np.concatenate([np.zeros(rep_start.size, bool), np.ones(lit_start.size, bool)])
    order = np.argsort(starts, kind="stable")
    starts, lengths, literal = starts[order], lengths[order], literal[order]
    sizes = np.where(literal, lengths + 1, 2)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    total = int(sizes.sum())
    out = np.zeros(total + (total & 1), dtype=np.uint8)  # a segment has an even length (Annex G.3.1)
    out[offsets] = np.where(literal, lengths - 1, (257 - lengths) & 0xFF).astype(np.uint8)
    rep = ~literal
    out[offsets[rep] + 1] = flat[starts[rep]]
    if literal.any():
        lit_offsets, lit_starts, lit_lengths = offsets[literal], starts[literal], lengths[literal]
        count = int(lit_lengths.sum())
        within = np.arange(count) - np.repeat(np.cumsum(lit_lengths) - lit_lengths, lit_lengths)
        out[np.repeat(lit_offsets + 1, lit_lengths) + within] = flat[np.repeat(lit_starts, lit_lengths) + within]
    return out.tobytes()


def _pieces(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Runs cut into pieces of at most :data:`PACKET`: the pieces' starts and lengths, in order."""
    counts = (lengths + PACKET - 1) // PACKET
    first = np.repeat(starts, counts)
    index = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    piece_starts = first + index * PACKET
    piece_lengths = np.minimum(np.repeat(lengths, counts) - index * PACKET, PACKET)
    return piece_starts.astype(np.int64), piece_lengths.astype(np.int64)
