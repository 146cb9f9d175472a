"""An RT Structure Set as the segmentation (``segalign export DICOM_DIR STRUCTURES.dcm``, ``align(dicom, rtss)``).

Truth is computed here, independently of the reader: the contour polygons as pydicom reads them from the file,
put into each frame's (row, column) pixel coordinates from that frame's own ImagePositionPatient,
ImageOrientationPatient and PixelSpacing (read here with pydicom), and filled by a plain ray-casting even-odd test
written below (:func:`truth_fill`: for every pixel row, the crossings of every edge, XORed into the centres left of
them), with the rule SegAlign states for centres exactly on an edge (half-open: top and left edges inside, bottom
and right outside; within 1e-6 pixel counts as on). The rule itself is checked against hand-counted answers.

Structure sets come from four writers: written here with pydicom (holes, islands, keyholes, overlaps, markers,
missing references, tilted and gapped series, non-square pixels, a double-oblique series), rt-utils (from phantom
masks), real ones nobody here wrote (../shared/testdata/rtstruct: dicompyler-core's breast plan, MIM's and
rt-utils' phantom sets), and SegAlign's own ``--rtstruct`` (read back, it gives exactly the masks it was written
from). Hostile ones end in one line, exit status 1, nothing written.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import read_manifest, read_png, require, run_cli
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ImplicitVRLittleEndian, generate_uid
from segalign import align
from segalign.errors import SegAlignError
from segalign.readers import load_segmentation, sniff
from segalign.readers.fill import even_odd
from segalign.synthetic import AXIAL, SeriesIdentity, stack, write_series
from phantoms import rotated_orientation

RTSTRUCT = "1.2.840.10008.5.1.4.1.1.481.3"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
TIE = 1e-6  #: pixels: a coordinate this close to a centre's row or column is on it (the rule SegAlign states)

pytestmark = [
    pytest.mark.filterwarnings("ignore:'FileDataset.is_little_endian' will be removed:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:'FileDataset.is_implicit_VR' will be removed:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The 'pydicom.pixel_data_handlers' module will be removed:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Invalid value for VR DS:UserWarning"),  # the hostile NaN, as written here
]


# --------------------------------------------------------------------------------------------------------------------
# The truth: frames from their own tags, polygons from the file, a ray-casting even-odd fill
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class SourceImage:
    uid: str
    frame: int  #: 1-based frame number in its file
    position: np.ndarray
    row_direction: np.ndarray  #: IOP[0:3]: along a row (increasing column)
    column_direction: np.ndarray  #: IOP[3:6]
    spacing: tuple[float, float]  #: (between rows, between columns)
    rows: int
    columns: int

    @property
    def normal(self) -> np.ndarray:
        normal = np.cross(self.row_direction, self.column_direction)
        return normal / np.linalg.norm(normal)

    def to_pixels(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, column) of LPS points, and their distance from the frame's plane."""
        offset = np.asarray(points, float) - self.position
        return (np.column_stack([offset @ self.column_direction / self.spacing[0],
                                 offset @ self.row_direction / self.spacing[1]]), offset @ self.normal)

    def to_patient(self, rows_columns: np.ndarray) -> np.ndarray:
        rc = np.asarray(rows_columns, float)
        return (self.position + np.outer(rc[:, 1] * self.spacing[1], self.row_direction)
                + np.outer(rc[:, 0] * self.spacing[0], self.column_direction))


def frames_of(folder: Path) -> dict[tuple[str, int], SourceImage]:
    """Every frame of every image file in ``folder`` (single-frame and enhanced multi-frame), from its tags."""
    frames = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=True)
        except pydicom.errors.InvalidDicomError:
            continue
        if "Rows" not in dataset:
            continue
        uid = str(dataset.SOPInstanceUID)
        if "PerFrameFunctionalGroupsSequence" in dataset:
            shared = dataset.SharedFunctionalGroupsSequence[0]
            for number, groups in enumerate(dataset.PerFrameFunctionalGroupsSequence, start=1):
                def get(sequence: str, keyword: str):
                    for source in (groups, shared):
                        if sequence in source and keyword in source[sequence].value[0]:
                            return [float(v) for v in source[sequence].value[0][keyword].value]
                    raise KeyError(keyword)
                iop = get("PlaneOrientationSequence", "ImageOrientationPatient")
                frames[(uid, number)] = SourceImage(uid, number, np.array(get("PlanePositionSequence",
                                                                            "ImagePositionPatient")),
                                                  np.array(iop[:3]), np.array(iop[3:]),
                                                  tuple(get("PixelMeasuresSequence", "PixelSpacing")),
                                                  int(dataset.Rows), int(dataset.Columns))
        else:
            iop = [float(v) for v in dataset.ImageOrientationPatient]
            frames[(uid, 1)] = SourceImage(uid, 1, np.array([float(v) for v in dataset.ImagePositionPatient]),
                                         np.array(iop[:3]), np.array(iop[3:]),
                                         tuple(float(v) for v in dataset.PixelSpacing), int(dataset.Rows),
                                         int(dataset.Columns))
    return frames


def truth_fill(polygons: list[np.ndarray], rows: int, columns: int) -> np.ndarray:
    """Pixel centres inside the polygons ((row, column) vertices) by the even-odd rule, ray by ray: for each pixel row
    R an edge spans (min(r0, r1) <= R < max(r0, r1), within TIE), its crossing x toggles the centres strictly left of
    it (x > C + TIE), so a centre on a left edge is inside and one on a right edge outside."""
    inside = np.zeros((rows, columns), dtype=bool)
    centres = np.arange(columns)
    for polygon in polygons:
        polygon = np.asarray(polygon, float)
        if len(polygon) < 3:
            continue
        for (ra, ca), (rb, cb) in zip(polygon, np.roll(polygon, -1, axis=0)):
            low, high = min(ra, rb), max(ra, rb)
            for row in range(rows):
                if low - TIE <= row < high - TIE:
                    x = ca + (row - ra) * (cb - ca) / (rb - ra)
                    inside[row] ^= x > centres + TIE
    return inside


@dataclass
class ReadContour:
    roi: int
    kind: str
    points: np.ndarray
    references: list[tuple[str, int]]


def contours_of(path: Path) -> tuple[dict[int, dict], list[ReadContour]]:
    """The file's ROIs (number -> name, colour, type) and contours, with pydicom only."""
    dataset = pydicom.dcmread(path)
    rois = {int(item.ROINumber): {"name": str(item.ROIName)} for item in dataset.StructureSetROISequence}
    for item in dataset.get("RTROIObservationsSequence", []):
        rois[int(item.ReferencedROINumber)]["type"] = str(item.get("RTROIInterpretedType", "") or "")
    contours = []
    for item in dataset.get("ROIContourSequence", []):
        number = int(item.ReferencedROINumber)
        rois[number]["color"] = [int(v) for v in item.ROIDisplayColor] if "ROIDisplayColor" in item else None
        for contour in item.get("ContourSequence", None) or []:
            references = [(str(image.ReferencedSOPInstanceUID), int(image.get("ReferencedFrameNumber", 1) or 1))
                          for image in contour.get("ContourImageSequence", None) or []]
            points = np.array([float(v) for v in contour.ContourData]).reshape(-1, 3)
            contours.append(ReadContour(number, str(contour.ContourGeometricType), points, references))
    return rois, contours


def truth_masks(path: Path, frames: dict[tuple[str, int], SourceImage],
                unplaced: int = 0) -> dict[int, dict[tuple[str, int], np.ndarray]]:
    """ROI number -> frame -> mask: each area contour on the frame it references (else the frame whose plane holds
    it within 0.01 mm), the contours of one ROI on one frame filled together; exactly ``unplaced`` contours lie on
    no frame (and are left out)."""
    _, contours = contours_of(path)
    grouped: dict[tuple[int, tuple[str, int]], list[np.ndarray]] = {}
    off = 0
    for contour in contours:
        if contour.kind not in ("CLOSED_PLANAR", "CLOSEDPLANAR_XOR") or len(contour.points) < 3:
            continue
        keys = [key for key in contour.references if key in frames] or [
            key for key, frame in frames.items() if np.abs(frame.to_pixels(contour.points)[1]).max() <= 0.01]
        if not keys:
            off += 1
            continue
        rc, distance = frames[keys[0]].to_pixels(contour.points)
        assert np.abs(distance).max() <= 0.01
        grouped.setdefault((contour.roi, keys[0]), []).append(rc)
    assert off == unplaced, f"{off} contours lie on no frame, not {unplaced}"
    result: dict[int, dict] = {}
    for (roi, key), polygons in grouped.items():
        frame = frames[key]
        result.setdefault(roi, {})[key] = truth_fill(polygons, frame.rows, frame.columns)
    return result


def assert_masks_equal_truth(dicom: Path, path: Path, truth: dict, values: dict[int, int] | None = None,
                             **options) -> None:
    """align(dicom, path) gives, for every ROI and every frame, the truth's mask (empty where it has none)."""
    alignment = align(dicom, path, **options)
    values = values or {number: number for number in truth}
    for number, per_frame in truth.items():
        masks = alignment.mask(values[number])
        for index, frame in enumerate(alignment.frames):
            want = per_frame.get((frame.sop_instance_uid, frame.frame_number))
            got = masks[index]
            if want is None:
                assert not got.any(), f"ROI {number}: {int(got.sum())} pixels on frame {index}, which has no contour"
            else:
                wrong = np.argwhere(got != want)
                assert not wrong.size, (f"ROI {number} frame {index}: {len(wrong)} pixels differ, e.g. (row, column) "
                                        f"{tuple(wrong[0])}: reader {got[tuple(wrong[0])]}, truth {want[tuple(wrong[0])]}")


# --------------------------------------------------------------------------------------------------------------------
# The truth's own rule, and the reader's fill, on hand-counted answers
# --------------------------------------------------------------------------------------------------------------------


def square(r0: float, c0: float, r1: float, c1: float) -> np.ndarray:
    return np.array([[r0, c0], [r0, c1], [r1, c1], [r1, c0]], float)


HAND_COUNTED = {
    # name: (polygons, the centres inside, listed by hand)
    "corners on centres": ([square(2, 3, 5, 7)], [(r, c) for r in (2, 3, 4) for c in (3, 4, 5, 6)]),
    "the same square drawn the other way": ([square(2, 3, 5, 7)[::-1]], [(r, c) for r in (2, 3, 4) for c in (3, 4, 5, 6)]),
    "corners between centres": ([square(1.5, 1.5, 3.5, 2.5)], [(2, 2), (3, 2)]),
    "hole": ([square(0, 0, 5, 5), square(1, 1, 4, 4)], [(r, c) for r in range(5) for c in range(5)
                                                       if not (1 <= r < 4 and 1 <= c < 4)]),
    "island in a hole": ([square(0, 0, 5, 5), square(1, 1, 4, 4), square(2, 2, 3, 3)],
                         [(r, c) for r in range(5) for c in range(5) if not (1 <= r < 4 and 1 <= c < 4)] + [(2, 2)]),
    "keyhole": ([np.array([[0, 0], [0, 5], [5, 5], [5, 0], [0, 0], [1, 1], [4, 1], [4, 4], [1, 4], [1, 1]], float)],
                [(r, c) for r in range(5) for c in range(5) if not (1 <= r < 4 and 1 <= c < 4)]),
    # its apex (0, 0) has no width: the left edge and the upper edge cross row 0 both at column 0
    "triangle with a vertex on a row": ([np.array([[0, 0], [2, 4], [4, 0]], float)],
                                        [(1, 0), (1, 1), (2, 0), (2, 1), (2, 2), (2, 3), (3, 0), (3, 1)]),
    "squares tiling the plane share no centre": ([square(0, 0, 2, 2)], [(0, 0), (0, 1), (1, 0), (1, 1)]),
    "two points": ([np.array([[0, 0], [3, 3]], float)], []),
    "beyond the frame": ([square(-10, -10, 2, 50)], [(r, c) for r in (0, 1) for c in range(8)]),
}


@pytest.mark.parametrize("name", sorted(HAND_COUNTED))
def test_the_edge_rule_on_hand_counted_answers(name: str) -> None:
    polygons, inside = HAND_COUNTED[name]
    want = np.zeros((8, 8), dtype=bool)
    for r, c in inside:
        want[r, c] = True
    np.testing.assert_array_equal(truth_fill(polygons, 8, 8), want, err_msg=f"the test's truth: {name}")
    np.testing.assert_array_equal(even_odd(polygons, 8, 8), want, err_msg=f"SegAlign's fill: {name}")
    # a window of the frame gives the same centres
    np.testing.assert_array_equal(even_odd(polygons, 4, 3, 2, 3), want[2:6, 3:6], err_msg=f"window: {name}")


def test_fill_equals_truth_on_random_polygons() -> None:
    """Random polygons, some with vertices snapped onto pixel centres (ties), some within 1e-7 pixel of them."""
    random = np.random.default_rng(25)
    for trial in range(60):
        polygons = []
        for _ in range(random.integers(1, 4)):
            points = random.uniform(-3, 23, size=(random.integers(3, 12), 2))
            if trial % 3 == 0:
                points = np.round(points)
            elif trial % 3 == 1:
                points = np.round(points) + random.choice([-1e-7, 0, 1e-7], size=points.shape)
            polygons.append(points)
        np.testing.assert_array_equal(even_odd(polygons, 20, 21), truth_fill(polygons, 20, 21), err_msg=str(trial))


# --------------------------------------------------------------------------------------------------------------------
# Structure sets written here
# --------------------------------------------------------------------------------------------------------------------


def rtstruct_dataset(frames: dict[tuple[str, int], SourceImage], series_uid: str, frame_of_reference: str,
                     rois: list[dict]) -> Dataset:
    """An RT Structure Set: each ROI a dict with number, name, color, type, contours (each a dict with kind,
    points (LPS) and references), and optionally frame_of_reference and no_contour_item."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTSTRUCT
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ImplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = RTSTRUCT, meta.MediaStorageSOPInstanceUID
    dataset.Modality, dataset.PatientName, dataset.PatientID = "RTSTRUCT", "Phantom", "phantom"
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID = generate_uid(), generate_uid()
    dataset.StructureSetLabel = "test"
    study = Dataset()
    series = Dataset()
    series.SeriesInstanceUID = series_uid
    series.ContourImageSequence = DicomSequence([_image(uid, number, frames) for uid, number in frames])
    study.RTReferencedSeriesSequence = DicomSequence([series])
    reference = Dataset()
    reference.FrameOfReferenceUID = frame_of_reference
    reference.RTReferencedStudySequence = DicomSequence([study])
    dataset.ReferencedFrameOfReferenceSequence = DicomSequence([reference])
    dataset.StructureSetROISequence = DicomSequence()
    dataset.ROIContourSequence = DicomSequence()
    dataset.RTROIObservationsSequence = DicomSequence()
    for roi in rois:
        item = Dataset()
        item.ROINumber = roi["number"]
        item.ReferencedFrameOfReferenceUID = roi.get("frame_of_reference", frame_of_reference)
        item.ROIName = roi["name"]
        item.ROIGenerationAlgorithm = "MANUAL"
        dataset.StructureSetROISequence.append(item)
        observation = Dataset()
        observation.ObservationNumber = roi["number"]
        observation.ReferencedROINumber = roi["number"]
        observation.RTROIInterpretedType = roi.get("type", "")
        observation.ROIInterpreter = ""
        dataset.RTROIObservationsSequence.append(observation)
        if roi.get("no_contour_item"):
            continue
        contour_item = Dataset()
        contour_item.ReferencedROINumber = roi["number"]
        contour_item.ROIDisplayColor = list(roi.get("color", (255, 0, 0)))
        if roi.get("contours") is not None:
            contour_item.ContourSequence = DicomSequence()
            for number, contour in enumerate(roi["contours"], start=1):
                one = Dataset()
                if contour.get("references"):
                    one.ContourImageSequence = DicomSequence([_image(uid, frame, frames)
                                                              for uid, frame in contour["references"]])
                one.ContourNumber = number
                one.ContourGeometricType = contour.get("kind", "CLOSED_PLANAR")
                points = np.asarray(contour["points"], float)
                one.NumberOfContourPoints = len(points)
                one.ContourData = [f"{v:.9f}" for v in points.ravel()]
                contour_item.ContourSequence.append(one)
        dataset.ROIContourSequence.append(contour_item)
    return dataset


def _image(uid: str, number: int, frames: dict) -> Dataset:
    image = Dataset()
    image.ReferencedSOPClassUID = CT_IMAGE
    image.ReferencedSOPInstanceUID = uid
    if any(key[0] == uid and key[1] > 1 for key in frames):
        image.ReferencedFrameNumber = number
    return image


def save(dataset: Dataset, path: Path) -> Path:
    dataset.save_as(path, enforce_file_format=True)
    return path


def regular_polygon(centre, radius, count, turn, rows_per_column=1.0) -> np.ndarray:
    angles = turn + np.arange(count) * 2 * np.pi / count
    return np.column_stack([centre[0] + radius * np.sin(angles) * rows_per_column, centre[1] + radius * np.cos(angles)])


def drawn_rois(frames: list[SourceImage], missing_uid: str) -> list[dict]:
    """Contours drawn on the frames in their own pixel coordinates (so truth is known frame by frame): a BODY on
    every frame (on frame 2 without ContourImageSequence, on frame 3 referencing an image not in the series), an
    organ with a hole and an island in it, a keyhole, a square with its corners on pixel centres, a PTV overlapping
    the organ, markers, a two-point contour, an ROI without contours and one without ContourSequence."""
    def on(frame: SourceImage, rc: np.ndarray) -> dict:
        return {"points": frame.to_patient(rc), "references": [(frame.uid, frame.frame)]}

    rows, columns = frames[0].rows, frames[0].columns
    middle = (rows / 2 - 0.37, columns / 2 + 0.21)
    body, organ, keyhole, edge, ptv, markers = [], [], [], [], [], []
    for index, frame in enumerate(frames):
        contour = on(frame, regular_polygon(middle, 0.45 * min(rows, columns), 7, 0.1 * index))
        if index == 2:
            contour["references"] = []
        if index == 3:
            contour["references"] = [(missing_uid, 1)]
        body.append(contour)
        if 1 <= index <= len(frames) - 2:
            organ += [on(frame, regular_polygon(middle, 0.3 * min(rows, columns), 5, 0.3)),
                      on(frame, regular_polygon(middle, 0.15 * min(rows, columns), 6, 0.2)),
                      on(frame, regular_polygon(middle, 0.05 * min(rows, columns) + 0.5, 4, 0.7))]
            ptv.append(on(frame, regular_polygon((middle[0] + 4.3, middle[1] - 3.1), 0.2 * min(rows, columns), 9, 0)))
        if index % 2 == 0:
            outer = regular_polygon((rows * 0.3, columns * 0.7), 6.2, 8, 0)
            inner = regular_polygon((rows * 0.3, columns * 0.7), 3.1, 8, 0)[::-1]
            keyhole.append(on(frame, np.concatenate([outer, outer[:1], inner, inner[:1]])))
            edge.append(on(frame, square(2, 3, 6, 9)))
    first = frames[0]
    markers = [{"kind": "POINT", **on(first, np.array([[5.0, 5.0]]))},
               {"kind": "OPEN_PLANAR", **on(first, np.array([[5.0, 5.0], [7.0, 9.0], [9, 2]]))}]
    return [
        {"number": 1, "name": "BODY", "type": "EXTERNAL", "color": (154, 155, 100), "contours": body},
        {"number": 3, "name": "Organ", "type": "ORGAN", "color": (255, 128, 0), "contours": organ},
        {"number": 4, "name": "Keyhole", "type": "AVOIDANCE", "color": (0, 128, 255), "contours": keyhole},
        {"number": 7, "name": "Edges", "type": "CONTROL", "color": (10, 20, 30), "contours": edge},
        {"number": 9, "name": "PTV", "type": "PTV", "color": (255, 0, 0), "contours": ptv},
        {"number": 11, "name": "Markers", "type": "MARKER", "contours": markers},
        {"number": 12, "name": "Two points", "contours": [on(first, np.array([[3.0, 3.0], [8.0, 8.0]]))]},
        {"number": 13, "name": "No contours", "contours": None},
        {"number": 14, "name": "No contour item", "no_contour_item": True},
    ]


#: name: the series' frames (their geometry): a plain axial stack with non-square pixels, a gantry-tilted one, one
#: with a missing slice, a double-oblique one
SERIES = {
    "axial": lambda: stack((-20, -15, -8), 6, (0, 0, 2.5), spacing=(0.7, 1.1), rows=36, columns=30),
    "tilted": lambda: stack((-20, -15, -8), 6, (0, 0.9, 2.5), spacing=(0.8, 0.8), rows=32, columns=34),
    "gap": lambda: [spec for index, spec in enumerate(stack((-20, -15, -8), 7, (0, 0, 2.5), rows=30, columns=30))
                    if index != 3],
    "oblique": lambda: stack((-12, -10, -9), 5, 1.7 * np.cross(np.array(rotated_orientation(0.35, -0.5, 0.2)[:3]),
                                                               np.array(rotated_orientation(0.35, -0.5, 0.2)[3:])),
                             orientation=rotated_orientation(0.35, -0.5, 0.2), spacing=(0.85, 0.85), rows=30,
                             columns=32),
}


def written_case(root: Path, geometry: str) -> tuple[Path, Path, dict]:
    """A series of the geometry, and a structure set drawn on it here: (DICOM folder, structure set, frames)."""
    identity = SeriesIdentity(description=f"{geometry} phantom")
    dicom = root / "dicom"
    write_series(dicom, SERIES[geometry](), identity=identity)
    frames = frames_of(dicom)
    ordered = sorted(frames.values(), key=lambda frame: float(frame.position @ frame.normal))
    dataset = rtstruct_dataset(frames, identity.series_uid, identity.frame_of_reference_uid,
                               drawn_rois(ordered, generate_uid()))
    return dicom, save(dataset, root / "rtss.dcm"), frames


@pytest.mark.parametrize("geometry", sorted(SERIES))
def test_structure_set_written_here_equals_truth_on_every_frame(tmp_path: Path, geometry: str) -> None:
    dicom, path, frames = written_case(tmp_path, geometry)
    truth = truth_masks(path, frames)
    assert set(truth) == {1, 3, 4, 7, 9}
    assert sum(mask.sum() for mask in truth[3].values()) > 50
    assert_masks_equal_truth(dicom, path, truth)

    out = tmp_path / "out"
    run = run_cli("export", dicom, path, "-o", out, "--masks")  # the suite also checks align against the PNGs
    assert run.code == 0, run.stderr
    assert "are markers (POINT, OPEN_PLANAR), not areas: left out" in run.stderr
    assert "ROI 11 'Markers' contour 1: POINT, 1 points" in run.stderr
    assert "fewer than three points and so no area" in run.stderr and "ROI 12 'Two points' contour 1" in run.stderr
    entries = {entry["value"]: entry for entry in json.loads((out / "labels.json").read_text())}
    assert entries[1]["name"] == "BODY" and entries[1]["roi_number"] == 1
    assert entries[1]["rt_roi_interpreted_type"] == "EXTERNAL" and entries[1]["color"] == [154, 155, 100]
    assert entries[9]["rt_roi_interpreted_type"] == "PTV" and entries[9]["layer"] != entries[3]["layer"]
    assert entries[13]["voxels"] == 0 and entries[14]["voxels"] == 0 and entries[14]["name"] == "No contour item"
    assert entries[3]["voxels"] == sum(int(mask.sum()) for mask in truth[3].values())
    rows = read_manifest(out)
    assert any(np.array_equal(read_png(out / "masks" / "Edges" / Path(row["label_png"]).name) != 0,
                              truth[7].get((row["sop_instance_uid"], 1), np.zeros(1))) for row in rows)


def test_edge_square_covers_the_hand_counted_centres(tmp_path: Path) -> None:
    """The square with corners on pixel centres (2, 3) and (6, 9) covers rows 2..5, columns 3..8, in SegAlign's
    read of the file (not only in both rasterisers)."""
    dicom, path, _ = written_case(tmp_path, "axial")
    alignment = align(dicom, path, order="position")
    want = np.zeros((36, 30), dtype=bool)
    want[2:6, 3:9] = True
    masks = alignment.mask("Edges")
    for index in range(len(alignment)):
        if masks[index].any():
            np.testing.assert_array_equal(masks[index], want)
    assert int(masks.any(axis=(1, 2)).sum()) == 3


def test_overlaps_later_wins_and_error(tmp_path: Path) -> None:
    dicom, path, frames = written_case(tmp_path, "axial")
    truth = truth_masks(path, frames)
    flat = align(dicom, path, overlap="later-wins")
    labels = flat.labels
    for index, frame in enumerate(flat.frames):
        key = (frame.sop_instance_uid, 1)
        expected = np.zeros(labels.shape[1:], dtype=np.uint8)
        for number in sorted(truth):
            if key in truth[number]:
                expected[truth[number][key]] = number
        np.testing.assert_array_equal(labels[index], expected)
    with pytest.raises(SegAlignError, match=r"ROI 1 'BODY' and ROI 3 'Organ' overlap \([0-9]+ pixels\)"):
        align(dicom, path, overlap="error")


def test_onto_another_series_of_the_frame_of_reference(tmp_path: Path) -> None:
    """A structure set drawn on the axial series, exported onto a second series of the same frame of reference
    whose frames are every other one of the first (a thicker reconstruction): each frame gets the masks of the
    frame it coincides with; the series it references is taken to place it, and chosen when none is named."""
    identity = SeriesIdentity(description="thin")
    specs = stack((-20, -15, -8), 6, (0, 0, 2.5), spacing=(0.7, 1.1), rows=36, columns=30)
    write_series(tmp_path / "dicom" / "thin", specs, identity=identity)
    thick = SeriesIdentity(description="thick", frame_of_reference_uid=identity.frame_of_reference_uid,
                           study_uid=identity.study_uid, series_number=2)
    write_series(tmp_path / "dicom" / "thick", specs[::2], identity=thick)
    frames = frames_of(tmp_path / "dicom" / "thin")
    ordered = sorted(frames.values(), key=lambda frame: float(frame.position @ frame.normal))
    path = save(rtstruct_dataset(frames, identity.series_uid, identity.frame_of_reference_uid,
                                 drawn_rois(ordered, generate_uid())), tmp_path / "rtss.dcm")
    truth = truth_masks(path, frames)
    by_position = {round(float(frame.position[2]), 3): key for key, frame in frames.items()}
    onto = align(tmp_path / "dicom", path, series=2)
    assert onto.series.description == "thick" and len(onto) == 3
    for number in truth:
        masks = onto.mask(number)
        for index, frame in enumerate(onto.frames):
            key = by_position[round(frame.position[2], 3)]
            np.testing.assert_array_equal(masks[index], truth[number].get(key, np.zeros_like(masks[index])))
    assert align(tmp_path / "dicom", path).series.description == "thin"
    run = run_cli("export", tmp_path / "dicom", path, "-o", tmp_path / "out")
    assert run.code == 0, run.stderr
    assert json.loads((tmp_path / "out" / "export.json").read_text())["series_description"] == "thin"
    run = run_cli("export", tmp_path / "dicom", path, "-o", tmp_path / "all", "--all-series")
    assert run.code == 0, run.stderr
    assert run.stdout.startswith("2 of 2 series exported"), run.stdout


def test_a_study_folder_with_its_structure_set_is_a_job(tmp_path: Path) -> None:
    """Planning systems export a CT and its structure set together: a study folder with no segmentation file but
    one RT Structure Set among its DICOM files is a job, and the batch exports it; two are a choice to make."""
    from segalign.batch import find_jobs

    studies = tmp_path / "studies"
    dicom, path, frames = written_case(studies / "patient1", "axial")
    path.rename(dicom / "RS.patient1.dcm")
    written_case(studies / "patient2", "tilted")  # its structure set beside the DICOM folder, in the study folder
    jobs, notes = find_jobs(studies)
    assert not notes and [(job.name, job.segmentation.name) for job in jobs] == [("patient1", "RS.patient1.dcm"),
                                                                                 ("patient2", "rtss.dcm")]
    run = run_cli("batch", studies, "-o", tmp_path / "out", "--workers", "1")
    assert run.code == 0, run.stderr
    truth = truth_masks(dicom / "RS.patient1.dcm", frames)
    alignment = align(dicom, dicom / "RS.patient1.dcm")
    for index, frame in enumerate(alignment.frames):
        row = next(r for r in read_manifest(tmp_path / "out" / "patient1")
                   if r["sop_instance_uid"] == frame.sop_instance_uid)
        labels = read_png(tmp_path / "out" / "patient1" / row["label_png"])
        body = truth[1].get((frame.sop_instance_uid, 1), np.zeros(labels.shape, bool))
        assert np.array_equal(labels == 1, body & ~np.isin(labels, [3, 4, 7, 9]))
    (studies / "patient2" / "rtss.dcm").rename(studies / "patient2" / "dicom" / "RS.a.dcm")
    save(pydicom.dcmread(studies / "patient2" / "dicom" / "RS.a.dcm"), studies / "patient2" / "RS.b.dcm")
    jobs, notes = find_jobs(studies)
    assert [job.name for job in jobs] == ["patient1"]
    assert any("2 segmentations (RS.b.dcm, RS.a.dcm): choose with --segmentation PATTERN" in note
               or "2 segmentations (" in note for note in notes), notes


# --------------------------------------------------------------------------------------------------------------------
# SegAlign's own RTSTRUCT, read back
# --------------------------------------------------------------------------------------------------------------------

ROUND_TRIP = ["axial_las", "gantry_tilt", "missing_slice", "double_oblique", "anisotropic", "enhanced", "shapes",
              "huge"]


@pytest.mark.parametrize("case", ROUND_TRIP)
def test_segalign_rtstruct_reads_back_to_the_masks_it_was_written_from(tmp_path: Path, case: str) -> None:
    from test_rtstruct import build

    built = build(case, tmp_path / "case")
    out = tmp_path / "out"
    run = run_cli("export", built.dicom, built.segmentation, "-o", out, "--rtstruct", "--masks")
    assert run.code == 0, run.stderr
    original = align(built.dicom, built.segmentation)
    again = align(built.dicom, out / "rtstruct.dcm")
    assert [segment.name for segment in again.segments] == [
        original.segmentation.label_table[value].name for value in sorted(json_values(out))]
    for segment in again.segments:
        np.testing.assert_array_equal(again.mask(segment.value), original.mask(segment.name),
                                      err_msg=f"{case}: {segment.name}")
    back = tmp_path / "back"
    run = run_cli("export", built.dicom, out / "rtstruct.dcm", "-o", back, "--masks")
    assert run.code == 0, run.stderr
    assert sorted(p.relative_to(out / "masks").as_posix() for p in (out / "masks").rglob("*.png")) == sorted(
        p.relative_to(back / "masks").as_posix() for p in (back / "masks").rglob("*.png"))
    for png in (out / "masks").rglob("*.png"):
        np.testing.assert_array_equal(read_png(png), read_png(back / "masks" / png.relative_to(out / "masks")))


def json_values(out: Path) -> list[int]:
    return [entry["value"] for entry in json.loads((out / "labels.json").read_text()) if entry["frames"]]


def test_overlapping_segments_read_back_each_whole(tmp_path: Path) -> None:
    """A folder of masks that overlap (a BODY around an organ, a target across both) exported as an RTSTRUCT and
    read back: every segment whole, in layers."""
    from test_rtstruct import build

    built = build("axial_las", tmp_path / "case")
    image = nib.load(built.segmentation)
    labels = np.asarray(image.dataobj)
    masks = tmp_path / "masks"
    masks.mkdir()
    shifted = np.roll(labels == 1, 5, axis=0)
    for name, mask in (("a_body", labels > 0), ("b_organ", labels == 2), ("c_target", shifted)):
        nib.save(nib.Nifti1Image(mask.astype(np.uint8), image.affine), masks / f"{name}.nii.gz")
    out = tmp_path / "out"
    assert run_cli("export", built.dicom, masks, "-o", out, "--rtstruct").code == 0
    original, again = align(built.dicom, masks), align(built.dicom, out / "rtstruct.dcm")
    assert again.segmentation.overlapping
    for name in ("a_body", "b_organ", "c_target"):
        assert original.mask(name).any()
        np.testing.assert_array_equal(again.mask(name), original.mask(name), err_msg=name)


# --------------------------------------------------------------------------------------------------------------------
# rt-utils' RTSTRUCT from phantom masks
# --------------------------------------------------------------------------------------------------------------------


def test_rtutils_structure_set_equals_truth(tmp_path: Path) -> None:
    """rt-utils draws its contours through the boundary pixels' centres (OpenCV), so many centres lie exactly on
    edges: the edge rule decides them, and SegAlign's masks equal the truth's. The masks rt-utils was given differ
    from both by the right and bottom boundary pixels (what the rule leaves out), never by more."""
    rt_utils = pytest.importorskip("rt_utils", reason="rt-utils writes the structure set (pip install rt-utils)")
    from test_rtstruct import build

    built = build("axial_las", tmp_path / "case")
    frames = frames_of(built.dicom)
    with contextlib.redirect_stdout(io.StringIO()):
        builder = rt_utils.RTStructBuilder.create_new(str(built.dicom))
        order = [(str(ds.SOPInstanceUID), 1) for ds in builder.series_data]
        given = {}
        source = align(built.dicom, built.segmentation)
        index_of = {(frame.sop_instance_uid, frame.frame_number): index for index, frame in enumerate(source.frames)}
        for value, name in ((1, "big"), (2, "left_blob"), (7, "tilted_rod")):
            mask = source.mask(value)
            given[name] = {key: mask[index_of[key]] for key in order}
            builder.add_roi(mask=np.stack([given[name][key] for key in order], axis=-1), name=name)
        builder.save(str(tmp_path / "rtutils.dcm"))
    path = tmp_path / "rtutils.dcm"
    truth = truth_masks(path, frames)
    rois, _ = contours_of(path)
    assert_masks_equal_truth(built.dicom, path, truth)
    again = align(built.dicom, path)
    for number, roi in rois.items():
        got = again.mask(number)
        for key, index in index_of.items():
            lost = given[roi["name"]][key] & ~got[again.frames.index(source.frames[index])]
            assert not (got[again.frames.index(source.frames[index])] & ~given[roi["name"]][key]).any()
            if lost.any():  # only boundary pixels are lost: each has a neighbour outside the mask below or right
                padded = np.pad(given[roi["name"]][key], 1)
                rows, columns = np.nonzero(lost)
                assert np.all(~padded[rows + 2, columns + 1] | ~padded[rows + 1, columns + 2]
                              | ~padded[rows + 2, columns + 2])


# --------------------------------------------------------------------------------------------------------------------
# Real structure sets nobody here wrote
# --------------------------------------------------------------------------------------------------------------------


def test_mim_structure_set_with_a_missing_image(testdata: Path, tmp_path: Path) -> None:
    """MIM's structure set references the two CT slices shipped and a third that is not: its four contours there
    are reported (ROI, contour, 5 mm from the nearest plane) and the export refuses, writing nothing; skipped, the
    other eight equal the truth on both slices."""
    folder = require(testdata / "rtstruct" / "rtutils_mim")
    path = folder / "mim_rtstruct.dcm"
    assert sniff(path).NAME == "rtstruct"
    out = tmp_path / "out"
    run = run_cli("export", folder, path, "-o", out)
    assert run.code == 1 and not out.exists()
    first, *details = run.stderr.strip().split("\n")
    assert first.startswith("segalign: error: ") and "4 contours lie on no frame of series" in first
    assert "ROI 1 'ROI-1' contour 1 lies 5 mm from the nearest frame's plane" in first
    assert "--skip-unplaced-contours" in first
    assert len(details) == 4 and all(line.startswith("  ROI ") for line in details)
    assert "references image 2.16.840.1.114362.1.11940992.23790159890.563423471.995.90, which is not in the " \
           "series" in details[0]
    frames = frames_of(folder)
    truth = truth_masks(path, frames, unplaced=4)
    assert set(truth) == {1, 2, 3, 4} and all(len(per_frame) == 2 for per_frame in truth.values())
    assert_masks_equal_truth(folder, path, truth, skip_unplaced_contours=True)
    run = run_cli("export", folder, path, "-o", out, "--skip-unplaced-contours", "--rtstruct")
    assert run.code == 0, run.stderr
    assert "4 contours of mim_rtstruct.dcm lie on no frame" in run.stderr and "left out, as asked" in run.stderr
    names = [entry["name"] for entry in json.loads((out / "labels.json").read_text())]
    assert names == ["ROI-1", "ROI-2", "ROI-3", "ROI-4"]


def test_rtutils_structure_set_in_another_frame_of_reference(testdata: Path, tmp_path: Path) -> None:
    """rt-utils' sample structure set names the CT slice it lies on, but another FrameOfReferenceUID: refused, and
    skipping leaves nothing, which is refused too."""
    folder = require(testdata / "rtstruct" / "rtutils_mim")
    run = run_cli("export", folder, folder / "rtutils_rtstruct.dcm", "-o", tmp_path / "out")
    assert run.code == 1 and not (tmp_path / "out").exists()
    assert "ROI 1 'ROI-1' contour 1 is in another frame of reference" in run.stderr
    assert "ROI 1 'ROI-1' contour 2: in frame of reference 1.2.826.0.1.3680043.8.498" in run.stderr
    run = run_cli("export", folder, folder / "rtutils_rtstruct.dcm", "-o", tmp_path / "out",
                  "--skip-unplaced-contours")
    assert run.code == 1 and not (tmp_path / "out").exists()
    assert "no contour of the structure set encloses an area on a frame" in run.stderr
    assert "(2 contours: 2 on no frame, 0 markers, 0 of fewer than three points)" in run.stderr


def test_dicompyler_breast_plan_on_its_one_shipped_slice(testdata: Path, tmp_path: Path) -> None:
    """dicompyler-core's breast plan: 441 contours on 98 CT images, one of which is shipped. The 437 contours on
    the missing images are reported, not placed; skipped, BODY's four contours on the shipped slice equal the
    truth, the other nine ROIs (Areola has no ContourSequence) are in labels.json without voxels, and every ROI keeps
    its number, colour and RTROIInterpretedType."""
    folder = require(testdata / "rtstruct" / "dicompyler_breast")
    path = folder / "rtss.dcm"
    out = tmp_path / "out"
    run = run_cli("export", folder, path, "-o", out)
    assert run.code == 1 and not out.exists()
    assert "437 contours lie on no frame" in run.stderr.split("\n")[0]
    assert "... and 418 more" in run.stderr
    frames = frames_of(folder)
    truth = truth_masks(path, frames, unplaced=437)
    assert set(truth) == {1} and sum(int(m.sum()) for m in truth[1].values()) > 30000
    assert_masks_equal_truth(folder, path, truth, skip_unplaced_contours=True)
    run = run_cli("export", folder, path, "-o", out, "--skip-unplaced-contours", "--dicom-seg", "--rtstruct")
    assert run.code == 0, run.stderr
    entries = json.loads((out / "labels.json").read_text())
    rois, _ = contours_of(path)
    assert [(e["value"], e["name"], e["rt_roi_interpreted_type"], e["color"]) for e in entries] == [
        (number, roi["name"], roi["type"], roi.get("color") or entries[number - 1]["color"])
        for number, roi in sorted(rois.items())]
    assert entries[1]["name"] == "Areola" and entries[1]["voxels"] == 0 and entries[1]["color"] == [255, 204, 255]
    written = pydicom.dcmread(out / "rtstruct.dcm")
    assert [(str(r.ROIName), int(r.ROINumber)) for r in written.StructureSetROISequence] == [("BODY", 1)]
    assert [str(o.RTROIInterpretedType) for o in written.RTROIObservationsSequence] == ["EXTERNAL"]
    seg = pydicom.dcmread(out / "seg.dcm")
    assert [str(s.SegmentLabel) for s in seg.SegmentSequence] == ["BODY"]


# --------------------------------------------------------------------------------------------------------------------
# Hostile structure sets
# --------------------------------------------------------------------------------------------------------------------


def _hostile_empty_rois(dataset: Dataset, frames: dict) -> None:
    dataset.StructureSetROISequence = DicomSequence()


def _hostile_empty_contours(dataset: Dataset, frames: dict) -> None:
    dataset.ROIContourSequence = DicomSequence()


def _hostile_nan(dataset: Dataset, frames: dict) -> None:
    contour = dataset.ROIContourSequence[0].ContourSequence[0]
    values = list(contour.ContourData)
    values[4] = "NaN"
    contour.ContourData = values


def _hostile_million_points(dataset: Dataset, frames: dict) -> None:
    contour = dataset.ROIContourSequence[0].ContourSequence[0]
    first = [float(v) for v in contour.ContourData[:3]]
    contour.ContourData = [f"{v:.3f}" for v in first] * 1_000_000
    contour.NumberOfContourPoints = 1_000_000


def _hostile_not_triples(dataset: Dataset, frames: dict) -> None:
    contour = dataset.ROIContourSequence[0].ContourSequence[0]
    contour.ContourData = list(contour.ContourData)[:-1]


def _hostile_missing_images(dataset: Dataset, frames: dict) -> None:
    for item in dataset.ROIContourSequence:
        for contour in item.get("ContourSequence", None) or []:
            contour.ContourData = [f"{float(v) + (200.0 if i % 3 == 2 else 0.0):.6f}"
                                   for i, v in enumerate(contour.ContourData)]
            for image in contour.get("ContourImageSequence", None) or []:
                image.ReferencedSOPInstanceUID = generate_uid()


def _hostile_mixed_frames_of_reference(dataset: Dataset, frames: dict) -> None:
    dataset.StructureSetROISequence[1].ReferencedFrameOfReferenceUID = generate_uid()


def _hostile_no_roi_number(dataset: Dataset, frames: dict) -> None:
    del dataset.StructureSetROISequence[0].ROINumber


def _hostile_between_slices(dataset: Dataset, frames: dict) -> None:
    contour = dataset.ROIContourSequence[0].ContourSequence[0]
    contour.ContourData = [f"{float(v) + (1.25 if i % 3 == 2 else 0.0):.6f}" for i, v in enumerate(contour.ContourData)]
    del contour.ContourImageSequence


def _hostile_wrong_reference(dataset: Dataset, frames: dict) -> None:
    contours = dataset.ROIContourSequence[0].ContourSequence  # the first contour names the second one's image
    contours[0].ContourImageSequence[0].ReferencedSOPInstanceUID = \
        contours[1].ContourImageSequence[0].ReferencedSOPInstanceUID


HOSTILE = {
    "empty StructureSetROISequence": (_hostile_empty_rois, "the structure set has no ROIs"),
    "empty ROIContourSequence": (_hostile_empty_contours, "no contour of the structure set encloses an area"),
    "NaN coordinates": (_hostile_nan, "ROI 1 'BODY' contour 1 holds coordinates that are not finite numbers"),
    "a million points": (_hostile_million_points, "contour 1 has 1000000 points, more than the 500000"),
    "ContourData not triples": (_hostile_not_triples, "holds 20 ContourData values, not \\(x, y, z\\) triples"),
    "references to missing images": (_hostile_missing_images, "contours lie on no frame of series"),
    "mixed frames of reference": (_hostile_mixed_frames_of_reference,
                                  "ROI 3 'Organ' contour 1 is in another frame of reference"),
    "an ROI without ROINumber": (_hostile_no_roi_number, "item 1 of StructureSetROISequence has no valid ROINumber"),
    "a contour on another frame than it references": (
        _hostile_wrong_reference, "ROI 1 'BODY' contour 1 lies 2.5 mm off the plane of the frame it references"),
    "a contour between slices": (_hostile_between_slices,
                                 "ROI 1 'BODY' contour 1 lies 1.25 mm from the nearest frame's plane"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_structure_sets_end_in_one_line(tmp_path: Path, name: str) -> None:
    change, message = HOSTILE[name]
    identity = SeriesIdentity()
    dicom = tmp_path / "dicom"
    write_series(dicom, stack((-10, -10, 0), 4, (0, 0, 2.5), rows=16, columns=16), identity=identity)
    frames = frames_of(dicom)
    ordered = sorted(frames.values(), key=lambda frame: float(frame.position[2]))

    def box(frame: SourceImage) -> dict:  # seven points, three of them on the box's edges
        outline = np.array([[2.5, 2.5], [2.5, 11.5], [9.5, 11.5], [9.5, 6.0], [9.5, 2.5], [6.0, 2.5], [4.0, 2.5]])
        return {"points": frame.to_patient(outline), "references": [(frame.uid, 1)]}

    rois = [{"number": 1, "name": "BODY", "contours": [box(frame) for frame in ordered]},
            {"number": 3, "name": "Organ", "contours": [box(frame) for frame in ordered[1:3]]}]
    dataset = rtstruct_dataset(frames, identity.series_uid, identity.frame_of_reference_uid, rois)
    change(dataset, frames)
    path = save(dataset, tmp_path / "rtss.dcm")
    out = tmp_path / "out"
    run = run_cli("export", dicom, path, "-o", out)
    assert run.code == 1, run.stdout
    first, *rest = run.stderr.rstrip("\n").split("\n")
    assert first.startswith("segalign: error: ") and len(first) <= 320, first
    assert all(line.startswith("  ") for line in rest), rest
    assert re.search(message, first), first
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["dicom", "rtss.dcm"]



def test_a_structure_set_without_its_series_is_refused_saying_why(tmp_path: Path) -> None:
    dicom, path, _ = written_case(tmp_path, "axial")
    with pytest.raises(SegAlignError, match=r"is an RT Structure Set: its contours have no pixel grid of their own"):
        load_segmentation(path)
    with pytest.raises(SegAlignError, match=r"needs the series it was drawn on, and none was given"):
        load_segmentation(path, reference=[])
