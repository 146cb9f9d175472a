"""SegAlign against the recipes users would write instead: wall time, CPU time and peak memory, side by side.

    python Testing/benchmark/benchmark.py                      # N = 300, 3 repetitions
    python Testing/benchmark/benchmark.py --slices 300 1000    # and the memory-flatness check at N = 1000
    python Testing/benchmark/benchmark.py --recipes highdicom-binary highdicom-labelmap segalign-seg segalign-seg-labelmap
    python Testing/benchmark/benchmark.py --profile --recipes highdicom-binary   # cProfile, top 15 by cumulative time

For each N it generates (once, cached under --work) a 512 x 512 x N CT series with InstanceNumber counting down and a
117-label TotalSegmentator-like segmentation on a 1.5 mm LAS grid, then runs every recipe as its own process,
alternating the order over the repetitions, and reports medians. Every recipe's label images are compared with
SegAlign's, file by file, so no recipe wins by being wrong (the segalign recipe always runs: it is the reference).
A DICOM SEG is checked the same way: every source frame's label image is rebuilt from the SEG's frames (by their
ReferencedSOPInstanceUID, segment numbers mapped to label values through SegmentLabel, else segment order) and
compared with SegAlign's label PNG of the frame with that SOPInstanceUID. The table is printed and written as JSON.

Recipes:
  segalign           segalign export (label PNGs only)
  segalign-overlays  segalign export --overlays
  sitk               SimpleITK: ImageSeriesReader + Resample (nearest) onto the series + one PNG per slice
  sitk-overlays      the same, plus windowing the CT and blending the labels with numpy, RGB PNG per slice
  slicer             slicer-core: AddArchetypeVolume, import the segmentation, ExportVisibleSegmentsToLabelmapNode
                     with the series as reference, one PNG per slice
  segalign-slicer    SegAlign's Slicer logic on slicer-core (import, then export per original frame)
  highdicom-binary   what a user writes for a DICOM SEG today: SimpleITK reads the series and resamples the NIfTI
                     (nearest) onto it, pydicom reads every source file (with pixel data), highdicom.seg.Segmentation
                     (BINARY, label-map style array, one segment per label present, omit_empty_frames) and save_as
  highdicom-labelmap the same as a LABELMAP (Label Map Segmentation Storage), RLE Lossless unless
                     --labelmap-syntax says otherwise
  segalign-seg       segalign export --dicom-seg (label PNGs and a BINARY seg.dcm)
  segalign-seg-labelmap  segalign export --dicom-seg --dicom-seg-type labelmap

The highdicom recipes print their phases (read the series, resample, read the datasets, Segmentation(), save_as);
--highdicom-workers passes highdicom's ``workers`` (it only parallelises compression, so BINARY, which is stored
uncompressed, ignores it). Their peak memory is the main process's: worker processes are not counted.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # Testing/: the headless Slicer scaffolding

RECIPES = [
    "segalign", "segalign-overlays", "sitk", "sitk-overlays", "slicer", "segalign-slicer",
    "highdicom-binary", "highdicom-labelmap", "segalign-seg", "segalign-seg-labelmap",
]
SEG_RECIPES = ("highdicom-binary", "highdicom-labelmap", "segalign-seg", "segalign-seg-labelmap")
LABELMAP_SYNTAXES = {  # --labelmap-syntax: the transfer syntax of highdicom-labelmap
    "rle": "1.2.840.10008.1.2.5",  # RLE Lossless
    "jpegls": "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "jpeg2000": "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "explicit": "1.2.840.10008.1.2.1",  # Explicit VR Little Endian, uncompressed
}
#: Type 2 attributes highdicom copies from the source images that the synthetic series leaves out.
TYPE_2_PATIENT_STUDY = (
    "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName",
)
#: Passed to the recipe processes through the environment (the recipes' own command line is fixed).
WORKERS_VARIABLE, SYNTAX_VARIABLE = "SEGALIGN_BENCHMARK_HIGHDICOM_WORKERS", "SEGALIGN_BENCHMARK_LABELMAP_SYNTAX"
PIXEL_SPACING = 400.0 / 512  # mm
SLICE_SPACING = 1.6  # mm
GRID_SPACING = 1.5  # mm, the segmentation's LAS grid
GRID_OFFSET = 0.37  # mm, see prepare_case
WINDOW = (40.0, 400.0)  # the overlay window every overlay recipe uses


# ------------------------------------------------------------------------------------------------ the case


def prepare_case(work: Path, slices: int) -> Path:
    """Generate (or reuse) the case for ``slices`` frames; returns its folder."""
    case = work / f"case-{slices}-v3"
    done = case / "ready"
    if done.exists():
        return case
    from segalign.labels import builtin_table
    from segalign.sampling import FrameSampler
    from segalign.dicom import Frame
    from segalign.synthetic import Ellipsoid, Phantom, SeriesIdentity, las_affine, rasterize, stack, write_nifti, write_series

    rng = np.random.default_rng(slices)
    length = SLICE_SPACING * (slices - 1)
    names = builtin_table("totalsegmentator")
    shapes = []
    for value in range(1, 118):
        centre = (rng.uniform(-130, 130), rng.uniform(-80, 80), rng.uniform(-length / 2 + 20, length / 2 - 20))
        radii = tuple(rng.uniform(8, 35, size=3))
        shapes.append(Ellipsoid(value, names[value].name, centre, radii, hu=float(rng.uniform(-100, 300)), color=names[value].color))
    phantom = Phantom(shapes=shapes, body=Ellipsoid(0, "body", (0, 0, 0), (180, 130, length), hu=20))
    first = np.array([-200 + PIXEL_SPACING / 2, -200 + PIXEL_SPACING / 2, -length / 2])
    # The grid starts 0.37 mm off the first pixel centre: on a grid aligned with the pixels, 1.5 / 0.78125 puts
    # some pixel centres exactly halfway between two voxels, where implementations may legitimately round apart.
    last = first + [511 * PIXEL_SPACING, 511 * PIXEL_SPACING, length]
    affine, shape = las_affine(first - GRID_OFFSET, last + GRID_OFFSET, (GRID_SPACING,) * 3)
    labels = rasterize(phantom, shape, affine)
    case.mkdir(parents=True, exist_ok=True)
    write_nifti(case / "segmentation.nii.gz", labels, affine, label_table_xml=phantom.label_table_xml())
    specs = stack(first, slices, (0, 0, SLICE_SPACING), spacing=(PIXEL_SPACING,) * 2, rows=512, columns=512,
                  instance_numbers=range(slices, 0, -1))
    sampler = FrameSampler(labels, affine)
    hu = np.array([-1000.0] + [s.hu for s in shapes], dtype=np.float32)
    r, c = np.mgrid[0:512, 0:512]
    x, y = first[0] + c * PIXEL_SPACING, first[1] + r * PIXEL_SPACING
    body = (x / 180) ** 2 + (y / 130) ** 2 <= 1

    def pixels(spec):
        frame = Frame(Path("x"), 1, "", 1, spec.position, spec.orientation, spec.spacing, spec.rows, spec.columns)
        value = hu[sampler.sample(frame)]
        value[(value == -1000) & body] = 20
        value += rng.normal(0, 12, size=value.shape).astype(np.float32)
        return np.clip(value + 1024, 0, 4095).astype(np.uint16)

    write_series(case / "dicom", specs, identity=SeriesIdentity(description="benchmark CT"), pixel_function=pixels,
                 file_names=[f"IM{n:05d}.dcm" for n in rng.permutation(slices)])
    done.write_text("ok\n")
    return case


def write_label_names(case: Path) -> Path:
    """The label names as a user of TotalSegmentator has them (its class map), for the highdicom recipes'
    SegmentLabels: ``label_names.json``, ``{"1": "spleen", ...}`` (written beside a case made before it existed)."""
    path = case / "label_names.json"
    if not path.exists():
        from segalign.labels import builtin_table

        names = {str(value): label.name for value, label in builtin_table("totalsegmentator").items() if 0 < value < 118}
        path.write_text(json.dumps(names, indent=1) + "\n")
    return path


# ------------------------------------------------------------------------------------------------ recipes (child processes)


def run_recipe(recipe: str, case: Path, out: Path) -> None:
    dicom, segmentation = case / "dicom", case / "segmentation.nii.gz"
    if recipe.startswith("segalign") and recipe != "segalign-slicer":
        from segalign.cli import main

        extra = {
            "segalign": [],
            "segalign-overlays": ["--overlays", "--window", ",".join(str(v) for v in WINDOW)],
            "segalign-seg": ["--dicom-seg"],
            "segalign-seg-labelmap": ["--dicom-seg", "--dicom-seg-type", "labelmap"],
        }[recipe]
        code = main(["export", str(dicom), str(segmentation), "-o", str(out), "-q", *extra])
        raise SystemExit(code)
    if recipe.startswith("highdicom"):
        return _highdicom_recipe(dicom, segmentation, out, labelmap=recipe == "highdicom-labelmap")
    if recipe.startswith("sitk"):
        return _sitk_recipe(dicom, segmentation, out, overlays=recipe == "sitk-overlays")
    if recipe == "slicer":
        return _slicer_recipe(dicom, segmentation, out)
    if recipe == "segalign-slicer":
        return _segalign_slicer_recipe(dicom, segmentation, out)
    raise SystemExit(f"unknown recipe {recipe}")


def _sitk_recipe(dicom: Path, segmentation: Path, out: Path, overlays: bool) -> None:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    files = reader.GetGDCMSeriesFileNames(str(dicom))
    reader.SetFileNames(files)
    image = reader.Execute()
    labels = sitk.Resample(sitk.ReadImage(str(segmentation)), image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    out.mkdir(parents=True)
    if not overlays:
        for k, path in enumerate(files):
            sitk.WriteImage(labels[:, :, k], str(out / f"{Path(path).name}.png"))
        return
    from PIL import Image

    colors = _label_colors(segmentation)
    ct = sitk.GetArrayViewFromImage(image)
    label_array = sitk.GetArrayViewFromImage(labels)
    low = WINDOW[0] - WINDOW[1] / 2
    for k, path in enumerate(files):
        gray = np.clip((ct[k].astype(np.float32) - low) / WINDOW[1] * 255, 0, 255)
        rgb = np.repeat(gray[:, :, None], 3, axis=2)
        mask = label_array[k] > 0
        rgb[mask] = 0.6 * rgb[mask] + 0.4 * colors[label_array[k][mask]]
        Image.fromarray(rgb.astype(np.uint8)).save(out / f"{Path(path).name}.rgb.png")
        sitk.WriteImage(labels[:, :, k], str(out / f"{Path(path).name}.png"))


def _highdicom_recipe(dicom: Path, segmentation: Path, out: Path, labelmap: bool) -> None:
    """A DICOM SEG the way a user writes one today: SimpleITK for reading and resampling, pydicom for the source
    datasets, highdicom for the SEG. Prints its phases' wall seconds as JSON."""
    phases: dict[str, float] = {}
    peaks: dict[str, float] = {}  # the process's peak resident memory (VmHWM) at the end of each phase
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        phases[name] = now - clock
        peaks[name] = _peak_memory_mib()
        clock = now

    import highdicom as hd
    import pydicom
    import SimpleITK as sitk
    from pydicom.sr.codedict import codes

    lap("import_s")
    reader = sitk.ImageSeriesReader()
    files = reader.GetGDCMSeriesFileNames(str(dicom))
    reader.SetFileNames(files)
    image = reader.Execute()
    lap("read_series_s")
    labels = sitk.Resample(sitk.ReadImage(str(segmentation)), image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    array = sitk.GetArrayFromImage(labels)  # (frames, rows, columns), frame k = the volume's slice k
    del labels
    lap("resample_s")

    # The source datasets, with their pixel data, in the volume's slice order: along its third axis.
    sources = [pydicom.dcmread(path) for path in sorted(dicom.iterdir())]
    axis = np.array(image.GetDirection()).reshape(3, 3)[:, 2]
    sources.sort(key=lambda ds: float(np.dot(np.array(ds.ImagePositionPatient, dtype=float), axis)))
    for ds in sources:  # type 2 Patient and Study attributes a scanner writes (empty if unknown); the phantom has none
        for keyword in TYPE_2_PATIENT_STUDY:
            if keyword not in ds:
                setattr(ds, keyword, "")
    for k, ds in enumerate(sources):  # the pairing must be exact, or the SEG is wrong
        slice_origin = image.TransformIndexToPhysicalPoint((0, 0, k))
        if not np.allclose(np.array(ds.ImagePositionPatient, dtype=float), slice_origin, atol=1e-3):
            raise SystemExit(f"source {k} does not lie on slice {k} of the SimpleITK volume")
    lap("read_datasets_s")

    # One segment per label present, numbered 1..K (BINARY needs consecutive numbers), named from the class map.
    names = json.loads((segmentation.parent / "label_names.json").read_text())
    present = np.unique(array)
    present = present[present > 0]
    if not np.array_equal(present, np.arange(1, len(present) + 1)):
        lut = np.zeros(256, dtype=np.uint8)
        lut[present] = np.arange(1, len(present) + 1)
        array = lut[array]
    family = codes.cid7162.ArtificialIntelligence
    algorithm = hd.AlgorithmIdentificationSequence(name="TotalSegmentator", version="2", family=family)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=names.get(str(value), f"label {value}"),
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for number, value in enumerate(present.tolist(), start=1)
    ]
    syntax = LABELMAP_SYNTAXES[os.environ.get(SYNTAX_VARIABLE, "rle")] if labelmap else LABELMAP_SYNTAXES["explicit"]
    workers = int(os.environ.get(WORKERS_VARIABLE, "0"))
    lap("describe_s")
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=array,
        segmentation_type=hd.seg.SegmentationTypeValues.LABELMAP if labelmap else hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="SegAlign benchmark",
        manufacturer_model_name="highdicom recipe",
        software_versions=hd.__version__,
        device_serial_number="1",
        transfer_syntax_uid=syntax,
        omit_empty_frames=True,
        workers=workers,
    )
    lap("segmentation_s")
    out.mkdir(parents=True)
    seg.save_as(out / "seg.dcm")
    lap("save_as_s")
    syntax = str(seg.file_meta.TransferSyntaxUID)
    report = {"phases": phases, "phase_peaks_mib": peaks, "transfer_syntax": syntax, "workers": workers}
    print(json.dumps(report), flush=True)


def _label_colors(segmentation: Path) -> np.ndarray:
    import nibabel as nib
    from segalign.labels import embedded_label_table

    table = embedded_label_table(nib.load(str(segmentation)).header.extensions)
    colors = np.zeros((256, 3), dtype=np.float32)
    for value, label in table.items():
        colors[value] = label.color
    return colors


def _files_by_position(dicom: Path) -> list[str]:
    import pydicom

    headers = {str(p): pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["ImagePositionPatient"]) for p in dicom.iterdir()}
    return sorted(headers, key=lambda p: float(headers[p].ImagePositionPatient[2]))


def _slicer_recipe(dicom: Path, segmentation: Path, out: Path) -> None:
    import vtk
    import slicer.util
    from PIL import Image
    from headless_slicer import headless_slicer
    from slicer import vtkSlicerSegmentationsModuleLogic

    app = headless_slicer()
    files = _files_by_position(dicom)
    volume = app.load_dicom_files(files)
    labelmap = app.volumes.AddArchetypeVolume(str(segmentation), "segmentation", 1, vtk.vtkStringArray())
    node = app.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, node)
    exported = app.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    vtkSlicerSegmentationsModuleLogic.ExportVisibleSegmentsToLabelmapNode(node, exported, volume)
    array = slicer.util.arrayFromVolume(exported)
    out.mkdir(parents=True)
    for k, path in enumerate(files):
        Image.fromarray(array[k].astype(np.uint8)).save(out / f"{Path(path).name}.png")


def _segalign_slicer_recipe(dicom: Path, segmentation: Path, out: Path) -> None:
    from headless_slicer import headless_slicer
    from segalign.slicer_logic import SegAlignMRMLLogic

    app = headless_slicer()
    files = _files_by_position(dicom)
    volume = app.load_dicom_files(files)
    started = time.perf_counter()  # SegAlign's own part: what the panel's Import and Export buttons run
    logic = SegAlignMRMLLogic(app.scene)
    node = logic.import_segmentation(segmentation, volume)
    logic.export(node, volume, out)
    print(json.dumps({"logic_s": time.perf_counter() - started}))


# ------------------------------------------------------------------------------------------------ measuring


def measure(recipe: str, case: Path, out: Path) -> dict[str, float]:
    """Run one recipe as a child process; wall and CPU seconds and peak resident memory (MiB) of that process
    (its own VmHWM where /proc has it, else the parent's view of its ru_maxrss)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        child = subprocess.Popen([sys.executable, __file__, "run", recipe, str(case), str(out)], stdout=stdout, stderr=stderr)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        stdout.seek(0)
        stderr.seek(0)
        printed, errors = stdout.read().decode(errors="replace"), stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"recipe {recipe} failed:\n{errors[-2000:]}")
    result = {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_mib": usage.ru_maxrss / 1024}
    for line in printed.splitlines():
        if line.startswith("{"):
            result.update(json.loads(line))
    result["png_mb"] = sum(p.stat().st_size for p in out.rglob("*.png")) / 1e6 if out.exists() else 0.0
    segs = sorted(out.rglob("*.dcm")) if out.exists() else []
    if segs:
        result["seg_mb"] = sum(p.stat().st_size for p in segs) / 1e6
    return result


def _peak_memory_mib() -> float:
    """This process's peak resident memory so far (VmHWM), MiB; NaN without /proc."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return float("nan")
    return next((int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM:")), float("nan"))


def _report_peak_memory() -> None:
    """Print this process's own peak resident memory (VmHWM). The parent's ru_maxrss of a child also counts pages
    the child inherited from the (large) benchmark process before it exec'd, so it overstates the recipe."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            print(json.dumps({"peak_mib": int(line.split()[1]) / 1024}), flush=True)


def labels_by_file(recipe: str, out: Path) -> dict[str, np.ndarray]:
    from PIL import Image

    if recipe.startswith("segalign"):
        import csv

        with (out / "manifest.csv").open() as stream:
            rows = list(csv.DictReader(stream))
        return {Path(row["source_file"]).name: np.array(Image.open(out / row["label_png"])) for row in rows}
    return {p.name[: -len(".png")]: np.array(Image.open(p)) for p in out.glob("*.png") if not p.name.endswith(".rgb.png")}


def check_same_labels(outputs: dict[str, Path]) -> dict[str, dict]:
    """Per recipe, pixels of its label PNGs differing from SegAlign's (``png``, None if it writes none) and of the
    label images rebuilt from its DICOM SEG (``seg``, None if it writes none): both must be 0."""
    reference = labels_by_file("segalign", outputs["segalign"])
    reference_by_uid = _segalign_labels_by_uid(outputs["segalign"])
    checks: dict[str, dict] = {}
    for recipe, out in outputs.items():
        check: dict = {"png": None, "seg": None}
        if recipe not in ("highdicom-binary", "highdicom-labelmap"):
            labels = labels_by_file(recipe, out)
            if set(labels) != set(reference):
                raise RuntimeError(f"{recipe} wrote images for other files than segalign")
            check["png"] = int(sum(int((labels[name] != reference[name]).sum()) for name in reference))
        segs = sorted(out.rglob("*.dcm"))
        if recipe in SEG_RECIPES and len(segs) != 1:
            check.update(seg=-1, seg_problem=f"{len(segs)} .dcm files written, expected one SEG")
        elif segs:
            check.update(compare_seg(segs[0], reference_by_uid))
        checks[recipe] = check
    return checks


def _segalign_labels_by_uid(out: Path) -> dict[str, np.ndarray]:
    import csv

    from PIL import Image

    with (out / "manifest.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    if len({row["sop_instance_uid"] for row in rows}) != len(rows):
        raise RuntimeError("the case has multi-frame files: key the SEG check by (SOPInstanceUID, frame)")
    return {row["sop_instance_uid"]: np.array(Image.open(out / row["label_png"])) for row in rows}


def _label_names() -> dict[str, int]:
    from segalign.labels import builtin_table

    return {label.name: value for value, label in builtin_table("totalsegmentator").items() if 0 < value < 118}


def _segments(seg) -> list[tuple[int, str]]:
    """(SegmentNumber, SegmentLabel) of the segments, without a LABELMAP's background segment (number 0)."""
    items = [(int(item.SegmentNumber), str(getattr(item, "SegmentLabel", ""))) for item in seg.SegmentSequence]
    return [(number, label) for number, label in items if number != 0]


def _segment_values(seg, present: list[int]) -> tuple[dict[int, int], str]:
    """Segment number -> label value: by SegmentLabel (a TotalSegmentator name, or a number), else, when the SEG
    has one segment per label present, by segment order."""
    import re

    segments = _segments(seg)
    names = _label_names()
    if all(label in names for _, label in segments) and len({label for _, label in segments}) == len(segments):
        return {number: names[label] for number, label in segments}, "SegmentLabel (name)"
    numbers = [re.fullmatch(r"\D*(\d+)", label) for _, label in segments]
    if all(numbers):
        return {number: int(match.group(1)) for (number, _), match in zip(segments, numbers)}, "SegmentLabel (number)"
    if len(segments) == len(present):
        return {number: value for (number, _), value in zip(sorted(segments), present)}, "segment order"
    raise ValueError(f"cannot map {len(segments)} segments to the {len(present)} labels present")


def compare_seg(path: Path, reference: dict[str, np.ndarray]) -> dict:
    """Rebuild every source frame's label image from the SEG at ``path`` (frames keyed by their
    ReferencedSOPInstanceUID; frames a SEG omits are empty) and count pixels differing from ``reference``
    (SOPInstanceUID -> SegAlign's label image)."""
    import highdicom as hd

    seg = hd.seg.segread(path, lazy_frame_retrieval=True)
    counts = sum(np.bincount(labels.ravel(), minlength=256) for labels in reference.values())
    present = [int(value) for value in np.flatnonzero(counts) if value]
    result = {
        "seg_type": str(seg.SegmentationType), "seg_transfer_syntax": str(seg.file_meta.TransferSyntaxUID),
        "seg_frames": int(seg.NumberOfFrames), "seg_segments": len(_segments(seg)),
    }
    try:
        values, result["seg_mapping"] = _segment_values(seg, present)
    except ValueError as error:
        return {**result, "seg": -1, "seg_problem": str(error)}
    rows, columns = int(seg.Rows), int(seg.Columns)
    labelmap = seg.SegmentationType == "LABELMAP"
    lut = np.zeros(65536, dtype=np.uint16)
    for number, value in values.items():
        lut[number] = value
    rebuilt: dict[str, np.ndarray] = {}
    overlaps, unknown = 0, set()
    for index, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        uids = {
            str(source.ReferencedSOPInstanceUID)
            for derivation in item.get("DerivationImageSequence", [])
            for source in derivation.get("SourceImageSequence", [])
        }
        if len(uids) != 1:
            return {**result, "seg": -1, "seg_problem": f"frame {index + 1} references {len(uids)} source images"}
        uid = uids.pop()
        if uid not in reference:
            unknown.add(uid)
            continue
        frame = seg.get_stored_frame(index, as_index=True)
        image = rebuilt.setdefault(uid, np.zeros((rows, columns), dtype=np.uint16))
        mask = frame != 0
        overlaps += int((image[mask] != 0).sum())
        if labelmap:
            image[mask] = lut[frame[mask]]
        else:
            number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
            if number not in values:
                return {**result, "seg": -1, "seg_problem": f"frame {index + 1} has undescribed segment {number}"}
            image[mask] = values[number]
    if unknown:
        return {**result, "seg": -1, "seg_problem": f"{len(unknown)} frames reference images not in the series"}
    empty = np.zeros((rows, columns), dtype=np.uint16)
    differing = sum(int((rebuilt.get(uid, empty) != labels).sum()) for uid, labels in reference.items())
    result.update(seg=differing, seg_overlapping_pixels=overlaps, seg_source_frames=len(rebuilt))
    return result


def benchmark(work: Path, slices: int, repeats: int, recipes: list[str]) -> dict:
    import shutil

    if "segalign" not in recipes:  # the reference every recipe's labels are checked against
        recipes = ["segalign", *recipes]
    case = prepare_case(work, slices)
    write_label_names(case)
    segmentation_mib = _segmentation_mib(case)
    results: dict[str, list[dict[str, float]]] = {recipe: [] for recipe in recipes}
    outputs = {}
    with tempfile.TemporaryDirectory(dir=work) as scratch:
        for repeat in range(repeats):
            order = recipes if repeat % 2 == 0 else list(reversed(recipes))
            for recipe in order:
                out = Path(scratch) / f"{recipe}-{repeat}"
                results[recipe].append(measure(recipe, case, out))
                print(f"  N={slices} run {repeat + 1}/{repeats} {recipe:18s} {results[recipe][-1]['wall_s']:7.2f} s", file=sys.stderr)
                if recipe in outputs:  # only the last run's output is checked (SEGs at N = 1000 are large)
                    shutil.rmtree(outputs[recipe], ignore_errors=True)
                outputs[recipe] = out
        checks = check_same_labels(outputs)
    rows = {}
    base = statistics.median(r["wall_s"] for r in results.get("segalign", results[recipes[0]]))
    for recipe in recipes:
        wall = statistics.median(r["wall_s"] for r in results[recipe])
        rows[recipe] = {
            "wall_s": wall,
            "cpu_s": statistics.median(r["cpu_s"] for r in results[recipe]),
            "peak_mib": statistics.median(r["peak_mib"] for r in results[recipe]),
            "peak_beyond_segmentation_mib": statistics.median(r["peak_mib"] for r in results[recipe]) - segmentation_mib,
            "ratio_to_segalign": wall / base,
            "pixels_differing_from_segalign": checks[recipe]["png"],
            "seg_pixels_differing_from_segalign": checks[recipe]["seg"],
            "png_mb": statistics.median(r["png_mb"] for r in results[recipe]),
            **{key: value for key, value in checks[recipe].items() if key.startswith("seg_")},
        }
        if all("seg_mb" in r for r in results[recipe]):
            rows[recipe]["seg_mb"] = statistics.median(r["seg_mb"] for r in results[recipe])
        if all("phases" in r for r in results[recipe]):
            rows[recipe]["phases"] = {
                name: statistics.median(r["phases"][name] for r in results[recipe]) for name in results[recipe][0]["phases"]
            }
            rows[recipe]["phase_peaks_mib"] = {
                name: statistics.median(r["phase_peaks_mib"][name] for r in results[recipe])
                for name in results[recipe][0]["phase_peaks_mib"]
            }
            rows[recipe]["transfer_syntax"] = results[recipe][0]["transfer_syntax"]
            rows[recipe]["workers"] = results[recipe][0]["workers"]
        if all("logic_s" in r for r in results[recipe]):
            rows[recipe]["logic_s"] = statistics.median(r["logic_s"] for r in results[recipe])
            rows[recipe]["logic_ratio_to_segalign"] = rows[recipe]["logic_s"] / base
    return {"slices": slices, "repeats": repeats, "segmentation_mib": segmentation_mib, "recipes": rows}


def profile(recipe: str, case: Path, work: Path, top: int = 15) -> None:
    """Run ``recipe`` once in a child process under cProfile; print its printed phases and the top functions by
    cumulative time (the profiler slows Python-heavy code, so compare the phases, not these totals, with the table)."""
    import pstats

    with tempfile.TemporaryDirectory(dir=work) as scratch:
        stats = Path(scratch) / "profile.stats"
        child = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(stats), __file__, "run", recipe, str(case),
                                str(Path(scratch) / "out")], check=False, capture_output=True, text=True)
        if child.returncode != 0:
            raise RuntimeError(f"recipe {recipe} failed:\n{child.stderr[-2000:]}")
        print(f"== {recipe}, N = {case.name}, {WORKERS_VARIABLE}={os.environ.get(WORKERS_VARIABLE)}")
        for line in child.stdout.splitlines():
            if line.startswith("{"):
                print(line)
        print(f"-- top {top} library functions by cumulative time (the recipe's own frames left out)")
        pstats.Stats(str(stats)).sort_stats("cumulative").print_stats(r"site-packages|built-in", top)
        print(f"-- top {top} by own time")
        pstats.Stats(str(stats)).sort_stats("tottime").print_stats(top)


def _segmentation_mib(case: Path) -> float:
    import nibabel as nib

    image = nib.load(str(case / "segmentation.nii.gz"))
    return float(np.prod(image.shape)) * image.get_data_dtype().itemsize / 2**20


SYNTAX_NAMES = {
    "1.2.840.10008.1.2.1": "Explicit VR Little Endian (uncompressed)", "1.2.840.10008.1.2": "Implicit VR Little Endian",
    "1.2.840.10008.1.2.5": "RLE Lossless", "1.2.840.10008.1.2.4.80": "JPEG-LS Lossless",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 Lossless",
}


def _differing(count: int | None, problem: str | None = None) -> str:
    if count is None:
        return ""
    if count < 0:
        return f"**not checked: {problem}**"
    return str(count) if count == 0 else f"**{count} DIFFER**"


def table(report: dict) -> str:
    lines = [
        f"N = {report['slices']} slices of 512 x 512, 117 labels, segmentation array {report['segmentation_mib']:.0f} MiB; "
        f"median of {report['repeats']} runs",
        (
            "| recipe | wall s | CPU s | peak MiB | peak beyond segmentation MiB | output MB | wall / segalign | "
            "pixels differing | SEG pixels differing |"
        ),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for recipe, row in report["recipes"].items():
        output = f"{row['seg_mb']:.1f} SEG" if "seg_mb" in row else (f"{row['png_mb']:.1f} PNG" if row["png_mb"] else "")
        lines.append(
            f"| {recipe} | {row['wall_s']:.2f} | {row['cpu_s']:.2f} | {row['peak_mib']:.0f} | "
            f"{row['peak_beyond_segmentation_mib']:.0f} | {output} | {row['ratio_to_segalign']:.2f} | "
            f"{_differing(row['pixels_differing_from_segalign'])} | "
            f"{_differing(row['seg_pixels_differing_from_segalign'], row.get('seg_problem'))} |"
        )
    for recipe, row in report["recipes"].items():
        if "seg_type" in row:
            syntax = SYNTAX_NAMES.get(row["seg_transfer_syntax"], row["seg_transfer_syntax"])
            lines.append(
                f"\n{recipe}: {row['seg_type']} SEG, {syntax}, {row['seg_frames']} frames, {row['seg_segments']} segments, "
                f"{row.get('seg_source_frames', '?')} source frames labelled; segments mapped to labels by "
                f"{row.get('seg_mapping', '?')}."
            )
        if "phases" in row:
            phases = ", ".join(f"{name[:-2].replace('_', ' ')} {seconds:.2f}" for name, seconds in row["phases"].items())
            peaks = ", ".join(f"{name[:-2].replace('_', ' ')} {mib:.0f}" for name, mib in row["phase_peaks_mib"].items())
            lines.append(f"{recipe} phases (s): {phases}; workers={row['workers']}.")
            lines.append(f"{recipe} peak memory at the end of each phase (MiB): {peaks}.")
    for recipe, row in report["recipes"].items():
        if "logic_s" in row:
            lines.append(
                f"\n{recipe}: SegAlign's own part (import the NIfTI as a segmentation node, export it) took "
                f"{row['logic_s']:.2f} s, {row['logic_ratio_to_segalign']:.2f} x the command line's whole run; the rest "
                "of its wall time is Slicer loading the DICOM series as a volume and Python importing Slicer."
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "run":
        atexit.register(_report_peak_memory)
        run_recipe(argv[1], Path(argv[2]), Path(argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, nargs="+", default=[300])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--recipes", nargs="+", default=RECIPES, choices=RECIPES)
    parser.add_argument("--work", type=Path, default=Path("benchmark-results"), help="cases and results (default ./benchmark-results)")
    parser.add_argument("--highdicom-workers", type=int, default=0,
                        help="highdicom's workers for the highdicom recipes (default 0)")
    parser.add_argument("--labelmap-syntax", choices=sorted(LABELMAP_SYNTAXES), default="rle",
                        help="transfer syntax of highdicom-labelmap (default rle)")
    parser.add_argument("--profile", action="store_true",
                        help="instead of measuring, run each recipe once under cProfile and print its top 15 functions")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ[WORKERS_VARIABLE] = str(args.highdicom_workers)
    os.environ[SYNTAX_VARIABLE] = args.labelmap_syntax
    if args.profile:
        for slices in args.slices:
            case = prepare_case(args.work, slices)
            write_label_names(case)
            for recipe in args.recipes:
                profile(recipe, case, args.work)
        return 0
    reports = []
    for slices in args.slices:
        print(f"preparing N={slices}...", file=sys.stderr)
        reports.append(benchmark(args.work, slices, args.repeats, args.recipes))
        print(table(reports[-1]) + "\n")
    machine = {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine()}
    (args.work / "benchmark.json").write_text(json.dumps({"machine": machine, "runs": reports}, indent=2) + "\n")
    print(f"written {args.work / 'benchmark.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
