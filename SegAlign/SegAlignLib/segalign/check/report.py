"""What a check tells: :class:`CheckResult` (the JSON object, the text the command line prints) and the report
folder (``segalign check -o REPORT_DIR``): ``report.json``, one side-by-side picture per frame that differs
(SegAlign's labels, the user's image, and the difference, each drawn over the frame's own pixels) in ``frames/``,
and ``index.html`` listing them.

A report folder is only ever written where nothing is, or over an earlier report (it holds
:data:`REPORT_MARKER` and nothing but :data:`REPORT_ENTRIES`); never into the DICOM folder or the export. It is
written into a hidden folder beside it and renamed into place, so an interrupted check leaves no half report.
"""

from __future__ import annotations

import html
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import files
from ..dicom import Frame
from ..errors import SegAlignError, short_path
from ..segmentation import Label
from ..version import __version__
from .diagnosis import Diagnosis
from .exports import UserImages
from .sets import SegmentSets

#: The file that says a folder is a report of ``segalign check`` (which it may replace).
REPORT_MARKER = ".segalign-check"
#: Everything a report folder holds.
REPORT_ENTRIES = {REPORT_MARKER, "report.json", "index.html", "frames"}
#: Pictures are drawn at least this large (pixels, longest side of one panel): small frames are enlarged.
PANEL_SIZE = 256
#: Colours of the difference panel: labelled only in the truth, only in the user's image, labelled in both
#: with other values.
ONLY_TRUTH, ONLY_USER, OTHER_LABEL = (230, 40, 40), (40, 200, 60), (250, 210, 20)


@dataclass
class CheckResult:
    """The outcome of :func:`~segalign.check.check_export`: the diagnosis (``exact``, ``findings``,
    ``frame_of_image``...), and what it was made of (the true labels, the user's images, the frames)."""

    diagnosis: Diagnosis
    truth: Sequence[np.ndarray]  #: the true label image of every frame, in acquisition order
    user: UserImages  #: the user's images as read, in the order of ``image_names``
    frames: Sequence[Frame]  #: the frames, in acquisition order
    segments: Sequence[Label]
    dicom: Path | None = None  #: the DICOM folder (or file) checked against
    export: Path | None = None  #: the export checked
    #: When the segments overlap: the set codes ``truth`` and the user's images hold (see :mod:`.sets`).
    sets: SegmentSets | None = None

    @property
    def exact(self) -> bool:
        return self.diagnosis.exact

    @property
    def findings(self) -> list[str]:
        return self.diagnosis.findings

    @property
    def frame_of_image(self) -> list[int | None]:
        return self.diagnosis.frame_of_image

    @property
    def in_plane(self) -> str | None:
        return self.diagnosis.in_plane

    def as_dict(self) -> dict[str, object]:
        """The JSON object ``segalign check --json`` prints (and report.json holds)."""
        return self.diagnosis.as_dict()

    def to_text(self) -> str:
        """What ``segalign check`` prints: the verdict, then every finding."""
        d = self.diagnosis
        if d.exact:
            head = f"exact: {d.images} images match the {d.frames} frames pixel for pixel"
        else:
            head = (f"not exact: {d.mismatched_pixels} pixels differ ({d.images} images, {d.frames} frames); "
                    f"{d.residual_mismatched_pixels} still differ once the findings are undone")
        return "\n".join([head] + [f"  - {finding}" for finding in d.findings])

    def differing_frames(self) -> list[tuple[int, int | None]]:
        """(frame, the image meant for it or None) for every frame its image does not equal, and every frame with
        labels that has no image, in frame order."""
        d = self.diagnosis
        meant: dict[int, int] = {}
        for index, verdict in enumerate(d.verdicts):
            if verdict.tied is not None and verdict.tied not in meant:
                meant[verdict.tied] = index
        result = []
        for frame in range(d.frames):
            image = meant.get(frame)
            if image is None:
                if self.truth[frame].any():  # a frame without labels needs no image in a DICOM object
                    result.append((frame, None))
            elif d.verdicts[image].mismatched:
                result.append((frame, image))
        return result

    # ------------------------------------------------------------------------------------------ the report folder
    def write_report(self, folder: str | os.PathLike[str]) -> Path:
        """Write the report folder (see the module's description); returns its path."""
        folder = Path(folder)
        refuse_report_folder(folder, [p for p in (self.dicom, self.export) if p is not None])
        partial = folder.parent / f".{folder.name}.partial-{os.getpid()}"
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
        try:
            (partial / REPORT_MARKER).write_text(f"written by segalign check {__version__}\n", encoding="utf-8")
            files.write_json(partial / "report.json", self.as_dict())
            pictures = self._write_pictures(partial / "frames")
            (partial / "index.html").write_text(self._page(pictures), encoding="utf-8")
            if folder.exists():
                shutil.rmtree(folder)
            partial.rename(folder)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return folder

    def _write_pictures(self, folder: Path) -> list[tuple[int, int | None, str]]:
        from ..writers.images import png
        from ..writers.images.render import color_lookup

        folder.mkdir()
        shown = self.sets.shown if self.sets is not None else (lambda labels: labels)
        largest = max([int(shown(t).max()) for t in self.truth if t.size]
                      + [int(shown(i).max()) for i in self.user.images if i.size] + [1])
        lookup = color_lookup({label.value: label for label in self.segments}, largest)
        written = []
        for frame, image in self.differing_frames():
            name = f"frame_{frame:04d}.png"
            user = self.user.images[image] if image is not None else None
            png.write_png(folder / name, side_by_side(self.truth[frame], user, _gray(self.frames[frame]), lookup,
                                                      shown))
            written.append((frame, image, f"frames/{name}"))
        return written

    def _page(self, pictures: list[tuple[int, int | None, str]]) -> str:
        d = self.diagnosis
        e = _escape
        verdict = "exact" if d.exact else f"not exact: {d.mismatched_pixels} pixels differ"
        rows = []
        for frame, image, path in pictures:
            facts = self.frames[frame]
            if image is None:
                about = "no image is meant for this frame"
            else:
                v = d.verdicts[image]
                about = (f"image {e(v.name)}: {v.mismatched} pixels differ; it holds "
                         + (f"frame {v.frame}" if v.frame is not None else "no frame")
                         + (f", {e(v.transform)}" if v.transform else "")
                         + f"; {v.residual} pixels differ once the findings are undone")
            rows.append(
                f"<tr><td>frame {frame}<br>InstanceNumber {e(facts.instance_number)}<br>{e(facts.source_file.name)}"
                f"</td><td>{about}</td><td><img src='{e(path)}' alt='frame {frame}'></td></tr>")
        findings = "".join(f"<li>{e(finding)}</li>" for finding in d.findings)
        return (
            "<!DOCTYPE html><html><head><meta charset='utf-8'><title>segalign check</title>"
            "<style>body{font-family:sans-serif} td{vertical-align:top;padding:4px} img{image-rendering:pixelated}"
            "</style></head><body>"
            f"<h1>segalign check: {e(verdict)}</h1>"
            f"<p>DICOM {e(self.dicom or '')}<br>export {e(self.export or '')}</p>"
            f"<ul>{findings}</ul>"
            "<p>Each picture: SegAlign's labels | the image meant for the frame | the difference (red: labelled only "
            "by SegAlign, green: only in the image, yellow: another label), over the frame's pixels.</p>"
            f"<table>{''.join(rows)}</table>"
            + ("" if rows else "<p>No frame differs.</p>")
            + "</body></html>\n")


def _escape(value: object) -> str:
    return html.escape(files.utf8_text(str(value)), quote=True)


def _gray(frame: Frame) -> np.ndarray | None:
    """The frame's pixels for display (8 bit), or None when they cannot be decoded."""
    from ..dicom import PixelReader

    try:
        return PixelReader().read(frame).display()
    except (SegAlignError, OSError, ValueError):
        return None


def side_by_side(truth: np.ndarray, user: np.ndarray | None, gray: np.ndarray | None,
                 lookup: np.ndarray, shown=None) -> np.ndarray:
    """RGB picture: the true labels, the user's image and their difference, each over the frame's pixels (black
    where they cannot be shown), enlarged for small frames, with gaps between the panels. ``shown`` turns set
    codes (overlapping segments) into the label drawn for each pixel; the difference compares the codes."""
    from ..writers.images.render import overlay

    shown = shown or (lambda labels: labels)
    base = gray if gray is not None and gray.shape == truth.shape else np.zeros(truth.shape, dtype=np.uint8)
    panels = [overlay(base, shown(truth), lookup, 0.5)]
    if user is None:
        panels.append(np.zeros(truth.shape + (3,), dtype=np.uint8))
        difference = _dimmed(base)
        difference[truth != 0] = ONLY_TRUTH
    else:
        labels = np.minimum(shown(user), len(lookup) - 1)
        under = base if user.shape == truth.shape else np.zeros(user.shape, dtype=np.uint8)
        panels.append(overlay(under, labels, lookup, 0.5))
        difference = _dimmed(base)
        if user.shape == truth.shape:
            difference[(truth != 0) & (user == 0)] = ONLY_TRUTH
            difference[(truth == 0) & (user != 0)] = ONLY_USER
            difference[(truth != 0) & (user != 0) & (truth != user)] = OTHER_LABEL
        else:  # another shape (transposed): nothing lines up
            difference[truth != 0] = ONLY_TRUTH
    panels.append(difference)
    scale = max(1, PANEL_SIZE // max(max(p.shape[:2]) for p in panels))
    panels = [np.repeat(np.repeat(p, scale, axis=0), scale, axis=1) for p in panels]
    height = max(p.shape[0] for p in panels)
    gap = np.full((height, 8, 3), 255, dtype=np.uint8)
    padded = []
    for panel in panels:
        if panel.shape[0] < height:
            panel = np.concatenate([panel, np.full((height - panel.shape[0],) + panel.shape[1:], 255, np.uint8)])
        padded += [panel, gap]
    return np.ascontiguousarray(np.concatenate(padded[:-1], axis=1))


def _dimmed(gray: np.ndarray) -> np.ndarray:
    return np.repeat((gray // 2)[:, :, None], 3, axis=2)


def refuse_report_folder(folder: Path, inputs: Sequence[Path]) -> None:
    """Raise :class:`SegAlignError` unless ``folder`` may hold a report: it is not inside an input, and it is
    missing, empty, or an earlier report."""
    target = folder.absolute().resolve()
    for given in inputs:
        source = Path(given).absolute().resolve()
        if target == source or source in target.parents:
            raise SegAlignError(f"the report folder {short_path(folder)} is inside the input {short_path(given)}: "
                                "a check never writes into the DICOM folder or the export",
                                cli_message=f"REPORT_DIR {short_path(folder)} is inside the input {short_path(given)}: "
                                "a check never writes into the DICOM folder or the export")
        if target in source.parents:
            raise SegAlignError(f"the report folder {short_path(folder)} holds the input {short_path(given)}")
    if folder.exists():
        if not folder.is_dir():
            raise SegAlignError(f"the report folder {short_path(folder)} is a file")
        entries = {entry.name for entry in folder.iterdir()}
        if entries and not (REPORT_MARKER in entries and entries <= REPORT_ENTRIES):
            raise SegAlignError(f"the report folder {short_path(folder)} is not empty and not an earlier report of "
                                "segalign check: choose another folder")
