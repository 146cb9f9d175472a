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
  rtutils            what a user writes for an RTSTRUCT today: SimpleITK reads the series and resamples the NIfTI
                     (nearest) onto it, rt_utils.RTStructBuilder.create_new(dicom_series_path=...), one add_roi per
                     label present (a bool mask in rt-utils' (rows, columns, slices) layout, slices in rt-utils' own
                     order), save
  segalign-rtstruct  segalign export --rtstruct (label PNGs and rtstruct.dcm)

An RTSTRUCT is checked by rasterising every ROI's contours back onto the frames they reference (ContourData mapped
into the frame's pixel (row, column) coordinates through its IPP, IOP and PixelSpacing; even-odd rule at the pixel
centres; the contours of one ROI on one frame XORed) and comparing each ROI with SegAlign's label PNG of that frame
(label == the ROI's label value, mapped from ROIName through the TotalSegmentator names). SegAlign's contours follow
the pixel edges and must match exactly; rt-utils' pass through the pixel centres (cv2.findContours), so its count is
reported, with its share of SegAlign's labelled pixels, not judged.

The highdicom recipes print their phases (read the series, resample, read the datasets, Segmentation(), save_as),
the rtutils recipe its own (read and resample, create_new, the masks, add_roi, save);
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
    "highdicom-binary", "highdicom-labelmap", "segalign-seg", "segalign-seg-labelmap", "rtutils", "segalign-rtstruct",
]
SEG_RECIPES = ("highdicom-binary", "highdicom-labelmap", "segalign-seg", "segalign-seg-labelmap")
RTSTRUCT_RECIPES = ("rtutils", "segalign-rtstruct")
NO_PNG_RECIPES = ("highdicom-binary", "highdicom-labelmap", "rtutils")  # they write a DICOM object only
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
    from segalign.segmentation import FrameSampler, builtin_table
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
    SegmentLabels and the rtutils recipe's ROINames: ``label_names.json``, ``{"1": "spleen", ...}``; and their
    colours (the ones the NIfTI's label table has), for the rtutils recipe's ROIDisplayColors: ``label_colors.json``,
    ``{"1": [85, 131, 242], ...}`` (both written beside a case made before they existed)."""
    path, colors = case / "label_names.json", case / "label_colors.json"
    if not path.exists() or not colors.exists():
        from segalign.segmentation import builtin_table

        table = {value: label for value, label in builtin_table("totalsegmentator").items() if 0 < value < 118}
        if not path.exists():
            path.write_text(json.dumps({str(value): label.name for value, label in table.items()}, indent=1) + "\n")
        if not colors.exists():
            colors.write_text(json.dumps({str(value): list(label.color) for value, label in table.items()}) + "\n")
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
            "segalign-rtstruct": ["--rtstruct"],
        }[recipe]
        code = main(["export", str(dicom), str(segmentation), "-o", str(out), "-q", *extra])
        raise SystemExit(code)
    if recipe == "rtutils":
        return _rtutils_recipe(dicom, segmentation, out)
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


class _Phases:
    """A recipe's phases: wall seconds of each, and the process's peak resident memory (VmHWM) at its end."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self.peaks: dict[str, float] = {}
        self.clock = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.phases[name] = now - self.clock
        self.peaks[name] = _peak_memory_mib()
        self.clock = now


def _sitk_series(dicom: Path):
    """The series as SimpleITK's ImageSeriesReader reads it (GDCM's file order), as the recipes' users do."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(dicom)))
    return reader.Execute()


def _sitk_resampled(segmentation: Path, image) -> np.ndarray:
    """The segmentation resampled (nearest neighbour) onto ``image``: (slices, rows, columns), uint8."""
    import SimpleITK as sitk

    labels = sitk.Resample(sitk.ReadImage(str(segmentation)), image, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                           sitk.sitkUInt8)
    return sitk.GetArrayFromImage(labels)


def _highdicom_recipe(dicom: Path, segmentation: Path, out: Path, labelmap: bool) -> None:
    """A DICOM SEG the way a user writes one today: SimpleITK for reading and resampling, pydicom for the source
    datasets, highdicom for the SEG. Prints its phases' wall seconds as JSON."""
    timer = _Phases()
    phases, peaks, lap = timer.phases, timer.peaks, timer.lap

    import highdicom as hd
    import pydicom
    import SimpleITK  # noqa: F401 (imported here, so that import_s counts it)
    from pydicom.sr.codedict import codes

    lap("import_s")
    image = _sitk_series(dicom)
    lap("read_series_s")
    array = _sitk_resampled(segmentation, image)  # (frames, rows, columns), frame k = the volume's slice k
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


def _rtutils_recipe(dicom: Path, segmentation: Path, out: Path) -> None:
    """An RTSTRUCT the way a user writes one today with rt-utils: SimpleITK for reading and resampling, rt-utils for
    the contours and the file. Prints its phases' wall seconds (and the peak memory after each) as JSON."""
    timer = _Phases()
    phases, peaks, lap = timer.phases, timer.peaks, timer.lap

    import SimpleITK  # noqa: F401 (imported here, so that import_s counts it)
    from rt_utils import RTStructBuilder, image_helper

    lap("import_s")
    image = _sitk_series(dicom)
    array = _sitk_resampled(segmentation, image)  # (slices, rows, columns), slice k = the SimpleITK volume's slice k
    lap("read_resample_s")

    # create_new reads StudyDate, StudyTime and StudyID of the first image without a default; the synthetic series
    # has none (they are type 2), so its loader is wrapped to set them empty, as a scanner writes them when unknown.
    load = image_helper.load_sorted_image_series

    def load_with_study_attributes(path):
        series = load(path)
        for ds in series:
            for keyword in ("StudyDate", "StudyTime", "StudyID"):
                if keyword not in ds:
                    setattr(ds, keyword, "")
        return series

    image_helper.load_sorted_image_series = load_with_study_attributes
    rtstruct = RTStructBuilder.create_new(dicom_series_path=str(dicom))
    lap("create_new_s")

    # rt-utils' mask is (rows, columns, slices), slice i = rtstruct.series_data[i] (sorted by IPP along the normal):
    # find each dataset's slice of the SimpleITK volume, and refuse to go on unless every one lies on a slice.
    order = []
    for i, ds in enumerate(rtstruct.series_data):
        position = [float(v) for v in ds.ImagePositionPatient]
        k = round(image.TransformPhysicalPointToContinuousIndex(position)[2])
        if not (0 <= k < image.GetDepth()) or not np.allclose(image.TransformIndexToPhysicalPoint((0, 0, k)), position, atol=1e-3):
            raise SystemExit(f"rt-utils' slice {i} lies on no slice of the SimpleITK volume")
        order.append(k)
    if sorted(order) != list(range(image.GetDepth())):
        raise SystemExit("rt-utils' slices and the SimpleITK volume's do not pair one to one")
    volume = array[order].transpose(1, 2, 0)  # (rows, columns, slices), a view: each slice stays contiguous
    del array
    names = json.loads((segmentation.parent / "label_names.json").read_text())
    colors = json.loads((segmentation.parent / "label_colors.json").read_text())
    lap("pair_slices_s")
    present = [int(value) for value in np.unique(volume) if value > 0]
    lap("labels_present_s")

    masks_s = add_roi_s = 0.0
    for value in present:
        started = time.perf_counter()
        mask = volume == value
        added = time.perf_counter()
        rtstruct.add_roi(mask=mask, name=names.get(str(value), f"label {value}"), color=colors.get(str(value)))
        masks_s, add_roi_s = masks_s + added - started, add_roi_s + time.perf_counter() - added
        del mask
    lap("masks_and_add_roi_s")
    phases["masks_s"], phases["add_roi_s"] = masks_s, add_roi_s
    peaks["masks_s"] = peaks["add_roi_s"] = peaks.pop("masks_and_add_roi_s")
    del phases["masks_and_add_roi_s"]
    out.mkdir(parents=True)
    rtstruct.save(str(out / "rtstruct.dcm"))
    lap("save_s")
    print(json.dumps({"phases": phases, "phase_peaks_mib": peaks, "rois": len(present)}), flush=True)


def _label_colors(segmentation: Path) -> np.ndarray:
    import nibabel as nib
    from segalign.segmentation import embedded_label_table

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
    from segalign.mrml import SegAlignMRMLLogic

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
    objects = sorted(out.rglob("*.dcm")) if out.exists() else []
    if objects:
        result["rtstruct_mb" if recipe in RTSTRUCT_RECIPES else "seg_mb"] = sum(p.stat().st_size for p in objects) / 1e6
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


def check_same_labels(outputs: dict[str, Path], case: Path) -> dict[str, dict]:
    """Per recipe, pixels of its label PNGs differing from SegAlign's (``png``, None if it writes none), of the
    label images rebuilt from its DICOM SEG (``seg``, None if it writes none): both must be 0; and of its
    RTSTRUCT's ROIs rasterised on their frames (``rtstruct``, None if it writes none; see compare_rtstruct)."""
    reference = labels_by_file("segalign", outputs["segalign"])
    reference_by_uid = _segalign_labels_by_uid(outputs["segalign"])
    checks: dict[str, dict] = {}
    for recipe, out in outputs.items():
        check: dict = {"png": None, "seg": None, "rtstruct": None}
        if recipe in RTSTRUCT_RECIPES:
            if recipe not in NO_PNG_RECIPES:
                labels = labels_by_file(recipe, out)
                if set(labels) != set(reference):
                    raise RuntimeError(f"{recipe} wrote images for other files than segalign")
                check["png"] = int(sum(int((labels[name] != reference[name]).sum()) for name in reference))
            objects = sorted(out.rglob("*.dcm"))
            if len(objects) != 1:
                check.update(rtstruct=-1, rtstruct_problem=f"{len(objects)} .dcm files written, expected one RTSTRUCT")
            else:
                check.update(compare_rtstruct(objects[0], reference_by_uid, _frame_geometry(case / "dicom")))
            checks[recipe] = check
            continue
        if recipe not in NO_PNG_RECIPES:
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
    from segalign.segmentation import builtin_table

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


RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
#: What segalign --rtstruct must meet against the rtutils recipe: wall time ratio, and peak memory.
RTSTRUCT_TARGET_WALL, RTSTRUCT_TARGET_PEAK_MIB = 0.3, 300


def _frame_geometry(dicom: Path) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """SOPInstanceUID -> (ImagePositionPatient, row direction IOP[:3], column direction IOP[3:], PixelSpacing
    (between rows, between columns)) of every image of the series."""
    import pydicom

    keywords = ["SOPInstanceUID", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"]
    geometry = {}
    for path in dicom.rglob("*"):
        if path.is_file():
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=keywords)
            orientation = np.array(ds.ImageOrientationPatient, dtype=float)
            geometry[str(ds.SOPInstanceUID)] = (
                np.array(ds.ImagePositionPatient, dtype=float), orientation[:3], orientation[3:],
                np.array(ds.PixelSpacing, dtype=float),
            )
    return geometry


def _contour_points(contour) -> np.ndarray:
    """ContourData as an (n, 3) float array, parsed from the raw bytes where pydicom has not converted them (pydicom
    makes a DSfloat of every number, slow for 10^6 of them)."""
    element = contour.get_item(0x30060050)
    if element is None:
        return np.zeros((0, 3))
    value = element.value
    if isinstance(value, (bytes, bytearray)):
        text = bytes(value).strip(b" \x00")
        numbers = np.array(text.split(b"\\")).astype(np.float64) if text else np.zeros(0)
    else:
        numbers = np.asarray(contour.ContourData, dtype=np.float64).ravel()
    if numbers.size % 3:
        raise ValueError(f"ContourData has {numbers.size} values, not a multiple of 3")
    return numbers.reshape(-1, 3)


def even_odd(polygons: list[np.ndarray], rows: int, columns: int) -> np.ndarray:
    """The pixels whose centres (integer (row, column)) lie inside the XOR of ``polygons`` ((n, 2) arrays of
    (row, column) vertices, each implicitly closed), by the even-odd rule, vectorised: every edge crosses the rows
    R with min <= R < max of its end rows (half-open, so a vertex on a row counts once), and a pixel is inside when
    an odd number of crossings lies at or left of its centre. A centre exactly on an edge is therefore inside on a
    left or top edge and outside on a right or bottom one."""
    if not polygons:
        return np.zeros((rows, columns), dtype=bool)
    start = np.concatenate(polygons)
    end = np.concatenate([np.roll(p, -1, axis=0) for p in polygons])
    r1, c1, r2, c2 = start[:, 0], start[:, 1], end[:, 0], end[:, 1]
    first = np.clip(np.ceil(np.minimum(r1, r2)), 0, rows)
    last = np.clip(np.ceil(np.maximum(r1, r2)), 0, rows)  # exclusive
    counts = (last - first).astype(np.int64)
    edge = np.repeat(np.arange(len(counts)), counts)
    row = first[edge] + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
    column = c1[edge] + (row - r1[edge]) * (c2[edge] - c1[edge]) / (r2[edge] - r1[edge])
    column = np.clip(np.ceil(column), 0, columns).astype(np.int64)
    crossings = np.bincount(row.astype(np.int64) * (columns + 1) + column, minlength=rows * (columns + 1))
    return (np.cumsum(crossings.reshape(rows, columns + 1)[:, :columns], axis=1) & 1).astype(bool)


def even_odd_closed(polygons: list[np.ndarray], rows: int, columns: int) -> np.ndarray:
    """``even_odd`` with a pixel whose centre lies on a contour counted as inside, whichever side of it the region
    is: the union of the fills under the four mirrored tie rules (top-left, top-right, bottom-left, bottom-right)."""
    inside = np.zeros((rows, columns), dtype=bool)
    for flip_rows in (False, True):
        for flip_columns in (False, True):
            mirrored = [
                np.stack([rows - 1 - p[:, 0] if flip_rows else p[:, 0], columns - 1 - p[:, 1] if flip_columns else p[:, 1]], axis=1)
                for p in polygons
            ]
            inside |= even_odd(mirrored, rows, columns)[:: -1 if flip_rows else 1, :: -1 if flip_columns else 1]
    return inside


def _plane_distance(points: np.ndarray, frame: tuple) -> float:
    """The farthest of ``points`` from the plane of ``frame`` (a ``_frame_geometry`` value), mm."""
    position, row_direction, column_direction, _ = frame
    return float(np.abs((points - position) @ np.cross(row_direction, column_direction)).max(initial=0.0))


def _roi_values(rois: dict[int, str]) -> tuple[dict[int, int], str]:
    """ROINumber -> label value: by ROIName (a TotalSegmentator name, or a number), else by ROINumber."""
    import re

    names = _label_names()
    if all(name in names for name in rois.values()) and len(set(rois.values())) == len(rois):
        return {number: names[name] for number, name in rois.items()}, "ROIName (name)"
    numbers = {number: re.fullmatch(r"\D*(\d+)", name) for number, name in rois.items()}
    if all(numbers.values()):
        return {number: int(match.group(1)) for number, match in numbers.items()}, "ROIName (number)"
    return {number: number for number in rois}, "ROINumber"


def compare_rtstruct(path: Path, reference: dict[str, np.ndarray], geometry: dict) -> dict:
    """Rasterise every ROI of the RTSTRUCT at ``path`` on each frame its contours reference (``even_odd`` of the
    contours mapped into the frame's pixel coordinates through ``geometry``, SOPInstanceUID -> IPP, IOP,
    PixelSpacing; the contours of one ROI on one frame XORed) and count the pixels where ``label == the ROI's
    value`` in ``reference`` (SOPInstanceUID -> SegAlign's label image) differs from the ROI: ``rtstruct`` in all,
    ``rtstruct_missing`` (labelled, outside the ROI) and ``rtstruct_extra`` (inside the ROI, not labelled so), out
    of ``rtstruct_labelled`` labelled pixels. A labelled (label, frame) with no contour counts as missing.
    ``rtstruct_closed`` counts the same with a pixel centre on a contour counted as inside (``even_odd_closed``):
    it equals ``rtstruct`` when no centre lies on a contour (SegAlign's contours follow the pixel edges), and tells
    how much of the difference is the tie rule when the contours run through pixel centres (rt-utils')."""
    import pydicom

    ds = pydicom.dcmread(path)
    result: dict = {"rtstruct_sop_class": str(ds.get("SOPClassUID", ""))}
    if result["rtstruct_sop_class"] != RTSTRUCT_SOP_CLASS:
        return {**result, "rtstruct": -1, "rtstruct_problem": f"SOPClassUID {ds.get('SOPClassUID')} is not RTSTRUCT"}
    rois = {int(item.ROINumber): str(item.get("ROIName", "")) for item in ds.get("StructureSetROISequence", [])}
    values, result["rtstruct_mapping"] = _roi_values(rois)
    polygons: dict[tuple[int, str], list[np.ndarray]] = {}
    contours = points = 0
    off_plane = 0.0
    types: set[str] = set()
    for roi in ds.get("ROIContourSequence", []):
        number = int(roi.ReferencedROINumber)
        if number not in values:
            return {**result, "rtstruct": -1, "rtstruct_problem": f"ROIContourSequence references undescribed ROI {number}"}
        for contour in roi.get("ContourSequence", []):
            xyz = _contour_points(contour)
            types.add(str(contour.get("ContourGeometricType", "")))
            images = contour.get("ContourImageSequence", [])
            if len(images) == 1:
                uid = str(images[0].ReferencedSOPInstanceUID)
                if uid not in geometry:
                    return {**result, "rtstruct": -1, "rtstruct_problem": f"a contour references {uid}, not in the series"}
            else:  # no (or an ambiguous) reference: the frame whose plane holds the points
                uid = min(geometry, key=lambda frame, xyz=xyz: _plane_distance(xyz, geometry[frame]))
            position, row_direction, column_direction, spacing = geometry[uid]
            offset = xyz - position
            off_plane = max(off_plane, _plane_distance(xyz, geometry[uid]))
            pixel = np.stack([offset @ column_direction / spacing[0], offset @ row_direction / spacing[1]], axis=1)
            polygons.setdefault((values[number], uid), []).append(np.round(pixel, 4))
            contours, points = contours + 1, points + len(xyz)
    result.update(
        rtstruct_rois=len(rois), rtstruct_contours=contours, rtstruct_points=points,
        rtstruct_frames=len({uid for _, uid in polygons}), rtstruct_off_plane_mm=off_plane,
        rtstruct_contour_types=sorted(types),
    )
    if types - {"CLOSED_PLANAR"}:
        return {**result, "rtstruct": -1, "rtstruct_problem": f"contour types {sorted(types)}, not CLOSED_PLANAR only"}
    missing = extra = labelled = closed = 0
    for uid, labels in reference.items():
        counts = np.bincount(labels.ravel(), minlength=256)
        labelled += int(counts[1:].sum())
        drawn = {value for value, frame in polygons if frame == uid}
        undrawn = int(sum(counts[value] for value in np.flatnonzero(counts) if value and value not in drawn))
        missing, closed = missing + undrawn, closed + undrawn
        for value in drawn:
            truth = labels == value
            mask = even_odd(polygons[value, uid], *labels.shape)
            missing += int((truth & ~mask).sum())
            extra += int((mask & ~truth).sum())
            closed += int((even_odd_closed(polygons[value, uid], *labels.shape) != truth).sum())
    result.update(rtstruct=missing + extra, rtstruct_missing=missing, rtstruct_extra=extra, rtstruct_labelled=labelled,
                  rtstruct_closed=closed)
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
        checks = check_same_labels(outputs, case)
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
            "rtstruct_pixels_differing_from_segalign": checks[recipe]["rtstruct"],
            "png_mb": statistics.median(r["png_mb"] for r in results[recipe]),
            **{key: value for key, value in checks[recipe].items() if key.startswith(("seg_", "rtstruct_"))},
        }
        for size in ("seg_mb", "rtstruct_mb"):
            if all(size in r for r in results[recipe]):
                rows[recipe][size] = statistics.median(r[size] for r in results[recipe])
        if all("phases" in r for r in results[recipe]):
            rows[recipe]["phases"] = {
                name: statistics.median(r["phases"][name] for r in results[recipe]) for name in results[recipe][0]["phases"]
            }
            rows[recipe]["phase_peaks_mib"] = {
                name: statistics.median(r["phase_peaks_mib"][name] for r in results[recipe])
                for name in results[recipe][0]["phase_peaks_mib"]
            }
            for key in ("transfer_syntax", "workers", "rois"):
                if key in results[recipe][0]:
                    rows[recipe][key] = results[recipe][0][key]
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


def _rtstruct_differing(row: dict) -> str:
    """SegAlign's RTSTRUCT must match exactly (``n DIFFER`` otherwise); rt-utils' is reported as a count and its
    share of SegAlign's labelled pixels."""
    count = row.get("rtstruct_pixels_differing_from_segalign")
    if count is None or count < 0 or row.get("recipe_kind") != "reported":
        return _differing(count, row.get("rtstruct_problem"))
    share = 100 * count / row["rtstruct_labelled"] if row.get("rtstruct_labelled") else float("nan")
    return f"{count:,} ({share:.1f} %)"


def table(report: dict) -> str:
    rtstruct = any(row.get("rtstruct_pixels_differing_from_segalign") is not None for row in report["recipes"].values())
    lines = [
        f"N = {report['slices']} slices of 512 x 512, 117 labels, segmentation array {report['segmentation_mib']:.0f} MiB; "
        f"median of {report['repeats']} runs",
        (
            "| recipe | wall s | CPU s | peak MiB | peak beyond segmentation MiB | output MB | wall / segalign | "
            "pixels differing | SEG pixels differing |" + (" RTSTRUCT pixels differing |" if rtstruct else "")
        ),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |" + (" ---: |" if rtstruct else ""),
    ]
    for recipe, row in report["recipes"].items():
        if "rtstruct_mb" in row:
            output = f"{row['rtstruct_mb']:.1f} RTSTRUCT"
        elif "seg_mb" in row:
            output = f"{row['seg_mb']:.1f} SEG"
        else:
            output = f"{row['png_mb']:.1f} PNG" if row["png_mb"] else ""
        row = {**row, "recipe_kind": "reported" if recipe == "rtutils" else "exact"}
        lines.append(
            f"| {recipe} | {row['wall_s']:.2f} | {row['cpu_s']:.2f} | {row['peak_mib']:.0f} | "
            f"{row['peak_beyond_segmentation_mib']:.0f} | {output} | {row['ratio_to_segalign']:.2f} | "
            f"{_differing(row['pixels_differing_from_segalign'])} | "
            f"{_differing(row['seg_pixels_differing_from_segalign'], row.get('seg_problem'))} |"
            + (f" {_rtstruct_differing(row)} |" if rtstruct else "")
        )
    rows = report["recipes"]
    if "rtutils" in rows and "segalign-rtstruct" in rows:
        ratio = rows["segalign-rtstruct"]["wall_s"] / rows["rtutils"]["wall_s"]
        peak = rows["segalign-rtstruct"]["peak_mib"]
        lines.append(
            f"\nsegalign-rtstruct against rtutils: wall {ratio:.2f} x (target at most {RTSTRUCT_TARGET_WALL} x: "
            f"{'met' if ratio <= RTSTRUCT_TARGET_WALL else 'MISSED'}), peak {peak:.0f} MiB (target at most "
            f"{RTSTRUCT_TARGET_PEAK_MIB} MiB: {'met' if peak <= RTSTRUCT_TARGET_PEAK_MIB else 'MISSED'})."
        )
    for recipe, row in report["recipes"].items():
        if row.get("rtstruct_rois") is not None:
            lines.append(
                f"\n{recipe}: RTSTRUCT with {row['rtstruct_rois']} ROIs, {row['rtstruct_contours']:,} contours, "
                f"{row['rtstruct_points']:,} points on {row['rtstruct_frames']} frames (farthest point "
                f"{row['rtstruct_off_plane_mm']:.1e} mm off its frame's plane); ROIs mapped to labels by "
                f"{row.get('rtstruct_mapping', '?')}; rasterised against SegAlign's PNGs: "
                f"{row['rtstruct_missing']:,} labelled pixels outside their ROI, {row['rtstruct_extra']:,} ROI pixels "
                f"not so labelled, of {row['rtstruct_labelled']:,} labelled pixels; {row['rtstruct_closed']:,} differing "
                "if a pixel centre on a contour counts as inside."
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
            workers = f"; workers={row['workers']}" if "workers" in row else ""
            lines.append(f"{recipe} phases (s): {phases}{workers}.")
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
