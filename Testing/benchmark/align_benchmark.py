"""``segalign.align(dicom, segmentation).labels`` against the SimpleITK recipe a notebook user writes instead: time,
CPU and memory, side by side, on benchmark.py's case (512 x 512 x N CT, 117 TotalSegmentator labels on a 1.5 mm LAS
grid, InstanceNumber counting down, files in random name order).

    python Testing/benchmark/align_benchmark.py                   # N = 300, 3 repetitions
    python Testing/benchmark/align_benchmark.py --slices 300 1000
    python Testing/benchmark/align_benchmark.py --profile         # align's steps, and cProfile's top 25

Recipes, each run as its own child process (alternating the order over the repetitions), each giving the labels of
every frame as one (frames, rows, columns) array in InstanceNumber order:

  align         segalign.align(dicom_dir, segmentation_path).labels: everything (scan the folder, read the
                NIfTI, sample every frame)
  sitk-frames   the way a user writes it with SimpleITK: sitk.ReadImage the NIfTI; pydicom.dcmread every file of
                the folder (stop_before_pixels), sorted by InstanceNumber; for each frame, sitk.Resample the
                segmentation (nearest neighbour) onto a reference image of size (columns, rows, 1) with the frame's
                origin (ImagePositionPatient), direction (ImageOrientationPatient's row and column cosines and their
                cross product) and spacing (PixelSpacing); the frames stacked
  sitk-volume   the same headers, but one sitk.Resample onto a volume grid built from the frames sorted along the
                normal, as a user may do when the series is regular (refused otherwise), then its slices put in
                InstanceNumber order

Measured per child: wall and CPU seconds of the whole process (interpreter start, imports, recipe) from the parent's
os.wait4, and, inside it, the recipe's own wall and CPU seconds (after its imports); memory: the process's peak
resident memory (VmHWM, at the end of the recipe, before the array is saved for the comparison) and its resident
memory right after its imports (VmRSS, the *baseline*). The labels array's size is reported, and

    overhead = peak - labels array - baseline

is what the recipe needed beyond the result and the libraries (the segmentation array, headers, temporaries). The
align recipe's imports are segalign (segalign.align and its readers), numpy, pydicom and nibabel; the SimpleITK
recipes' are SimpleITK, numpy and pydicom.

Every recipe's labels are compared with align's pixel by pixel (nearest neighbour ties may round apart: the count is
reported). The verdict: align's own time at most 0.3 x sitk-frames' own time, and align's overhead at most 100 MiB.
"""

from __future__ import annotations

import argparse
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

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmark.py: the case

RECIPES = ["align", "sitk-frames", "sitk-volume"]
TARGET_RATIO = 0.3  # align's own time / sitk-frames' own time, at most
TARGET_OVERHEAD_MIB = 100.0  # align's peak - labels array - baseline, at most


# ------------------------------------------------------------------------------------------------ memory


def _status_mib(field: str) -> float:
    """A field of /proc/self/status (VmRSS, VmHWM) in MiB; NaN without /proc."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return float("nan")
    return next((int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith(field + ":")),
                float("nan"))


# ------------------------------------------------------------------------------------------------ recipes (children)


def _align_recipe(dicom: Path, segmentation: Path) -> np.ndarray:
    import segalign

    return segalign.align(dicom, segmentation).labels


def _headers(dicom: Path) -> list:
    """Every file's header (no pixel data), in InstanceNumber order."""
    import pydicom

    headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in sorted(dicom.iterdir()) if path.is_file()]
    headers.sort(key=lambda ds: int(ds.InstanceNumber))
    return headers


def _geometry(ds) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Origin (IPP), ITK direction (row cosine, column cosine and normal as columns, row-major) and spacing
    (between columns, between rows, 1) of a frame."""
    orientation = np.array(ds.ImageOrientationPatient, dtype=float)
    row, column = orientation[:3], orientation[3:]
    direction = np.column_stack([row, column, np.cross(row, column)])
    spacing = [float(v) for v in ds.PixelSpacing]
    return np.array(ds.ImagePositionPatient, dtype=float), direction, (spacing[1], spacing[0], 1.0)


def _sitk_frames_recipe(dicom: Path, segmentation: Path) -> np.ndarray:
    import SimpleITK as sitk

    seg = sitk.ReadImage(str(segmentation))
    headers = _headers(dicom)
    labels = np.zeros((len(headers), int(headers[0].Rows), int(headers[0].Columns)), dtype=np.uint8)
    for k, ds in enumerate(headers):
        origin, direction, spacing = _geometry(ds)
        reference = sitk.Image(int(ds.Columns), int(ds.Rows), 1, sitk.sitkUInt8)
        reference.SetOrigin(origin.tolist())
        reference.SetDirection(direction.ravel().tolist())
        reference.SetSpacing(spacing)
        frame = sitk.Resample(seg, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        labels[k] = sitk.GetArrayViewFromImage(frame)[0]
    return labels


def _sitk_volume_recipe(dicom: Path, segmentation: Path) -> np.ndarray:
    import SimpleITK as sitk

    seg = sitk.ReadImage(str(segmentation))
    headers = _headers(dicom)
    origin, direction, spacing = _geometry(headers[0])
    normal = direction[:, 2]
    along = np.array([float(np.dot(np.array(ds.ImagePositionPatient, dtype=float), normal)) for ds in headers])
    by_position = np.argsort(along)
    steps = np.diff(along[by_position])
    first = np.array(headers[by_position[0]].ImagePositionPatient, dtype=float)
    regular = (
        len(headers) > 1 and np.allclose(steps, steps[0], atol=1e-3) and steps[0] > 0
        and all(np.allclose(_geometry(ds)[1], direction, atol=1e-6) and _geometry(ds)[2] == spacing for ds in headers)
        and all(np.allclose(np.array(headers[k].ImagePositionPatient, dtype=float),
                            first + (along[k] - along[by_position[0]]) * normal, atol=1e-3) for k in range(len(headers)))
    )
    if not regular:
        raise SystemExit("sitk-volume: the series is not a regular stack (spacing, orientation or tilt)")
    reference = sitk.Image(int(headers[0].Columns), int(headers[0].Rows), len(headers), sitk.sitkUInt8)
    reference.SetOrigin(first.tolist())
    reference.SetDirection(direction.ravel().tolist())
    reference.SetSpacing((spacing[0], spacing[1], float(steps[0])))
    volume = sitk.GetArrayFromImage(
        sitk.Resample(seg, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8))
    slice_of = np.empty(len(headers), dtype=int)
    slice_of[by_position] = np.arange(len(headers))  # header k (InstanceNumber order) is the volume's slice_of[k]
    return volume[slice_of]


def align_phases(case: Path) -> dict[str, tuple[float, float]]:
    """What segalign.align(dicom, segmentation).labels does, step by step: (wall s, CPU s) of each: the folder's
    scan (every file's header), the NIfTI read, the Alignment (series checks, the overlap test), the labels
    (every frame sampled, on two threads: cProfile does not see them)."""
    from segalign.alignment import Alignment
    from segalign.dicom import scan_folder
    from segalign.readers import load_segmentation

    phases: dict[str, tuple[float, float]] = {}
    clock = (time.perf_counter(), time.process_time())

    def lap(name: str) -> None:
        nonlocal clock
        now = (time.perf_counter(), time.process_time())
        phases[name] = (now[0] - clock[0], now[1] - clock[1])
        clock = now

    series = scan_folder(case / "dicom").select()
    lap("scan_folder")
    segmentation = load_segmentation(case / "segmentation.nii.gz")
    lap("load_segmentation")
    alignment = Alignment(series, segmentation)
    lap("Alignment()")
    alignment.labels
    lap("labels")
    return phases


def run_recipe(recipe: str, case: Path, out: Path) -> None:
    """The child: imports (the baseline's), the recipe timed, its peak memory, its labels saved to ``out``."""
    if recipe == "align":
        import nibabel  # noqa: F401
        import pydicom  # noqa: F401
        import segalign.readers  # noqa: F401
        from segalign import align  # noqa: F401
    elif recipe.startswith("sitk"):
        import pydicom  # noqa: F401
        import SimpleITK  # noqa: F401
    else:
        raise SystemExit(f"unknown recipe {recipe}")
    baseline = _status_mib("VmRSS")
    baseline_peak = _status_mib("VmHWM")
    started, cpu = time.perf_counter(), time.process_time()
    function = {"align": _align_recipe, "sitk-frames": _sitk_frames_recipe, "sitk-volume": _sitk_volume_recipe}[recipe]
    labels = function(case / "dicom", case / "segmentation.nii.gz")
    own_s, own_cpu_s = time.perf_counter() - started, time.process_time() - cpu
    peak = _status_mib("VmHWM")
    np.save(out, labels)
    print(json.dumps({
        "own_s": own_s, "own_cpu_s": own_cpu_s, "baseline_mib": baseline, "baseline_peak_mib": baseline_peak,
        "peak_mib": peak, "labels_mib": labels.nbytes / 2**20, "shape": list(labels.shape), "dtype": str(labels.dtype),
    }), flush=True)


# ------------------------------------------------------------------------------------------------ the parent


def measure(recipe: str, case: Path, out: Path) -> dict:
    """Run one recipe as a child process: the parent's wall and CPU seconds of it, and what it printed."""
    load = os.getloadavg()[0]
    started = time.perf_counter()
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        child = subprocess.Popen([sys.executable, __file__, "run", recipe, str(case), str(out)], stdout=stdout,
                                 stderr=stderr)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        stdout.seek(0)
        stderr.seek(0)
        printed, errors = stdout.read().decode(errors="replace"), stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"recipe {recipe} failed:\n{errors[-2000:]}")
    result = {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "load_1min": load}
    for line in printed.splitlines():
        if line.startswith("{"):
            result.update(json.loads(line))
    return result


def benchmark(work: Path, slices: int, repeats: int, recipes: list[str]) -> dict:
    from benchmark import prepare_case

    if "align" not in recipes:  # the reference every recipe's labels are compared with
        recipes = ["align", *recipes]
    case = prepare_case(work, slices)
    runs: dict[str, list[dict]] = {recipe: [] for recipe in recipes}
    with tempfile.TemporaryDirectory(dir=work) as scratch:
        outputs = {recipe: Path(scratch) / f"{recipe}.npy" for recipe in recipes}
        for repeat in range(repeats):
            for recipe in recipes if repeat % 2 == 0 else list(reversed(recipes)):
                runs[recipe].append(measure(recipe, case, outputs[recipe]))
                run = runs[recipe][-1]
                print(f"  N={slices} run {repeat + 1}/{repeats} {recipe:12s} own {run['own_s']:6.2f} s, process "
                      f"{run['wall_s']:6.2f} s, peak {run['peak_mib']:6.0f} MiB, load {run['load_1min']:.1f}",
                      file=sys.stderr)
        reference = np.load(outputs["align"], mmap_mode="r")
        differing = {}
        for recipe in recipes:
            labels = np.load(outputs[recipe], mmap_mode="r")
            differing[recipe] = (int(np.count_nonzero(labels != reference)) if labels.shape == reference.shape
                                 else f"shape {labels.shape}")
    rows = {}
    for recipe in recipes:
        def median(key: str) -> float:
            return statistics.median(run[key] for run in runs[recipe])

        rows[recipe] = {key: median(key) for key in
                        ("wall_s", "cpu_s", "own_s", "own_cpu_s", "baseline_mib", "peak_mib", "labels_mib", "load_1min")}
        rows[recipe]["overhead_mib"] = statistics.median(
            run["peak_mib"] - run["labels_mib"] - run["baseline_mib"] for run in runs[recipe])
        rows[recipe]["pixels_differing_from_align"] = differing[recipe]
        rows[recipe]["shape"], rows[recipe]["dtype"] = runs[recipe][0]["shape"], runs[recipe][0]["dtype"]
        rows[recipe]["runs"] = runs[recipe]
    return {"slices": slices, "repeats": repeats, "recipes": rows}


def table(report: dict) -> str:
    rows = report["recipes"]
    align = rows["align"]
    shape = "x".join(map(str, align["shape"]))
    loads = [run["load_1min"] for row in rows.values() for run in row["runs"]]
    lines = [
        f"N = {report['slices']}: labels {shape} {align['dtype']} ({align['labels_mib']:.0f} MiB); median of "
        f"{report['repeats']} runs; 1-minute load average before the runs {min(loads):.1f}-{max(loads):.1f} "
        f"on {os.cpu_count()} CPUs",
        "",
        "| recipe | own s | own CPU s | process wall s | process CPU s | own / sitk-frames | baseline MiB | peak MiB | "
        "overhead MiB | pixels differing from align |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    base = rows.get("sitk-frames", {}).get("own_s")
    for recipe, row in rows.items():
        ratio = f"{row['own_s'] / base:.2f}" if base else ""
        differing = row["pixels_differing_from_align"]
        differing = f"{differing:,}" if isinstance(differing, int) else f"**{differing}**"
        lines.append(
            f"| {recipe} | {row['own_s']:.2f} | {row['own_cpu_s']:.2f} | {row['wall_s']:.2f} | {row['cpu_s']:.2f} | "
            f"{ratio} | {row['baseline_mib']:.0f} | {row['peak_mib']:.0f} | {row['overhead_mib']:.0f} | {differing} |"
        )
    if base:
        ratio = align["own_s"] / base
        process_ratio = align["wall_s"] / rows["sitk-frames"]["wall_s"]
        cpu_ratio = align["own_cpu_s"] / rows["sitk-frames"]["own_cpu_s"]
        lines.append(
            f"\nalign against sitk-frames: own time {ratio:.2f} x (target at most {TARGET_RATIO} x: "
            f"{'met' if ratio <= TARGET_RATIO else 'MISSED'}; own CPU {cpu_ratio:.2f} x; whole process "
            f"{process_ratio:.2f} x); overhead "
            f"{align['overhead_mib']:.0f} MiB beyond the labels array ({align['labels_mib']:.0f} MiB) and the "
            f"baseline after imports ({align['baseline_mib']:.0f} MiB) (target at most {TARGET_OVERHEAD_MIB:.0f} MiB: "
            f"{'met' if align['overhead_mib'] <= TARGET_OVERHEAD_MIB else 'MISSED'})."
        )
    return "\n".join(lines)


def profile(case: Path, work: Path, top: int = 25) -> None:
    """The align recipe once under cProfile, in a child process: the top functions by cumulative and by own time
    (the profiler slows Python-heavy code: compare shares, not totals, with the table)."""
    import pstats

    with tempfile.TemporaryDirectory(dir=work) as scratch:
        stats = Path(scratch) / "profile.stats"
        child = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(stats), __file__, "run", "align", str(case),
                                str(Path(scratch) / "align.npy")], check=False, capture_output=True, text=True)
        if child.returncode != 0:
            raise RuntimeError(f"align failed:\n{child.stderr[-2000:]}")
        print(child.stdout.strip())
        phases = subprocess.run([sys.executable, __file__, "phases", str(case)], check=True, capture_output=True,
                                text=True).stdout.strip()
        print("align's steps without the profiler, (wall s, CPU s):", phases)
        pstats.Stats(str(stats)).sort_stats("cumulative").print_stats(top)
        pstats.Stats(str(stats)).sort_stats("tottime").print_stats(top)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "run":
        run_recipe(argv[1], Path(argv[2]), Path(argv[3]))
        return 0
    if argv and argv[0] == "phases":
        import nibabel  # noqa: F401
        import pydicom  # noqa: F401
        import segalign.readers  # noqa: F401
        from segalign import align  # noqa: F401

        print(json.dumps(align_phases(Path(argv[1]))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, nargs="+", default=[300])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--recipes", nargs="+", default=RECIPES, choices=RECIPES)
    parser.add_argument("--work", type=Path, default=Path("benchmark-results"),
                        help="cases (shared with benchmark.py) and align-benchmark.json (default ./benchmark-results)")
    parser.add_argument("--profile", action="store_true", help="run the align recipe once under cProfile instead")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.profile:
        from benchmark import prepare_case

        for slices in args.slices:
            profile(prepare_case(args.work, slices), args.work)
        return 0
    reports = []
    for slices in args.slices:
        print(f"preparing N={slices}...", file=sys.stderr)
        reports.append(benchmark(args.work, slices, args.repeats, args.recipes))
        print(table(reports[-1]) + "\n")
    machine = {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine()}
    (args.work / "align-benchmark.json").write_text(json.dumps({"machine": machine, "runs": reports}, indent=2) + "\n")
    print(f"written {args.work / 'align-benchmark.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
