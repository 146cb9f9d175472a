"""The diagnosis: which of the faults users actually make turns the true labels into the user's images.

The truth is one label image per frame in acquisition order (what ``segalign export`` writes); the user's export
is a list of label images, each tied to the frame it is meant for (see :mod:`.exports`). When they differ, the
explanations are searched in this order:

1. Which true frame each image holds (``frame_of_image``). Per-label pixel counts do not change under the eight
   in-plane transforms, and their sorted values not under renamed labels either: images are matched to frames by
   them, and where several frames fit (frames without labels, near-equal counts), by the frame order that explains
   most images: the tie itself, reversed, offset by k, the frames sorted by position along the normal, by DICOM
   file name (plain text or natural), by their numbers sorted as text. Where counts do not fit exactly (other
   rounding, merged labels), the best few orders are compared pixel by pixel.
2. Which of the eight in-plane transforms (:data:`TRANSFORMS`) makes each image's labelled pixels those of its
   frame; one transform for every image, or groups of frames.
3. Which label values the user wrote for the true ones (renamed, merged, dropped), from the confusion of true and
   user labels over every pixel once 1. and 2. are undone.
4. What still differs, and whether all of it lies on label boundaries (within one pixel of a change of the true
   label: another rounding or interpolation rule).

The result (:class:`Diagnosis`) holds the verdict per image and the findings: short sentences, with the code that
undoes a fault where one explanation holds for every frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from ..dicom import Frame
from ..dicom.model import plural
from ..segmentation import Label
from .exports import UserImages, natural_key
from .sets import SegmentSets, segment_dice, segment_mapping

#: The in-plane transforms by name: with ``a`` a frame's true labels, the user's image is ``a``, ``a[::-1, :]``...
TRANSFORMS = (
    "identity", "flip_rows", "flip_columns", "rotate_180",
    "transpose", "transpose_flip_rows", "transpose_flip_columns", "transpose_rotate_180",
)
#: What each transform looks like, in words.
TRANSFORM_WORDS = {
    "identity": "as it is",
    "flip_rows": "upside down (rows in reverse order)",
    "flip_columns": "mirrored left to right (columns in reverse order)",
    "rotate_180": "rotated by 180 degrees",
    "transpose": "transposed (rows and columns swapped, as an (x, y) array from nibabel is)",
    "transpose_flip_rows": "transposed, then upside down",
    "transpose_flip_columns": "transposed, then mirrored left to right",
    "transpose_rotate_180": "transposed, then rotated by 180 degrees",
}
#: Code that gives the true labels back from one user image ``image``, per transform.
UNDO_IMAGE = {
    "identity": "fixed = image",
    "flip_rows": "fixed = image[::-1, :]",
    "flip_columns": "fixed = image[:, ::-1]",
    "rotate_180": "fixed = image[::-1, ::-1]",
    "transpose": "fixed = image.T",
    "transpose_flip_rows": "fixed = image[::-1, :].T",
    "transpose_flip_columns": "fixed = image[:, ::-1].T",
    "transpose_rotate_180": "fixed = image[::-1, ::-1].T",
}
#: The same for a stack ``images`` of shape (images, rows, columns).
UNDO_STACK = {
    "identity": "images",
    "flip_rows": "images[:, ::-1, :]",
    "flip_columns": "images[:, :, ::-1]",
    "rotate_180": "images[:, ::-1, ::-1]",
    "transpose": "images.transpose(0, 2, 1)",
    "transpose_flip_rows": "images[:, ::-1, :].transpose(0, 2, 1)",
    "transpose_flip_columns": "images[:, :, ::-1].transpose(0, 2, 1)",
    "transpose_rotate_180": "images[:, ::-1, ::-1].transpose(0, 2, 1)",
}
#: Counts that differ by less than this (relative) still let an order be checked pixel by pixel.
NEAR = 0.9
#: A shift of whole pixels explains an image when moving its labels back leaves at most 1/SHIFT_FIXES of the
#: differing labelled pixels.
SHIFT_FIXES = 10
#: The most orders compared pixel by pixel when counts alone do not decide.
VERIFIED_ORDERS = 4


def transformed(labels: np.ndarray, name: str) -> np.ndarray:
    """``labels`` under the in-plane transform ``name`` (a view: no copy)."""
    result = labels.T if name.startswith("transpose") else labels
    if name.endswith("flip_rows"):
        return result[::-1, :]
    if name.endswith("flip_columns"):
        return result[:, ::-1]
    if name.endswith("rotate_180"):
        return result[::-1, ::-1]
    return result


def shifted(labels: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """``labels`` moved down by ``rows`` and right by ``columns`` (negative: up, left), background coming in."""
    if not rows and not columns:
        return labels
    result = np.zeros_like(labels)
    height, width = labels.shape
    if abs(rows) >= height or abs(columns) >= width:
        return result
    result[max(rows, 0):height + min(rows, 0), max(columns, 0):width + min(columns, 0)] = \
        labels[max(-rows, 0):height - max(rows, 0), max(-columns, 0):width - max(columns, 0)]
    return result


@dataclass
class ImageVerdict:
    """What one user image is."""

    name: str
    tied: int | None  #: the frame it is meant for
    frame: int | None = None  #: the frame it holds (best match), or None
    transform: str | None = None  #: the in-plane transform that takes its frame's labels to it
    shift: tuple[int, int] = (0, 0)  #: then moved by this many (rows, columns)
    mismatched: int = 0  #: pixels that differ from the frame it is meant for, before any explanation
    residual: int = 0  #: pixels that still differ once every explanation is undone
    off_boundary: int = 0  #: of those, pixels farther than one pixel from a change of the true label
    lost: int = 0  #: labelled pixels its shift moved off the image (in no image, so not undone)
    only_truth: int = 0  #: of the residual, pixels labelled by SegAlign only
    only_user: int = 0  #: of the residual, pixels labelled in the user's image only
    under_contours: int = 0  #: of the residual, pixels whose centres lie on a contour line (an RTSTRUCT's)


@dataclass
class Diagnosis:
    """The outcome of a check: the fields of the JSON report, and the verdict per image."""

    exact: bool
    frames: int
    images: int
    image_names: list[str]
    mismatched_pixels: int
    frame_of_image: list[int | None]
    in_plane: str | None
    residual_mismatched_pixels: int
    findings: list[str]
    labels: list[dict[str, object]]
    verdicts: list[ImageVerdict] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)  #: frames no image holds
    order: str | None = None  #: the name of the order explanation ("identity", "reversed", ...)
    mapping: dict[int, int] = field(default_factory=dict)  #: true label value -> the user's, where they differ

    def as_dict(self) -> dict[str, object]:
        """The JSON object of ``segalign check --json``: exactly the issue's keys."""
        return {
            "exact": self.exact, "frames": self.frames, "images": self.images, "image_names": self.image_names,
            "mismatched_pixels": self.mismatched_pixels, "frame_of_image": self.frame_of_image,
            "in_plane": self.in_plane, "residual_mismatched_pixels": self.residual_mismatched_pixels,
            "findings": self.findings, "labels": self.labels,
        }


# ---------------------------------------------------------------------------------------------------------------
# counting
# ---------------------------------------------------------------------------------------------------------------

class Counts:
    """Label counts of one image: the values present (0 included) and how many pixels hold each."""

    __slots__ = ("values", "counts", "signature", "foreground", "shape")

    def __init__(self, image: np.ndarray) -> None:
        flat = image.ravel()
        inside = flat[flat != 0]  # the background is counted as what is left: most pixels, never looked at twice
        if image.dtype == np.uint8 or (inside.size and int(inside.max()) < 4096):
            counted = np.bincount(inside)
            values = np.flatnonzero(counted)
            counts = counted[values]
        else:
            values, counts = np.unique(inside, return_counts=True)
        background = flat.size - inside.size
        self.values = np.concatenate([[0], values]).astype(np.int64) if background else values.astype(np.int64)
        self.counts = np.concatenate([[background], counts]).astype(np.int64) if background else counts.astype(np.int64)
        labelled = counts.astype(np.int64)
        #: Invariant under the in-plane transforms and renamed labels: the sorted counts of the labels present.
        self.signature = (tuple(sorted(image.shape)), tuple(sorted(labelled.tolist(), reverse=True)))
        self.foreground = int(labelled.sum())
        self.shape = image.shape

    def as_dict(self) -> dict[int, int]:
        return dict(zip(self.values.tolist(), self.counts.tolist()))


def pair_counts(truth: np.ndarray, user: np.ndarray, top: int, off_diagonal: bool = True) -> dict[tuple[int, int], int]:
    """How many pixels hold true label v and user label w, for every pair present: pixels that agree by one count
    of their labels, pixels that differ (few, once a fault is undone) pair by pair; ``off_diagonal=False`` counts
    only the agreeing ones."""
    equal = truth == user
    labelled = truth[equal & (truth != 0)]
    result: dict[tuple[int, int], int] = {}
    if labelled.size:
        counted = np.bincount(labelled)
        for value in np.flatnonzero(counted):
            result[(int(value), int(value))] = int(counted[value])
    background = int(np.count_nonzero(equal)) - int(labelled.size)
    if background:
        result[(0, 0)] = background
    if off_diagonal and background + labelled.size < equal.size:
        differ = ~equal
        codes = truth[differ].astype(np.int64) * top + user[differ].astype(np.int64)
        present, counted = np.unique(codes, return_counts=True)
        for code, n in zip(present.tolist(), counted.tolist()):
            result[(code // top, code % top)] = n
    return result


def add_counts(total: dict, more: dict) -> None:
    for key, value in more.items():
        total[key] = total.get(key, 0) + value


def near_edges(labels: np.ndarray) -> np.ndarray:
    """Pixels with a pixel of another label within one pixel (the 8 neighbours; beyond the image is background, so
    a structure cut by the image's edge has its boundary there)."""
    padded = np.pad(labels, 1, mode="constant", constant_values=0)
    centre = padded[1:-1, 1:-1]
    rows, columns = labels.shape
    near = np.zeros(labels.shape, dtype=bool)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            if dr or dc:
                near |= padded[1 + dr:1 + dr + rows, 1 + dc:1 + dc + columns] != centre
    return near


# ---------------------------------------------------------------------------------------------------------------
# frame orders
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class Order:
    """A frame order a user may have taken for acquisition order: the image meant for frame t holds
    ``predict(t)``."""

    name: str  #: "identity", "reversed", "offset", "position", ...
    words: str  #: what it is, in a finding
    predict: Callable[[int], int | None]
    offset: int = 0
    aliases: list[str] = field(default_factory=list)  #: the phrases of other orders that predict the same
    phrase: str = ""  #: a short name of the order, when another one is the same

    def at(self, image: int, tied: int | None) -> int | None:
        """The frame the order says image number ``image``, meant for frame ``tied``, holds."""
        return self.predict(tied) if tied is not None else None


def frame_orders(frames: Sequence[Frame], tied: Sequence[int | None], offsets: Iterable[int],
                 dicom_root: Path | None) -> list[Order]:
    """The orders worth trying, most likely first: the tie itself, reversed, offsets, the frames sorted by another
    key (the user took that order for acquisition order), and the other way round (images in acquisition order,
    their names or references given in another order)."""
    count = len(frames)
    inside = (lambda f: f if 0 <= f < count else None)
    orders = [
        Order("identity", "the frames they are meant for", lambda t: t),
        Order("reversed", "the frames in reverse order", lambda t: inside(count - 1 - t)),
    ]
    known = [t for t in tied if t is not None]
    if known and (min(known), max(known)) != (0, count - 1):
        low, high = min(known), max(known)
        orders.append(Order("reversed", f"frames {low}-{high} in reverse order", lambda t: inside(low + high - t)))
    for offset in offsets:
        if offset:
            orders.append(Order("offset", _offset_words(offset), lambda t, k=offset: inside(t + k), offset))
    normal = frames[0].normal

    def by(key: Callable[[int], object]) -> list[int]:
        return sorted(range(count), key=key)

    positions = [float(np.dot(frame.tiles[0].position if frame.tiles else frame.position, normal)) for frame in frames]
    names = [_relative(frame.source_file, dicom_root) for frame in frames]
    numbers = [frame.instance_number for frame in frames]
    sorted_orders = [  # (name, the key in words, an example of its order, the frames in that order)
        ("position", "position along the slice normal", " (instead of by InstanceNumber)",
         by(lambda i: (positions[i], i))),
        ("position_descending", "position along the slice normal, downwards", "", by(lambda i: (-positions[i], i))),
        ("file_names_plain", "DICOM file name as plain text", f" ({_example(sorted(names))})",
         by(lambda i: (names[i], i))),
        ("file_names_natural", "DICOM file name in natural order", f" ({_example(sorted(names, key=natural_key))})",
         by(lambda i: (natural_key(names[i]), i))),
        ("numbers_as_text", "number from 1 as text", f" ({_example(sorted(str(i + 1) for i in range(count)))})",
         by(lambda i: (str(i + 1), i))),
        ("numbers_as_text", "number from 0 as text", f" ({_example(sorted(str(i) for i in range(count)))})",
         by(lambda i: (str(i), i))),
    ]
    if all(number is not None for number in numbers) and len(set(numbers)) == count:
        sorted_orders.append(("numbers_as_text", "InstanceNumber as text",
                              f" ({_example(sorted(str(n) for n in numbers))})", by(lambda i: (str(numbers[i]), i))))
    for name, key, example, permutation in sorted_orders:
        orders.append(Order(name, f"the frames sorted by {key}{example}",
                            lambda t, p=permutation: p[t] if 0 <= t < count else None, phrase=f"sorted by {key}"))
    for name, key, example, permutation in sorted_orders:  # the other way round: names or references in that order
        inverse = [0] * count
        for rank, frame in enumerate(permutation):
            inverse[frame] = rank
        orders.append(Order(f"{name}_paired", "the frames in acquisition order, but their names or references were "
                            f"given in the order of the frames sorted by {key}{example}",
                            lambda t, p=inverse: p[t] if 0 <= t < count else None,
                            phrase=f"acquisition order named or referenced by {key}"))
    # one order of every prediction: the first name, the others as aliases
    unique: list[Order] = []
    predictions: list[list[int | None]] = []
    for order in orders:
        predicted = [order.at(index, t) for index, t in enumerate(tied)]
        same = next((i for i, seen in enumerate(predictions) if seen == predicted), None)
        if same is None:
            unique.append(order)
            predictions.append(predicted)
        elif order.phrase and order.phrase not in unique[same].aliases and order.name != unique[same].name:
            unique[same].aliases.append(order.phrase)
    return unique


def _offset_words(offset: int) -> str:
    ahead = "after" if offset > 0 else "before"
    return f"the frame {plural(abs(offset), 'slice')} {ahead} the one they are meant for"


def _relative(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return Path(path).absolute().relative_to(Path(root).absolute()).as_posix()
        except ValueError:
            pass
    return Path(path).name


def _example(names: list[str], shown: int = 4) -> str:
    return ", ".join(names[:shown]) + (" ..." if len(names) > shown else "")


# ---------------------------------------------------------------------------------------------------------------
# the diagnosis
# ---------------------------------------------------------------------------------------------------------------

class _Pairs:
    """Pixel comparisons of user images with true frames, each made once: which transforms fit best."""

    #: Transforms whose labelled pixels' centroid lands farther than this (pixels) beyond the nearest one's are
    #: not compared pixel by pixel when none fits exactly (they cannot be the best).
    CENTROID_SLACK = 3.0

    def __init__(self, truth: Sequence[np.ndarray], images: Sequence[np.ndarray]) -> None:
        self.truth = truth
        self.images = images
        self._truth_fg: dict[int, tuple[np.ndarray, tuple[float, float] | None]] = {}
        self._image_fg: dict[int, tuple[np.ndarray, tuple[float, float] | None]] = {}
        self._best: dict[tuple[int, int], tuple[int, list[str]]] = {}
        self._found: dict[tuple[int, int], dict[str, int]] = {}

    @staticmethod
    def _with_centroid(labels: np.ndarray) -> tuple[np.ndarray, tuple[float, float] | None]:
        mask = labels != 0
        total = int(np.count_nonzero(mask))
        if not total:
            return mask, None
        rows = mask.sum(axis=1, dtype=np.int64) @ np.arange(mask.shape[0], dtype=np.float64)
        columns = mask.sum(axis=0, dtype=np.int64) @ np.arange(mask.shape[1], dtype=np.float64)
        return mask, (rows / total, columns / total)

    def truth_fg(self, frame: int) -> tuple[np.ndarray, tuple[float, float] | None]:
        if frame not in self._truth_fg:
            self._truth_fg[frame] = self._with_centroid(self.truth[frame])
        return self._truth_fg[frame]

    def image_fg(self, image: int) -> tuple[np.ndarray, tuple[float, float] | None]:
        if image not in self._image_fg:
            self._image_fg[image] = self._with_centroid(self.images[image])
        return self._image_fg[image]

    def best(self, image: int, frame: int) -> tuple[int, list[str]]:
        """The fewest labelled pixels that differ between image and a transform of the frame, and every
        transform that gives that few (in :data:`TRANSFORMS` order); (size, []) when no transform fits its shape.

        Transforms are compared in the order of how near they put the frame's labelled centroid to the image's:
        once one fits exactly, only those that put it at the same place can fit too (a symmetric frame)."""
        key = (image, frame)
        if key in self._best:
            return self._best[key]
        user, user_centre = self.image_fg(image)
        truth, truth_centre = self.truth_fg(frame)
        shaped = [name for name in TRANSFORMS if _shape_after(truth.shape, name) == user.shape]
        if not shaped:
            self._best[key] = (int(user.size) + int(np.count_nonzero(user)), [])
            return self._best[key]
        if user_centre is None or truth_centre is None:
            distance = {name: 0.0 for name in shaped}
        else:
            distance = {name: float(np.hypot(*np.subtract(_centre_after(truth_centre, truth.shape, name), user_centre)))
                        for name in shaped}
        nearest = min(distance.values())
        found: dict[str, int] = {}
        for name in sorted(shaped, key=lambda n: (distance[n], TRANSFORMS.index(n))):
            if found and min(found.values()) == 0 and distance[name] > 1e-6:
                break  # it puts the labels' centroid elsewhere: it cannot fit exactly
            if found and distance[name] > nearest + self.CENTROID_SLACK:
                break
            found[name] = int(np.count_nonzero(transformed(truth, name) != user))
        fewest = min(found.values())
        self._best[key] = (fewest, [name for name in TRANSFORMS if found.get(name) == fewest])
        self._found[key] = found
        return self._best[key]

    def mismatches(self, image: int, frame: int) -> dict[str, int]:
        """Labelled pixels that differ under every transform compared (see :meth:`best`)."""
        self.best(image, frame)
        return self._found.get((image, frame), {})


def _shape_after(shape: tuple[int, ...], name: str) -> tuple[int, ...]:
    return shape[::-1] if name.startswith("transpose") else shape


def _centre_after(centre: tuple[float, float], shape: tuple[int, ...], name: str) -> tuple[float, float]:
    """Where a point (row, column) of an image of ``shape`` lands under the transform ``name``."""
    (r, c), (rows, columns) = centre, shape
    if name.startswith("transpose"):
        r, c, rows, columns = c, r, columns, rows
    if name.endswith("flip_rows"):
        r = rows - 1 - r
    elif name.endswith("flip_columns"):
        c = columns - 1 - c
    elif name.endswith("rotate_180"):
        r, c = rows - 1 - r, columns - 1 - c
    return r, c


def diagnose(
    truth: Sequence[np.ndarray], frames: Sequence[Frame], user: UserImages, segments: Sequence[Label],
    dicom_root: Path | None = None, sets: SegmentSets | None = None,
) -> Diagnosis:
    """Compare the user's images with the true labels of the frames and explain every difference.

    With ``sets`` (the segments overlap), ``truth`` and the user's images hold set codes (:mod:`.sets`): frames,
    transforms and shifts are found on them alike, label values and Dice are judged per segment."""
    count, images, tied = len(truth), user.images, user.tied
    top = 1 + max([int(t.max()) for t in truth if t.size] + [int(i.max()) for i in images if i.size]
                  + [label.value for label in segments] + [0])
    truth_counts = [Counts(t) for t in truth]
    counted_images: list[Counts | None] = [None] * len(images)  # an image equal to its frame has its counts

    # ---------------------------------------------------------------- before any explanation
    verdicts = [ImageVerdict(name, t) for name, t in zip(user.names, tied)]
    before: dict[tuple[int, int], int] = {}
    mismatched = 0
    held = [0] * count
    for index, verdict in enumerate(verdicts):
        image, frame = images[index], verdict.tied
        if frame is not None and image.shape == truth[frame].shape and np.array_equal(image, truth[frame]):
            counted_images[index] = truth_counts[frame]
        else:
            counted_images[index] = Counts(image)
        if frame is None:
            verdict.mismatched = counted_images[index].foreground  # type: ignore[union-attr]
        elif image.shape != truth[frame].shape:
            verdict.mismatched = counted_images[index].foreground + truth_counts[frame].foreground  # type: ignore[union-attr]
        elif counted_images[index] is truth_counts[frame]:
            add_counts(before, {(v, v): n for v, n in truth_counts[frame].as_dict().items()})
        else:
            add_counts(before, pair_counts(truth[frame], image, top, off_diagonal=sets is not None))
            verdict.mismatched = int(np.count_nonzero(image != truth[frame]))
        if frame is not None:
            held[frame] += 1
        mismatched += verdict.mismatched
    image_counts: list[Counts] = counted_images  # type: ignore[assignment]
    truth_total: dict[int, int] = {}
    for counted in truth_counts:
        add_counts(truth_total, counted.as_dict())
    user_total: dict[int, int] = {}
    for counted in image_counts:
        add_counts(user_total, counted.as_dict())
    unheld = [f for f in range(count) if held[f] == 0]
    mismatched += sum(truth_counts[f].foreground for f in unheld)
    optional = user.empty_frames_optional  # a DICOM object need not hold frames without labels
    exact = (not user.faults and mismatched == 0 and all(n == 1 or (n == 0 and optional and not truth_counts[f].foreground)
                                     for f, n in enumerate(held)) and all(v.tied is not None for v in verdicts))
    if exact:
        for verdict in verdicts:
            verdict.frame, verdict.transform = verdict.tied, "identity"
        if sets is not None:
            labels = _segment_table(segments, sets, truth_counts, truth_total, user_total, before, before, {})
        else:
            labels = _label_table(segments, truth_counts, truth_total, user_total, before, before, {})
        return Diagnosis(True, count, len(images), list(user.names), 0, [v.frame for v in verdicts], "identity", 0,
                         [f"exact: each of the {plural(count, 'frame')} has its image, equal to SegAlign's labels "
                          f"pixel for pixel ({plural(len(images), 'image')} tied to frames by {user.rule})"
                          if len(images) == count else
                          f"exact: each of the {plural(len(images), 'frame')} with labels has its image, equal to "
                          f"SegAlign's labels pixel for pixel ({plural(len(images), 'image')} tied to frames by "
                          f"{user.rule}; the {plural(count - len(images), 'frame')} without labels need none)"],
                         labels, verdicts, [], "identity", {})

    # ---------------------------------------------------------------- 1. which frame each image holds
    pairs = _Pairs(truth, images)
    similarity = _similarity(image_counts, truth_counts)
    exact_match = _signature_matches(image_counts, truth_counts)
    offsets = _likely_offsets(tied, exact_match, count)
    orders = frame_orders(frames, tied, offsets, dicom_root)
    chosen = _choose_order(orders, tied, similarity, exact_match, image_counts, pairs)
    frame_of_image = _frames_held(chosen, tied, similarity, exact_match, image_counts, truth_counts, pairs)

    # ---------------------------------------------------------------- 2. in-plane transforms
    fits: list[list[str]] = []
    for index, frame in enumerate(frame_of_image):
        fits.append(pairs.best(index, frame)[1] if frame is not None else [])
    fits = _refine_ties(fits, frame_of_image, truth, images, top)
    in_plane, per_image = _consensus(fits, frame_of_image, truth_counts, pairs)
    moves = [_shift_of(pairs, index, frame, per_image[index]) if frame is not None and per_image[index] else (0, 0)
             for index, frame in enumerate(frame_of_image)]

    def expected_of(index: int) -> np.ndarray:
        frame, transform = frame_of_image[index], per_image[index]
        return shifted(transformed(truth[frame], transform), *moves[index])  # type: ignore[index, arg-type]

    # ---------------------------------------------------------------- 3. label values
    after: dict[tuple[int, int], int] = {}
    for index, frame in enumerate(frame_of_image):
        if frame is not None and per_image[index] is not None:
            add_counts(after, pair_counts(expected_of(index), images[index], top))
    if sets is not None:  # per segment: renamed or missing (the sets are what the images hold)
        mapping = segment_mapping(sets, after)
        lookup = sets.mapped(mapping)
    else:
        mapping = _label_mapping(after)
        lookup = np.arange(top, dtype=np.int64)
        for value, written in mapping.items():
            lookup[value] = written

    # ---------------------------------------------------------------- 4. what is left
    residual_total = 0
    for index, verdict in enumerate(verdicts):
        frame, transform = frame_of_image[index], per_image[index]
        verdict.frame, verdict.transform, verdict.shift = frame, transform, moves[index]
        if frame is None or transform is None:
            verdict.residual = verdict.off_boundary = image_counts[index].foreground
        else:
            expected = expected_of(index)
            if moves[index] != (0, 0):
                verdict.lost = truth_counts[frame].foreground - int(np.count_nonzero(expected))
            if mapping:
                expected = lookup[expected]
            differ = expected != images[index]
            verdict.residual = int(np.count_nonzero(differ))
            if verdict.residual:
                verdict.off_boundary = int(np.count_nonzero(differ & ~near_edges(expected)))
                verdict.only_truth = int(np.count_nonzero(differ & (images[index] == 0)))
                verdict.only_user = int(np.count_nonzero(differ & (expected == 0)))
                lines = user.under_contours[index] if user.under_contours is not None else None
                if lines is not None and transform == "identity" and moves[index] == (0, 0):
                    verdict.under_contours = int(np.count_nonzero(differ & lines))
        residual_total += verdict.residual
    holders = [0] * count
    for frame in frame_of_image:
        if frame is not None:
            holders[frame] += 1
    missing = [f for f in range(count) if holders[f] == 0]
    residual_total += sum(truth_counts[f].foreground for f in missing)

    order_name, order_findings = _describe_order(chosen, orders, verdicts, image_counts, truth_counts, count, user)
    findings = [f"{plural(len(images), 'image')} for {plural(count, 'frame')}, tied to frames by {user.rule}: "
                f"{mismatched} pixels differ from SegAlign's labels"]
    findings += user.faults
    findings += order_findings
    findings += _describe_shift(verdicts, truth_counts, order_name)
    findings += _describe_in_plane(in_plane, per_image, verdicts, user, order_name)
    findings += _describe_mapping(mapping, segments, lookup)
    if optional:
        missing = [f for f in missing if truth_counts[f].foreground]
    findings += _describe_missing(missing, verdicts, image_counts, truth_counts, holders)
    findings += _describe_residual(verdicts, user)
    if residual_total == 0 and not any(v.lost for v in verdicts) and not user.faults:
        findings.append("with that undone, the export is exact but for the labels missing or merged, which cannot "
                        "be undone" if _labels_lost(mapping, segments) else "with that undone, the export is exact")
    if sets is not None:
        labels = _segment_table(segments, sets, truth_counts, truth_total, user_total, before, after, mapping)
    else:
        labels = _label_table(segments, truth_counts, truth_total, user_total, before, after, mapping)
    return Diagnosis(False, count, len(images), list(user.names), mismatched, frame_of_image, in_plane,
                     residual_total, findings, labels, verdicts, missing, order_name, mapping)


def _similarity(image_counts: Sequence[Counts], truth_counts: Sequence[Counts]) -> np.ndarray:
    """(images, frames): how alike their sorted label counts are, 1.0 when equal, -1 when shapes cannot match."""
    width = max([len(c.signature[1]) for c in list(image_counts) + list(truth_counts)] + [1])

    def table(counted: Sequence[Counts]) -> np.ndarray:
        rows = np.zeros((len(counted), width), dtype=np.float64)
        for index, c in enumerate(counted):
            rows[index, :len(c.signature[1])] = c.signature[1]
        return rows

    a, b = table(image_counts), table(truth_counts)
    difference = np.zeros((len(a), len(b)))
    for start in range(0, len(a), 64):  # in blocks: (64, frames, labels) at a time
        difference[start:start + 64] = np.abs(a[start:start + 64, None, :] - b[None, :, :]).sum(axis=2)
    total = a.sum(axis=1)[:, None] + b.sum(axis=1)[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        result = np.where(total > 0, 1.0 - difference / np.where(total > 0, total, 1), 1.0)
    shapes_a = [c.signature[0] for c in image_counts]
    shapes_b = [c.signature[0] for c in truth_counts]
    for i, shape in enumerate(shapes_a):
        for j, other in enumerate(shapes_b):
            if shape != other:
                result[i, j] = -1.0
    return result


def _signature_matches(image_counts: Sequence[Counts], truth_counts: Sequence[Counts]) -> list[set[int]]:
    by_signature: dict[tuple, set[int]] = {}
    for frame, counted in enumerate(truth_counts):
        by_signature.setdefault(counted.signature, set()).add(frame)
    return [by_signature.get(counted.signature, set()) for counted in image_counts]


def _likely_offsets(tied: Sequence[int | None], matches: Sequence[set[int]], count: int) -> list[int]:
    """Offsets (frame held minus frame meant) seen on images with one matching frame, and +-1, +-2."""
    seen: dict[int, int] = {}
    for t, found in zip(tied, matches):
        if t is not None and len(found) == 1:
            offset = next(iter(found)) - t
            seen[offset] = seen.get(offset, 0) + 1
    likely = [offset for offset, _ in sorted(seen.items(), key=lambda item: -item[1])][:6]
    return list(dict.fromkeys(likely + [1, -1, 2, -2]))


def _choose_order(
    orders: list[Order], tied: Sequence[int | None], similarity: np.ndarray, matches: Sequence[set[int]],
    image_counts: Sequence[Counts], pairs: _Pairs,
) -> Order:
    """The order whose predictions the images agree with most: by counts, then pixel by pixel among the best."""
    scored = []
    for rank, order in enumerate(orders):
        predicted = [order.at(index, t) for index, t in enumerate(tied)]
        score = sum(float(similarity[i, f]) for i, f in enumerate(predicted) if f is not None)
        exactly = sum(1 for i, f in enumerate(predicted) if f is not None and f in matches[i])
        scored.append((score, exactly, -rank, order, predicted))
    scored.sort(key=lambda item: (item[0], item[1], item[2]), reverse=True)
    best = scored[0]
    labelled = [i for i, c in enumerate(image_counts) if c.foreground]
    if all(f is not None and f in matches[i] for i, f in enumerate(best[4]) if i in set(labelled)):
        return best[3]  # every labelled image has exactly its predicted frame's counts
    contenders = [item for item in scored if item[0] >= NEAR * best[0]][:VERIFIED_ORDERS]
    fewest: tuple[int, Order] | None = None
    for score, exactly, rank, order, predicted in contenders:  # the likeliest first: the others soon fall behind
        differing = 0
        for i, f in enumerate(predicted):
            differing += pairs.best(i, f)[0] if f is not None else image_counts[i].foreground
            if fewest is not None and differing >= fewest[0]:
                break
        else:
            fewest = (differing, order)
    assert fewest is not None
    return fewest[1]


def _frames_held(
    order: Order, tied: Sequence[int | None], similarity: np.ndarray, matches: Sequence[set[int]],
    image_counts: Sequence[Counts], truth_counts: Sequence[Counts], pairs: _Pairs,
) -> list[int | None]:
    """The frame each image holds: the chosen order's when it has the image's counts or counts about as near as
    any frame's, or when no frame with near counts fits the image clearly better pixel by pixel (under its best
    transform); else the best of those."""
    held: list[int | None] = []
    for index, t in enumerate(tied):
        predicted = order.at(index, t)
        row = similarity[index]
        if not image_counts[index].foreground:  # an image without labels fits every frame without labels
            fits = predicted is not None and not truth_counts[predicted].foreground and row[predicted] >= 0
            held.append(predicted if fits else None)
            continue
        anchor = predicted if predicted is not None else (t if t is not None else 0)
        if matches[index]:  # frames with exactly its counts
            held.append(predicted if predicted in matches[index] else
                        min(sorted(matches[index]), key=lambda f: (pairs.best(index, f)[0], abs(f - anchor), f)))
            continue
        if predicted is not None and row[predicted] > 0.5 and row[predicted] >= row.max() - (1 - NEAR) / 2:
            held.append(predicted)  # its counts are about as near as any frame's (a shift, another rounding)
            continue
        candidates = [int(f) for f in np.argsort(-row, kind="stable")[:3] if row[f] > 0.5]
        if predicted is not None and row[predicted] >= 0 and predicted not in candidates:
            candidates.append(predicted)
        if not candidates:
            held.append(None)
            continue
        differing = {f: pairs.best(index, f)[0] for f in candidates}
        fewest = min(differing.values())
        if predicted in differing and differing[predicted] <= 1.5 * fewest + 2:
            held.append(predicted)
            continue
        best = min(candidates, key=lambda f: (differing[f], abs(f - anchor), f))
        overlapping = differing[best] < image_counts[index].foreground + truth_counts[best].foreground
        held.append(best if overlapping else None)
    return held


def _refine_ties(fits: list[list[str]], held: Sequence[int | None], truth: Sequence[np.ndarray],
                 images: Sequence[np.ndarray], top: int) -> list[list[str]]:
    """Among transforms that fit the labelled pixels equally, those that also fit the labels best (each true
    label's most common user label counted as agreeing): a symmetric outline with different labels inside."""
    refined = []
    for index, names in enumerate(fits):
        frame = held[index]
        if len(names) <= 1 or frame is None or len(names) == len(TRANSFORMS) and not truth[frame].any():
            refined.append(names)
            continue
        agreement = {}
        for name in names:
            counted = pair_counts(transformed(truth[frame], name), images[index], top)
            best: dict[int, int] = {}
            for (v, _), n in counted.items():
                best[v] = max(best.get(v, 0), n)
            agreement[name] = sum(best.values())
        most = max(agreement.values())
        refined.append([name for name in names if agreement[name] == most])
    return refined


def _consensus(fits: Sequence[list[str]], held: Sequence[int | None], truth_counts: Sequence[Counts],
               pairs: _Pairs) -> tuple[str | None, list[str | None]]:
    """The transform every image fits (None when they disagree), and each image's own.

    The common transform is the one under which the fewest labelled pixels differ over all images with labelled
    frames. An image keeps it unless another fits it exactly, or fits with fewer than half as many differing pixels
    (boundary noise, as from contours through pixel centres, can favour a flip of a nearly symmetric frame a
    little, never by half)."""
    totals = {name: 0 for name in TRANSFORMS}
    for index, (names, frame) in enumerate(zip(fits, held)):
        if names and frame is not None and truth_counts[frame].foreground:
            found = pairs.mismatches(index, frame)
            size = pairs.images[index].size
            for name in TRANSFORMS:
                totals[name] += found.get(name, size)
    common = min(TRANSFORMS, key=lambda name: (totals[name], TRANSFORMS.index(name)))
    per_image: list[str | None] = []
    agree = True
    for index, (names, frame) in enumerate(zip(fits, held)):
        if not names:
            per_image.append(None)
            continue
        found = pairs.mismatches(index, frame) if frame is not None else {}
        fewest = min(found.values()) if found else 0
        kept = found.get(common)
        if common in names or (kept is not None and fewest > 0 and kept <= 2 * fewest):
            per_image.append(common)
        else:
            per_image.append(names[0])
            if frame is not None and truth_counts[frame].foreground:
                agree = False
    return (common if agree else None), per_image


def _shift_of(pairs: _Pairs, index: int, frame: int, transform: str) -> tuple[int, int]:
    """How far the image's labels lie from its frame's (after the transform), in whole pixels, when moving them
    back leaves at most a tenth of the labelled pixels that differ (:data:`SHIFT_FIXES`); else (0, 0). Another
    rounding rule moves some boundary pixels by one, never nearly all of them. Tried: the move between their centroids,
    and the moves one pixel around it (labels cut off at the image's edge move the centroid)."""
    user, user_centre = pairs.image_fg(index)
    truth, truth_centre = pairs.truth_fg(frame)
    if user_centre is None or truth_centre is None:
        return (0, 0)
    expected_centre = _centre_after(truth_centre, truth.shape, transform)
    rows, columns = round(user_centre[0] - expected_centre[0]), round(user_centre[1] - expected_centre[1])
    if not rows and not columns:
        return (0, 0)
    base = transformed(truth, transform)
    unmoved = int(np.count_nonzero(base != user))
    if not unmoved:
        return (0, 0)
    tried = {}
    for dr in (0, -1, 1):
        for dc in (0, -1, 1):
            move = (rows + dr, columns + dc)
            if move != (0, 0):
                tried[move] = int(np.count_nonzero(shifted(base, *move) != user))
            if tried.get((rows, columns)) == 0:
                break
        if tried.get((rows, columns)) == 0:
            break
    best = min(tried, key=lambda move: (tried[move], abs(move[0]) + abs(move[1])))
    return best if tried[best] * SHIFT_FIXES <= unmoved else (0, 0)


def _label_mapping(confusion: dict[tuple[int, int], int]) -> dict[int, int]:
    """True label value -> the value the user wrote for it, where they differ: the user value most of its
    pixels hold, when that is more than half of them."""
    rows: dict[int, dict[int, int]] = {}
    for (v, w), n in confusion.items():
        rows.setdefault(v, {})[w] = n
    mapping = {}
    for value, row in rows.items():
        written, most = max(row.items(), key=lambda item: (item[1], item[0] == value))
        if written != value and most * 2 > sum(row.values()):
            mapping[value] = written
    return mapping


# ---------------------------------------------------------------------------------------------------------------
# findings
# ---------------------------------------------------------------------------------------------------------------

def ranges(values: Sequence[int]) -> str:
    """``0-11, 14, 16-19``."""
    values = sorted(values)
    parts: list[str] = []
    start = previous = None
    for value in values + [None]:  # type: ignore[operator]
        if start is not None and value == previous + 1:
            previous = value
            continue
        if start is not None:
            parts.append(f"{start}" if start == previous else f"{start}-{previous}")
        start = previous = value
    return ", ".join(parts)


def _some(items: Sequence[str], limit: int = 6) -> str:
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _describe_order(
    chosen: Order, orders: Sequence[Order], verdicts: Sequence[ImageVerdict], image_counts: Sequence[Counts],
    truth_counts: Sequence[Counts], count: int, user: UserImages,
) -> tuple[str, list[str]]:
    """The order explanation that holds for every image holding a labelled frame, or runs of images."""
    telling = [(i, v) for i, v in enumerate(verdicts) if v.frame is not None and truth_counts[v.frame].foreground]
    if all(v.frame == v.tied for _, v in telling):
        return "identity", []
    stacked = all(v.tied == i for i, v in enumerate(verdicts))  # image i is meant for frame i
    for order in [chosen] + [o for o in orders if o is not chosen]:
        if order.name == "identity" or any(v.tied is None for _, v in telling):
            continue
        if all(order.at(i, v.tied) == v.frame for i, v in telling):
            also = f" (the same as: {'; '.join(order.aliases)})" if order.aliases else ""
            if user.dicom_object:
                return order.name, [
                    f"{user.dicom_object} hold {order.words}{also}, not the images they reference: its writer was "
                    "given the masks and the source images in different orders; give it the source datasets in the "
                    "order of the masks"]
            line = f"the images hold {order.words}{also}: "
            if order.name == "reversed" and stacked and len(verdicts) == count:
                line += f"image i holds frame {count - 1} - i; undo: images = images[::-1]"
            elif order.name == "offset" and stacked:
                k = order.offset
                line += (f"image i holds frame i {'+' if k > 0 else '-'} {abs(k)}; undo: fixed = np.zeros_like(images); "
                         + (f"fixed[{k}:] = images[:len(images) - {k}]" if k > 0 else f"fixed[:len(images) - {-k}] = images[{-k}:]"))
            else:
                line += "undo: for i, f in enumerate(frame_of_image): fixed[f] = images[i]"
            return order.name, [line]
    moved = [v for _, v in telling if v.frame != v.tied]
    meant = "reference" if user.dicom_object else "are meant for"
    undo = ("" if user.dicom_object else
            "; undo: for i, f in enumerate(frame_of_image): fixed[f] = images[i]")
    if len(moved) <= 8:
        return "mixed", [f"{plural(len(moved), 'image')} {'holds' if len(moved) == 1 else 'hold'} another frame than "
                         f"the one {'it' if len(moved) == 1 else 'they'} {meant}: " + "; ".join(
                             f"{v.name} holds frame {v.frame}, not {v.tied if v.tied is not None else 'any'}"
                             for v in moved) + undo]
    runs = _runs([(i, v) for i, v in enumerate(verdicts)])
    return "mixed", ["the images follow no one frame order: " + "; ".join(runs) + undo]


def _runs(items: Sequence[tuple[int, ImageVerdict]], limit: int = 8) -> list[str]:
    """``images 0-4 hold frames 0-4``, ``images 5-11 hold frames 12-6``: runs of a constant step."""
    runs: list[list[tuple[int, int | None]]] = []
    for index, verdict in items:
        frame = verdict.frame
        if runs and frame is not None and runs[-1][-1][1] is not None:
            last = runs[-1]
            step = frame - last[-1][1]
            if step in (1, -1) and (len(last) == 1 or last[-1][1] - last[-2][1] == step) and last[-1][0] == index - 1:
                last.append((index, frame))
                continue
        runs.append([(index, frame)])
    described = []
    for run in runs[:limit]:
        first, last = run[0], run[-1]
        images = f"image {first[0]}" if len(run) == 1 else f"images {first[0]}-{last[0]}"
        if first[1] is None:
            described.append(f"{images} hold no frame")
        else:
            frames = f"frame {first[1]}" if len(run) == 1 else f"frames {first[1]}-{last[1]}"
            described.append(f"{images} hold {frames}")
    if len(runs) > limit:
        described.append(f"and {len(runs) - limit} more runs")
    return described


def _describe_shift(verdicts: Sequence[ImageVerdict], truth_counts: Sequence[Counts], order_name: str) -> list[str]:
    """One line when every image with labels is moved alike, else the images that are, grouped by move."""
    telling = [(i, v) for i, v in enumerate(verdicts) if v.frame is not None and truth_counts[v.frame].foreground]
    moves = {v.shift for _, v in telling}
    if moves == {(0, 0)} or not moves:
        return []

    def words(move: tuple[int, int]) -> str:
        rows, columns = move
        parts = []
        if rows:
            parts.append(f"{plural(abs(rows), 'pixel')} {'down' if rows > 0 else 'up'}")
        if columns:
            parts.append(f"{plural(abs(columns), 'pixel')} {'right' if columns > 0 else 'left'}")
        return " and ".join(parts)

    def undo(move: tuple[int, int]) -> str:
        return f"image = np.roll(image, ({-move[0]}, {-move[1]}), axis=(0, 1))"

    lost = sum(v.lost for v in verdicts)
    gone = f"; {lost} labelled pixels fell off the images' edges and cannot come back" if lost else ""
    if len(moves) == 1:
        move = next(iter(moves))
        return [f"every image's labels are moved {words(move)} (a shift of whole pixels; before any other undo "
                f"below){gone}: undo: {undo(move)}"]
    by_frame = order_name == "identity"
    groups: dict[tuple[int, int], list[int]] = {}
    for index, verdict in telling:
        if verdict.shift != (0, 0):
            groups.setdefault(verdict.shift, []).append(verdict.frame if by_frame else index)  # type: ignore[arg-type]
    what = "frames" if by_frame else "images"
    return [f"the labels of {what} {ranges(members)} are moved {words(move)}; undo: {undo(move)}"
            for move, members in groups.items()] + ([gone[2:]] if gone else [])


def _describe_in_plane(in_plane: str | None, per_image: Sequence[str | None], verdicts: Sequence[ImageVerdict],
                       user: UserImages, order_name: str) -> list[str]:
    frames_last = user.layout == "frames last"
    if in_plane is not None:
        if in_plane == "identity":
            return []
        if user.kind == "array":
            stack = UNDO_STACK[in_plane]
            code = (f"images = np.moveaxis(array, 2, 0); images = {stack}" if frames_last
                    else f"images = {stack.replace('images', 'array', 1)}")
            if frames_last and in_plane == "transpose":
                code = "images = np.transpose(array, (2, 1, 0))"
            return [f"every image is its frame {TRANSFORM_WORDS[in_plane]} ({in_plane}); undo: {code}"]
        if user.dicom_object:
            given = UNDO_IMAGE[in_plane].split(" = ", 1)[1].replace("image", "mask")
            what = "frame of the SEG" if user.kind == "DICOM SEG" else "frame's contours"
            return [f"every {what} is its frame {TRANSFORM_WORDS[in_plane]} ({in_plane}): its writer was "
                    f"given masks in another layout than pixel_array's rows x columns; give it {given} of each mask"]
        return [f"every image is its frame {TRANSFORM_WORDS[in_plane]} ({in_plane}); undo: {UNDO_IMAGE[in_plane]}"]
    groups: list[tuple[str, list[int]]] = []
    by_frame = order_name == "identity"
    for verdict in verdicts:
        if verdict.transform is None:
            continue
        key = verdict.transform
        where = verdict.frame if by_frame else verdicts.index(verdict)
        if groups and groups[-1][0] == key:
            groups[-1][1].append(where)  # type: ignore[arg-type]
        else:
            groups.append((key, [where]))  # type: ignore[list-item]
    what = "frames" if by_frame else "images"
    described = [f"{ranges(members)} {name if name != 'identity' else 'as they are'}" for name, members in groups]
    codes = sorted({name for name, _ in groups if name != "identity"}, key=TRANSFORMS.index)
    undo = ("; its writer was given those masks in another layout than pixel_array's rows x columns"
            if user.dicom_object else
            "; undo per image: " + "; ".join(f"{name}: {UNDO_IMAGE[name]}" for name in codes))
    return [f"the in-plane transform differs between {what}: {what} " + ", ".join(described[:12])
            + (" ..." if len(described) > 12 else "") + undo]


def _describe_mapping(mapping: dict[int, int], segments: Sequence[Label], lookup: np.ndarray) -> list[str]:
    if not mapping:
        return []
    names = {label.value: label.name for label in segments}

    def called(value: int) -> str:
        return f"{value} ({names[value]})" if value in names else f"{value}"

    findings = []
    if 0 in mapping:
        findings.append(f"the background (0) is written as {mapping[0]}")
    dropped = sorted(v for v, w in mapping.items() if w == 0 and v != 0)
    if dropped:
        findings.append(f"label{'s' if len(dropped) > 1 else ''} {_some([called(v) for v in dropped])} "
                        f"{'are' if len(dropped) > 1 else 'is'} missing from the export (written as background)")
    by_written: dict[int, list[int]] = {}
    for value in sorted(mapping):
        if value != 0 and mapping[value] != 0:
            by_written.setdefault(mapping[value], []).append(value)
    # values the user wrote for a true label of their own (kept) merge with it too
    merged = {w: vs + ([w] if w in names and w not in mapping else []) for w, vs in by_written.items()}
    renamed = {vs[0]: w for w, vs in merged.items() if len(vs) == 1}
    for written, values in merged.items():
        if len(values) > 1:
            findings.append(f"labels {_some([called(v) for v in sorted(values)])} are merged into value {written}: "
                            "this cannot be undone from the export")
    if renamed:
        shifts = {w - v for v, w in renamed.items()}
        shifted = (f" (every value {abs(next(iter(shifts)))} {'higher' if next(iter(shifts)) > 0 else 'lower'}: a "
                   "label table shifted by one)" if len(shifts) == 1 and len(renamed) > 1 and abs(next(iter(shifts))) == 1
                   else f" (every value {'+' if next(iter(shifts)) > 0 else ''}{next(iter(shifts))})"
                   if len(shifts) == 1 and len(renamed) > 1 else "")
        pairs = [f"{called(v)} as {w}" for v, w in sorted(renamed.items())]
        size = max(renamed.values()) + 1
        undo = (f"lookup = np.arange({max(size, max(renamed) + 1)}); lookup[[{', '.join(str(w) for w in renamed.values())}]] "
                f"= [{', '.join(str(v) for v in renamed)}]; fixed = lookup[image]")
        findings.append(f"label values are renamed: {_some(pairs, 8)}{shifted}; undo: {undo}")
    return findings


def _labels_lost(mapping: dict[int, int], segments: Sequence[Label]) -> bool:
    """Whether the label mapping drops a label (written as background) or merges two into one value."""
    values = {label.value for label in segments}
    targets: dict[int, list[int]] = {}
    for value, written in mapping.items():
        if value != 0:
            if written == 0:
                return True
            targets.setdefault(written, []).append(value)
    return any(len(group) > 1 or (written in values and written not in mapping) for written, group in targets.items())


def _describe_missing(missing: Sequence[int], verdicts: Sequence[ImageVerdict], image_counts: Sequence[Counts],
                      truth_counts: Sequence[Counts], holders: Sequence[int]) -> list[str]:
    findings = []
    labelled = [f for f in missing if truth_counts[f].foreground]
    if missing:
        findings.append(f"{plural(len(missing), 'frame')} {'is' if len(missing) == 1 else 'are'} in no image: "
                        f"{ranges(missing)}" + (f" ({len(labelled)} of them with labels)" if labelled else
                                                " (none of them has labels)"))
    extra = [v.name for i, v in enumerate(verdicts) if v.frame is None and image_counts[i].foreground]
    if extra:
        findings.append(f"{plural(len(extra), 'image')} with labels {'holds' if len(extra) == 1 else 'hold'} no frame "
                        f"of the series: {_some(extra)}")
    blank = [v.name for i, v in enumerate(verdicts) if v.frame is None and not image_counts[i].foreground]
    if blank:
        findings.append(f"{plural(len(blank), 'image')} without labels {'stands' if len(blank) == 1 else 'stand'} for "
                        f"no frame: {_some(blank)}")
    twice = [f for f, n in enumerate(holders) if n > 1]
    if twice:
        findings.append(f"{plural(len(twice), 'frame')} {'is' if len(twice) == 1 else 'are'} in more than one image: "
                        f"{ranges(twice)}")
    return findings


def _describe_residual(verdicts: Sequence[ImageVerdict], user: UserImages) -> list[str]:
    """What still differs: on boundaries only (smaller, larger, or both), or not."""
    differing = [v for v in verdicts if v.frame is not None and v.residual]
    if not differing:
        return []
    total = sum(v.residual for v in differing)
    off = sum(v.off_boundary for v in differing)
    where = ranges([v.frame for v in differing])  # type: ignore[misc]
    head = f"{total} pixels on {plural(len(differing), 'frame')} ({where}) still differ"
    if off:
        return [f"{head}, {off} of them away from label boundaries"]
    only_truth = sum(v.only_truth for v in differing)
    only_user = sum(v.only_user for v in differing)
    under = sum(v.under_contours for v in differing)
    if only_truth == total and under == total:
        return [f"{head}, all of them labelled by SegAlign only and each under a contour (its centre on a contour "
                "line): the contours run through the centres of the structures' boundary pixels (as OpenCV's "
                "findContours traces a mask, for rt-utils), not around them, so what they enclose is every structure "
                "shrunk by half a pixel all around, and filled at the pixel centres these boundary pixels fall "
                "outside; counted inside, the contours give SegAlign's labels"]
    if only_truth == total:
        cause = ("contours drawn through the centres of the boundary pixels (as OpenCV's findContours draws them for "
                 "rt-utils) shrink every structure by half a pixel" if user.kind == "RTSTRUCT" else
                 "eroded by one pixel, or another rounding or interpolation rule")
        return [f"{head}, all of them labelled by SegAlign only and on label boundaries: the structures are smaller "
                f"by up to one pixel along their edges ({cause})"]
    if only_user == total:
        return [f"{head}, all of them labelled in the export only and on label boundaries: the structures are larger "
                "by up to one pixel along their edges (dilated, or another rounding or interpolation rule)"]
    return [f"{head}, all of them on label boundaries (within one pixel of a change of the true label): another "
            "rounding or interpolation rule (np.round rounds halves to even; SegAlign takes the nearest voxel, ties "
            "rounded up)"]


def _dice(both: int, first: int, second: int) -> float | None:
    if first + second == 0:
        return None
    return round(2.0 * both / (first + second), 6)


def _label_table(
    segments: Sequence[Label], truth_counts: Sequence[Counts], truth_total: dict[int, int],
    user_total: dict[int, int], before: dict[tuple[int, int], int], after: dict[tuple[int, int], int],
    mapping: dict[int, int],
) -> list[dict[str, object]]:
    """value, name, frames (how many true frames hold it), dice_before, dice_after, per segment."""
    written = {v: mapping.get(v, v) for v in set(truth_total) | {label.value for label in segments}}
    holding: dict[int, int] = {}
    for counted in truth_counts:
        for value in counted.values.tolist():
            holding[value] = holding.get(value, 0) + 1
    result = []
    for label in segments:
        value = label.value
        frames = holding.get(value, 0)
        dice_before = _dice(before.get((value, value), 0), truth_total.get(value, 0), user_total.get(value, 0))
        target = written[value]
        if target == 0:
            dice_after = 0.0 if truth_total.get(value, 0) else None
        else:
            group = [v for v, w in written.items() if w == target and v != 0]
            both = sum(after.get((v, target), 0) for v in group)
            dice_after = _dice(both, sum(truth_total.get(v, 0) for v in group), user_total.get(target, 0))
        result.append({"value": value, "name": label.name, "frames": frames,
                       "dice_before": dice_before, "dice_after": dice_after})
    return result


def _segment_table(
    segments: Sequence[Label], sets: SegmentSets, truth_counts: Sequence[Counts], truth_total: dict[int, int],
    user_total: dict[int, int], before: dict[tuple[int, int], int], after: dict[tuple[int, int], int],
    mapping: dict[int, int],
) -> list[dict[str, object]]:
    """The label table of overlapping segments: Dice of each segment's own pixels, before and after the
    explanation (then with the user's value for it, where renamed)."""
    holding: dict[int, int] = {}
    for counted in truth_counts:
        present: set[int] = set()
        for code in counted.values.tolist():
            present |= sets.members(code)
        for value in present:
            holding[value] = holding.get(value, 0) + 1
    dice_before = segment_dice(sets, before, truth_total, user_total)
    dice_after = segment_dice(sets, after, truth_total, user_total, mapping)
    return [{"value": label.value, "name": label.name, "frames": holding.get(label.value, 0),
             "dice_before": dice_before.get(label.value),
             "dice_after": (0.0 if mapping.get(label.value) == 0 and holding.get(label.value) else
                            dice_after.get(label.value))}
            for label in segments]


__all__ = ["TRANSFORMS", "UNDO_IMAGE", "UNDO_STACK", "Diagnosis", "ImageVerdict", "diagnose", "ranges", "shifted",
           "transformed"]
