"""SegAlign against the recipes users would write instead: wall time, CPU time and peak memory, side by side.

    python Testing/benchmark/benchmark.py                      # N = 300, 3 repetitions
    python Testing/benchmark/benchmark.py --slices 300 1000    # and the memory-flatness check at N = 1000

For each N it generates (once, cached under --work) a 512 x 512 x N CT series with InstanceNumber counting down and a
117-label TotalSegmentator-like segmentation on a 1.5 mm LAS grid, then runs every recipe as its own process,
alternating the order over the repetitions, and reports medians. Every recipe's label images are compared with
SegAlign's, file by file, so no recipe wins by being wrong. The table is printed and written as JSON.

Recipes:
  segalign           segalign export (label PNGs only)
  segalign-overlays  segalign export --overlays
  sitk               SimpleITK: ImageSeriesReader + Resample (nearest) onto the series + one PNG per slice
  sitk-overlays      the same, plus windowing the CT and blending the labels with numpy, RGB PNG per slice
  slicer             slicer-core: AddArchetypeVolume, import the segmentation, ExportVisibleSegmentsToLabelmapNode
                     with the series as reference, one PNG per slice
  segalign-slicer    SegAlign's Slicer logic on slicer-core (import, then export per original frame)
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

RECIPES = ["segalign", "segalign-overlays", "sitk", "sitk-overlays", "slicer", "segalign-slicer"]
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


# ------------------------------------------------------------------------------------------------ recipes (child processes)


def run_recipe(recipe: str, case: Path, out: Path) -> None:
    dicom, segmentation = case / "dicom", case / "segmentation.nii.gz"
    if recipe.startswith("segalign") and recipe != "segalign-slicer":
        from segalign.cli import main

        extra = ["--overlays", "--window", ",".join(str(v) for v in WINDOW)] if recipe == "segalign-overlays" else []
        code = main(["export", str(dicom), str(segmentation), "-o", str(out), "-q", *extra])
        raise SystemExit(code)
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
    return result


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


def check_same_labels(outputs: dict[str, Path]) -> dict[str, int]:
    """Pixels differing from SegAlign's labels, per recipe (must be 0)."""
    reference = labels_by_file("segalign", outputs["segalign"])
    differences = {}
    for recipe, out in outputs.items():
        labels = labels_by_file(recipe, out)
        if set(labels) != set(reference):
            raise RuntimeError(f"{recipe} wrote images for other files than segalign")
        differences[recipe] = int(sum(int((labels[name] != reference[name]).sum()) for name in reference))
    return differences


def benchmark(work: Path, slices: int, repeats: int, recipes: list[str]) -> dict:
    case = prepare_case(work, slices)
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
                outputs[recipe] = out
        differences = check_same_labels(outputs)
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
            "pixels_differing_from_segalign": differences[recipe],
        }
        if all("logic_s" in r for r in results[recipe]):
            rows[recipe]["logic_s"] = statistics.median(r["logic_s"] for r in results[recipe])
            rows[recipe]["logic_ratio_to_segalign"] = rows[recipe]["logic_s"] / base
    return {"slices": slices, "repeats": repeats, "segmentation_mib": segmentation_mib, "recipes": rows}


def _segmentation_mib(case: Path) -> float:
    import nibabel as nib

    image = nib.load(str(case / "segmentation.nii.gz"))
    return float(np.prod(image.shape)) * image.get_data_dtype().itemsize / 2**20


def table(report: dict) -> str:
    lines = [
        f"N = {report['slices']} slices of 512 x 512, 117 labels, segmentation array {report['segmentation_mib']:.0f} MiB; "
        f"median of {report['repeats']} runs",
        "| recipe | wall s | CPU s | peak MiB | peak beyond segmentation MiB | wall / segalign | pixels differing |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for recipe, row in report["recipes"].items():
        lines.append(
            f"| {recipe} | {row['wall_s']:.2f} | {row['cpu_s']:.2f} | {row['peak_mib']:.0f} | "
            f"{row['peak_beyond_segmentation_mib']:.0f} | {row['ratio_to_segalign']:.2f} | {row['pixels_differing_from_segalign']} |"
        )
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
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
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
