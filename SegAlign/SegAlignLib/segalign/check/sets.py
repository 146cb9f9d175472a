"""Overlapping segments as one image per frame: each pixel holds the code of the set of segments on it.

A check compares images pixel by pixel. Where segments overlap (a body outline around every organ, a PTV around
its CTV), one label per pixel cannot hold them, so both the truth and the user's export are turned into images of
*set codes*: code 0 is no segment, and every other code stands for one set of label values (``{1}``, ``{1, 3}``...),
numbered in the order the sets are first seen, shared by the truth and the export. Two such images are equal
exactly when every segment's mask is, and the in-plane transforms, frame orders and shifts a check looks for act
on them as on label images. What a label value means (renamed, missing) is then judged per segment
(:func:`segment_mapping`), and Dice per segment (:func:`segment_dice`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from ..errors import SegAlignError

#: The most sets of segments one check tells apart (code images are uint32; the counting wants far fewer).
MOST_SETS = 1 << 20


class SegmentSets:
    """The table of set codes: ``sets[code]`` is a frozenset of label values; code 0 is the empty set."""

    dtype = np.uint32

    def __init__(self) -> None:
        self.sets: list[frozenset[int]] = [frozenset()]
        self._codes: dict[frozenset[int], int] = {frozenset(): 0}

    def __len__(self) -> int:
        return len(self.sets)

    def code(self, members: Iterable[int]) -> int:
        key = frozenset(int(v) for v in members if int(v) != 0)
        found = self._codes.get(key)
        if found is None:
            if len(self.sets) >= MOST_SETS:
                raise SegAlignError(f"more than {MOST_SETS} different sets of overlapping segments: too many to "
                                    "compare")
            found = self._codes[key] = len(self.sets)
            self.sets.append(key)
        return found

    def blank(self, shape: tuple[int, ...]) -> np.ndarray:
        return np.zeros(shape, dtype=self.dtype)

    def of_labels(self, labels: np.ndarray) -> np.ndarray:
        """A label image (one value per pixel) as set codes."""
        values = np.unique(labels)
        lookup = np.zeros(int(values.max()) + 1 if values.size else 1, dtype=self.dtype)
        for value in values.tolist():
            lookup[value] = self.code([value])
        return lookup[labels]

    def union(self, codes: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Set codes with each pixel's value of ``labels`` (a label image, 0: none) added to its set."""
        inside = labels != 0
        if not inside.any():
            return codes
        result = codes.copy()
        pairs = codes[inside].astype(np.int64) * (int(labels.max()) + 1) + labels[inside].astype(np.int64)
        present, inverse = np.unique(pairs, return_inverse=True)
        top = int(labels.max()) + 1
        added = np.array([self.code(self.sets[int(p) // top] | {int(p) % top}) for p in present.tolist()],
                         dtype=self.dtype)
        result[inside] = added[inverse.ravel()]
        return result

    def of_layers(self, layers: Iterable[np.ndarray]) -> np.ndarray:
        """The set codes of label images laid over each other (SegAlign's layers: each pixel's values together)."""
        result = None
        for layer in layers:
            result = self.union(self.blank(layer.shape) if result is None else result, layer)
        assert result is not None
        return result

    def paint(self, codes: np.ndarray, mask: np.ndarray, value: int) -> None:
        """Add segment ``value`` to the set of every pixel of ``mask``, in place."""
        if not mask.any():
            return
        old = codes[mask]
        present, inverse = np.unique(old, return_inverse=True)
        new = np.array([self.code(self.sets[int(c)] | {int(value)}) for c in present.tolist()], dtype=self.dtype)
        codes[mask] = new[inverse.ravel()]

    def members(self, code: int) -> frozenset[int]:
        return self.sets[int(code)]

    def mapped(self, mapping: Mapping[int, int]) -> np.ndarray:
        """A lookup from every code to the code of its set with each value renamed by ``mapping`` (0: dropped)."""
        lookup = np.arange(len(self.sets), dtype=np.int64)
        for code, members in enumerate(list(self.sets)):
            if any(value in mapping for value in members):
                lookup[code] = self.code(mapping.get(value, value) for value in members)
        if len(self.sets) > len(lookup):  # renaming made new sets: they map to themselves
            lookup = np.concatenate([lookup, np.arange(len(lookup), len(self.sets), dtype=np.int64)])
        return lookup

    def shown(self, codes: np.ndarray) -> np.ndarray:
        """For a picture: each pixel's highest label value (its set's last segment), as a label image."""
        lookup = np.array([max(members) if members else 0 for members in self.sets], dtype=np.int64)
        result = lookup[np.minimum(codes, len(lookup) - 1)]
        return result.astype(np.uint16 if result.size and result.max() > 255 else np.uint8)

    def overlapping_pixels(self, codes: np.ndarray) -> int:
        """Pixels on which two segments or more lie."""
        several = np.array([len(members) > 1 for members in self.sets], dtype=bool)
        return int(np.count_nonzero(several[codes]))


def per_segment(sets: SegmentSets, pairs: Mapping[tuple[int, int], int]) -> tuple[
        dict[int, int], dict[int, int], dict[tuple[int, int], int]]:
    """From pixel counts of (true code, user code) pairs: each true segment's pixels, each user segment's pixels, and
    for every (true segment, user segment) how many pixels hold both."""
    truth: dict[int, int] = {}
    user: dict[int, int] = {}
    both: dict[tuple[int, int], int] = {}
    for (v, w), n in pairs.items():
        true_members, user_members = sets.members(v), sets.members(w)
        for s in true_members:
            truth[s] = truth.get(s, 0) + n
            for t in user_members:
                both[(s, t)] = both.get((s, t), 0) + n
        for t in user_members:
            user[t] = user.get(t, 0) + n
    return truth, user, both


def segment_mapping(sets: SegmentSets, pairs: Mapping[tuple[int, int], int]) -> dict[int, int]:
    """True segment -> the user's value for it, where they differ: another user segment whose pixels are most
    alike (Jaccard over half, and above the segment's own value's); else 0 (missing) when the user's segment of its
    own value holds at most half of its pixels. (Other segments holding its pixels is no sign: they may overlap.)"""
    truth, user, both = per_segment(sets, pairs)
    mapping = {}
    def jaccard(s: int, t: int) -> float:
        shared = both.get((s, t), 0)
        union = truth[s] + user.get(t, 0) - shared
        return shared / union if union else 0.0

    for s, size in truth.items():
        candidates = {t for (a, t) in both if a == s}
        best = max(candidates, key=lambda t: (jaccard(s, t), t == s), default=None)
        if best is not None and best != s and jaccard(s, best) > 0.5 and jaccard(s, best) > jaccard(s, s):
            mapping[s] = best
        elif both.get((s, s), 0) * 2 <= size:
            mapping[s] = 0
    return mapping


def code_totals(sets: SegmentSets, totals: Mapping[int, int]) -> dict[int, int]:
    """Pixels per segment, from pixels per set code."""
    result: dict[int, int] = {}
    for code, n in totals.items():
        for value in sets.members(code):
            result[value] = result.get(value, 0) + n
    return result


def segment_dice(sets: SegmentSets, pairs: Mapping[tuple[int, int], int], truth_total: Mapping[int, int],
                 user_total: Mapping[int, int], mapping: Mapping[int, int] | None = None) -> dict[int, float | None]:
    """Dice of every true segment with the user's segment of its value (or the one ``mapping`` gives): pixels in
    both (from ``pairs``, the compared pixels) over the pixels of each (``truth_total`` and ``user_total``: pixels
    per set code over all the images, compared or not)."""
    _, _, both = per_segment(sets, pairs)
    truth, user = code_totals(sets, truth_total), code_totals(sets, user_total)
    result: dict[int, float | None] = {}
    for s in set(truth) | set(user):
        target = (mapping or {}).get(s, s)
        size, other = truth.get(s, 0), user.get(target, 0) if target else 0
        shared = both.get((s, target), 0) if target else 0
        result[s] = round(2.0 * shared / (size + other), 6) if size + other else None
    return result
