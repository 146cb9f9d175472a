"""``segalign check`` against ``segalign export`` on benchmark.py's case: 512 x 512 x N CT (InstanceNumber counting
down, files in random name order), 117 TotalSegmentator labels on a 1.5 mm LAS grid.

    python Testing/benchmark/check_benchmark.py                                   # N = 300, every fault, 1 run
    python Testing/benchmark/check_benchmark.py --work /path/with/cases --repeats 3
    python Testing/benchmark/check_benchmark.py --faults exact flip_rows reversed --profile

SegAlign's own export of the case is made once; every fault is then made from its label PNGs the way a user's code
would have it (a PNG folder, a .npy stack, a NIfTI from nibabel), and ``segalign check DICOM SEG EXPORT --json`` is
timed as its own process (wall time, CPU time, its own peak memory), like ``segalign export -q`` (the same
measurement, repeated). Each check's JSON must name the fault (its ``in_plane``, ``frame_of_image`` and the words
of one finding), else the row says **WRONG**.

Target (issue 24): every check, diagnosis included, at most 2 x the export's wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

TARGET_RATIO = 2.0
FAULTS = ("exact", "flip_rows", "transpose_npy", "nibabel_nifti", "reversed", "one_slice_off", "labels_plus_one",
          "boundaries", "every_tenth_missing")


def measure(argv: list[str]) -> tuple[dict[str, float], str, int]:
    """Run ``python -m segalign ARGV`` as a child; wall, CPU seconds and its own peak memory (MiB, VmHWM)."""
    code = ("import sys, runpy, atexit, pathlib\n"
            "def peak():\n"
            "    for line in pathlib.Path('/proc/self/status').read_text().splitlines():\n"
            "        if line.startswith('VmHWM:'): sys.stderr.write('PEAK ' + line.split()[1] + '\\n')\n"
            "atexit.register(peak)\n"
            "from segalign.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    started = time.perf_counter()
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        child = subprocess.Popen([sys.executable, "-c", code, *argv], stdout=stdout, stderr=stderr)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        stdout.seek(0)
        stderr.seek(0)
        printed, errors = stdout.read().decode(errors="replace"), stderr.read().decode(errors="replace")
    peak = next((int(line.split()[1]) / 1024 for line in errors.splitlines() if line.startswith("PEAK ")), float("nan"))
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_mib": peak}, printed, \
        os.waitstatus_to_exitcode(status)


def read_labels(export: Path) -> list[np.ndarray]:
    import csv

    from PIL import Image

    with (export / "manifest.csv").open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    return [np.array(Image.open(export / row["label_png"])) for row in rows]


def save_pngs(folder: Path, images, names=None) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    for index, image in enumerate(images):
        Image.fromarray(np.ascontiguousarray(image)).save(folder / (names[index] if names else f"{index:04d}.png"),
                                                          compress_level=1)


def make_fault(fault: str, truth: list[np.ndarray], folder: Path) -> tuple[Path, dict]:
    """The user's export with ``fault`` and what the check must say about it."""
    count = len(truth)
    if fault == "exact":
        return folder, {"exact": True}
    path = folder.parent / f"fault-{fault}"
    expected: dict = {"exact": False}
    if fault == "flip_rows":
        if not path.exists():
            save_pngs(path, [t[::-1, :] for t in truth])
        expected.update(in_plane="flip_rows", frame_of_image=list(range(count)), words=["(flip_rows)"])
    elif fault == "transpose_npy":
        path = path.with_suffix(".npy")
        if not path.exists():
            np.save(path, np.stack([t.T for t in truth]))
        expected.update(in_plane="transpose", frame_of_image=list(range(count)), words=["(transpose)"])
    elif fault == "nibabel_nifti":
        import nibabel as nib

        path = path.with_suffix(".nii.gz")
        if not path.exists():
            data = np.stack([t.T[:, ::-1] for t in truth], axis=-1)  # (x, y, z), rows flipped as dcm2niix does
            nib.save(nib.Nifti1Image(data, np.eye(4)), path)
        expected.update(in_plane="transpose_flip_columns", frame_of_image=list(range(count)), words=["last axis"])
    elif fault == "reversed":
        if not path.exists():
            save_pngs(path, truth[::-1])
        expected.update(in_plane="identity", frame_of_image=list(range(count - 1, -1, -1)), words=["reverse order"])
    elif fault == "one_slice_off":
        if not path.exists():
            save_pngs(path, list(truth[1:]) + [np.zeros_like(truth[0])])
        expected.update(in_plane="identity", frame_of_image=list(range(1, count)) + [None], words=["1 slice after"])
    elif fault == "labels_plus_one":
        if not path.exists():
            save_pngs(path, [np.where(t > 0, t + 1, 0).astype(np.uint8) for t in truth])
        expected.update(in_plane="identity", frame_of_image=list(range(count)), words=["renamed", "shifted by one"])
    elif fault == "boundaries":
        if not path.exists():  # where the label changes to the right, every other row takes the right neighbour's
            images = []
            for t in truth:
                image = t.copy()
                change = np.zeros(t.shape, dtype=bool)
                change[::2, :-1] = t[::2, :-1] != t[::2, 1:]
                image[:, :-1][change[:, :-1]] = t[:, 1:][change[:, :-1]]
                images.append(image)
            save_pngs(path, images)
        expected.update(in_plane="identity", frame_of_image=list(range(count)), words=["all of them on label boundaries"])
    elif fault == "every_tenth_missing":
        kept = [k for k in range(count) if k % 10 != 5]
        if not path.exists():
            save_pngs(path, [truth[k] for k in kept], [f"{k:04d}.png" for k in kept])
        expected.update(in_plane="identity", frame_of_image=kept, words=["in no image"])
    else:
        raise SystemExit(f"unknown fault {fault}")
    return path, expected


def judged(result: dict, expected: dict) -> str:
    problems = [key for key in ("exact", "in_plane", "frame_of_image") if key in expected and result[key] != expected[key]]
    for word in expected.get("words", []):
        if not any(word in line for line in result["findings"]):
            problems.append(repr(word))
    return "ok" if not problems else "WRONG: " + ", ".join(problems)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--faults", nargs="+", default=list(FAULTS), choices=FAULTS)
    parser.add_argument("--work", type=Path, default=Path("benchmark-results"),
                        help="where benchmark.py's cases are (made there if missing), default ./benchmark-results")
    parser.add_argument("--out", type=Path, help="the export and the faulty exports (default: a temporary folder)")
    parser.add_argument("--profile", action="store_true", help="cProfile each check in this process, top 12")
    args = parser.parse_args()
    from benchmark import prepare_case

    case = prepare_case(args.work, args.slices)
    dicom, segmentation = case / "dicom", case / "segmentation.nii.gz"
    with tempfile.TemporaryDirectory(prefix="check-benchmark-") as temporary:
        out = args.out or Path(temporary)
        export = out / "export"
        exports = []
        for _ in range(args.repeats):
            timing, _, code = measure(["export", str(dicom), str(segmentation), "-o", str(export), "-q", "--overwrite"])
            assert code == 0, "the export failed"
            exports.append(timing)
        export_wall = statistics.median(t["wall_s"] for t in exports)
        truth = read_labels(export)
        rows = [("segalign export", statistics.median(t["wall_s"] for t in exports),
                 statistics.median(t["cpu_s"] for t in exports), max(t["peak_mib"] for t in exports), 1.0, "-")]
        for fault in args.faults:
            path, expected = make_fault(fault, truth, export)
            if args.profile:
                _profile(dicom, segmentation, path)
            timings, verdict = [], ""
            for _ in range(args.repeats):
                timing, printed, code = measure(["check", str(dicom), str(segmentation), str(path), "--json"])
                if code not in (0, 1):
                    verdict = f"WRONG: exit {code}"
                    timings.append(timing)
                    continue
                verdict = judged(json.loads(printed), expected)
                timings.append(timing)
            wall = statistics.median(t["wall_s"] for t in timings)
            rows.append((f"check {fault}", wall, statistics.median(t["cpu_s"] for t in timings),
                         max(t["peak_mib"] for t in timings), wall / export_wall, verdict))
    print(f"N = {args.slices} slices of 512 x 512, 117 labels; median of {args.repeats} run(s); target: check <= "
          f"{TARGET_RATIO:g} x export")
    print(f"| {'run':<28} | {'wall s':>7} | {'CPU s':>7} | {'peak MiB':>8} | {'x export':>8} | diagnosis |")
    print(f"|{'-' * 30}|{'-' * 9}|{'-' * 9}|{'-' * 10}|{'-' * 10}|-----------|")
    for name, wall, cpu, peak, ratio, verdict in rows:
        print(f"| {name:<28} | {wall:7.2f} | {cpu:7.2f} | {peak:8.0f} | {ratio:8.2f} | {verdict} |")


def _profile(dicom: Path, segmentation: Path, export: Path) -> None:
    import cProfile
    import pstats

    from segalign.check import check_export

    profiler = cProfile.Profile()
    profiler.runcall(check_export, dicom, segmentation, export)
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(12)


if __name__ == "__main__":
    main()
