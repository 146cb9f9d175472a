"""What an export tells the user and records once every frame is sampled.

* labels.json's entries (:func:`label_entries`): each label of the table with its voxel and frame counts;
* the warnings: labels that fall on no frame, labels on the frames that share a colour (:func:`shared_colours`), and
  a segmentation that covers only part of the series (:func:`coverage`, :func:`partial_coverage_warning`);
* export.json's content (:func:`provenance`): inputs, options, the affine used, coverage, warnings;
* the error when segmentation and series do not overlap (:func:`no_overlap_error`), with both extents in RAS.

:func:`summarise` puts them together into the :class:`~segalign.writers.base.ExportSummary` the writers' ``end``
gets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from ..dicom import Series
from ..errors import NoOverlapError, WarningText
from ..geometry import LPS_TO_RAS, pixel_to_lps
from ..options import ExportOptions
from ..segmentation import Segmentation, builtin_table
from ..version import __version__
from ..writers.base import ExportSummary
from .locks import WRITTEN_BY


def summarise(
    series: Series,
    segmentation: Segmentation,
    root: Path,
    options: ExportOptions,
    frames_with_label: dict[int, int],
    frames_without_label: int,
    outside: list[bool],
    warnings: list[str],
    extra_provenance: Mapping[str, object] | None = None,
) -> ExportSummary:
    """What the export found (``frames_with_label``: label value -> frames it is on; ``outside``: per frame, no
    pixel inside the segmentation's extent), for the writers' ``end``. The warnings it finds are appended to
    ``warnings``, which is the very list the provenance holds: warnings added to it later still reach export.json."""
    outside_labels = labels_on_no_frame(segmentation, frames_with_label)
    if outside_labels:
        warnings.append(outside_labels)
    shared = shared_colours(segmentation, sorted(frames_with_label))
    if shared:
        warnings.append(shared)
    covered = coverage(series, segmentation, outside, frames_without_label)
    if covered["frames_outside_extent"]:
        warnings.append(partial_coverage_warning(covered))
    record = provenance(series, segmentation, root, options, warnings)
    record["coverage"] = covered
    record.update(extra_provenance or {})
    return ExportSummary(frames_with_label, label_entries(segmentation, frames_with_label), record)


def labels_on_no_frame(segmentation: Segmentation, frames_with_label: dict[int, int]) -> str | None:
    """A warning naming the labels of the segmentation that are on no frame (outside the series' field of view)."""
    outside = [value for value in segmentation.values if value not in frames_with_label]
    if not outside:
        return None
    described = ", ".join(f"{v} {segmentation.label_table[v].name}" for v in outside[:10])
    more = f" and {len(outside) - 10} more" if len(outside) > 10 else ""
    return (
        f"{len(outside)} labels of the segmentation fall on no frame (outside the series' field of view): "
        f"{described}{more}"
    )


#: The most groups of labels sharing a colour, and labels of a group, the colour warning lists.
SHARED_GROUPS, SHARED_LABELS = 12, 8


def shared_colours(segmentation: Segmentation, present: list[int]) -> WarningText | None:
    """A warning naming the labels on the frames whose table gives them one colour, which overlays and viewers
    cannot tell apart: a short first line saying what to do, then a line per colour with its labels (value and
    name). TotalSegmentator's own table cycles through 12 colours; when the labels are TotalSegmentator's (named
    as in the built-in table, whose colours tell them apart), the fix is that table: ``--labels totalsegmentator``
    (``label_table="totalsegmentator"``)."""
    table = segmentation.label_table
    by_colour: dict[tuple[int, ...], list[int]] = {}
    for value in present:
        by_colour.setdefault(tuple(table[value].color), []).append(value)
    groups = [values for values in by_colour.values() if len(values) > 1]
    if not groups:
        return None
    builtin = builtin_table("totalsegmentator")
    totalsegmentator = all(value in builtin and builtin[value].name == table[value].name for value in present) \
        and len({tuple(builtin[value].color) for value in present}) == len(present)
    shared = sum(len(values) for values in groups)
    if totalsegmentator:
        fixes = ('label_table="totalsegmentator" gives each its own', "--labels totalsegmentator gives each its own")
    else:
        fixes = ("give them their own with label_table=TABLE", "give them their own with --labels TABLE")
    lines = [
        f"rgb{tuple(table[values[0]].color)}: " + ", ".join(f"{v} {table[v].name}" for v in values[:SHARED_LABELS])
        + (f" and {len(values) - SHARED_LABELS} more" if len(values) > SHARED_LABELS else "")
        for values in groups[:SHARED_GROUPS]
    ]
    if len(groups) > SHARED_GROUPS:
        lines.append(f"... and {len(groups) - SHARED_GROUPS} more colours")
    first = f"{shared} labels on the frames share a colour; {{fix}}:"
    return WarningText("\n".join([first.format(fix=fixes[0]), *lines]),
                       cli_message="\n".join([first.format(fix=fixes[1]), *lines]))


def coverage(series: Series, segmentation: Segmentation, outside: list[bool], without_label: int) -> dict:
    """How much of the series the segmentation covers: frames outside its extent, frames without a label, and
    both extents (RAS mm, as the segmentation's affine gives them)."""
    return {
        "frames": len(outside),
        "frames_outside_extent": sum(outside),
        "frames_without_label": without_label,
        "outside_extent_indices": _index_ranges([index for index, out in enumerate(outside) if out]),
        "segmentation_extent": _ras_box(segmentation),
        "series_extent": _series_box(series),
    }


def partial_coverage_warning(coverage: dict) -> str:
    """The warning for a :func:`coverage` with frames outside the segmentation's extent."""
    return (
        f"the segmentation covers only part of the series: {coverage['frames_outside_extent']} of "
        f"{coverage['frames']} frames lie outside its extent (export indices {coverage['outside_extent_indices']}) "
        f"and {coverage['frames_without_label']} frames have no label; the segmentation spans "
        f"{coverage['segmentation_extent']}, the series {coverage['series_extent']} (cropped, or another region?)"
    )


def _index_ranges(indices: list[int], limit: int = 6) -> str:
    """``0-19, 100-119``: runs of consecutive indices, at most ``limit`` of them."""
    runs: list[list[int]] = []
    for index in indices:
        if runs and index == runs[-1][1] + 1:
            runs[-1][1] = index
        else:
            runs.append([index, index])
    text = ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in runs[:limit])
    return text + (f" and {len(runs) - limit} more runs" if len(runs) > limit else "")


def label_entries(segmentation: Segmentation, frames_with_label: dict[int, int]) -> list[dict]:
    """labels.json's entries: every label of the table (value, name, colour, codes), its voxels and its frames;
    where segments overlap, also the layer (1, 2...) that holds each: its label images are in ``labels/`` for
    layer 1 and ``layers/<n>/`` for the others."""
    layered = segmentation.overlapping
    return [
        {
            **label.as_dict(),
            "voxels": segmentation.voxel_counts.get(value, 0),
            "frames": frames_with_label.get(value, 0),
            **({"layer": segmentation.layer_of(value) + 1} if layered else {}),
        }
        for value, label in sorted(segmentation.label_table.items())
    ]


def provenance(
    series: Series, segmentation: Segmentation, root: Path, options: ExportOptions, warnings: list[str]
) -> dict:
    """export.json's content before coverage and outputs: what was exported from what, how, and the warnings."""
    return {
        "written_by": WRITTEN_BY,  # what marks the folder as an export that overwrite may replace
        "segalign_version": __version__,
        "dicom_dir": str(root),
        "series_instance_uid": series.uid,
        "series_description": series.description,
        "modality": series.modality,
        "segmentation": str(segmentation.source.absolute()) if segmentation.source else segmentation.description,
        **({"also_from": [str(path.absolute()) for path in segmentation.also_from]} if segmentation.also_from else {}),
        "segmentation_shape": list(segmentation.labels.shape),
        "affine_source": segmentation.affine_source,
        "affine_ras": np.round(segmentation.affine, 6).tolist(),
        "order": options.order,
        "masks": options.masks,
        "options": options.as_dict(),
        "warnings": warnings,
    }


def no_overlap_error(series: Series, segmentation: Segmentation, boxes_meet: bool = False) -> NoOverlapError:
    """The error for a segmentation that covers no pixel of the series, with both extents: ``boxes_meet`` when
    their extents meet but no frame crosses the volume."""
    what = (
        "no pixel of any frame falls inside it (their extents meet, but no frame crosses the volume)"
        if boxes_meet
        else "they do not overlap at all"
    )
    return NoOverlapError(
        f"segmentation {segmentation.name} does not cover series {series.uid or '(no SeriesInstanceUID)'}: "
        f"{what}; segmentation spans {_ras_box(segmentation)}, the series {_series_box(series)} "
        "(wrong series, or an LPS affine written as RAS?)"
    )


def _ras_box(segmentation: Segmentation) -> str:
    boxes = []
    for layer in segmentation.layers:
        shape = np.array(layer.labels.shape) - 1
        corners = np.array([[i, j, k, 1] for i in (0, shape[0]) for j in (0, shape[1]) for k in (0, shape[2])], float)
        boxes.append((corners @ layer.affine.T)[:, :3])
    return _box_text(np.concatenate(boxes))


def _series_box(series: Series) -> str:
    points = [
        LPS_TO_RAS @ pixel_to_lps(plane.position, plane.orientation, plane.pixel_spacing, r, c)
        for frame in series.frames
        for plane in frame.planes()
        for r in (0, plane.rows - 1)
        for c in (0, plane.columns - 1)
    ]
    return _box_text(np.array(points))


def _box_text(ras: np.ndarray) -> str:
    low, high = ras.min(axis=0), ras.max(axis=0)
    return "RAS " + " ".join(f"{axis}[{a:.0f},{b:.0f}]" for axis, a, b in zip("RAS", low, high))
