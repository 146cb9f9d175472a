"""Overlapping segments: what they cost against the non-overlapping export, and the non-overlapping export against
SegAlign before segments could overlap.

    python Testing/benchmark/overlap_benchmark.py --baseline /work/wt-bench-base        # N = 100 200 300, 3 runs
    python Testing/benchmark/overlap_benchmark.py --slices 300 --recipes read-labelmap read-files read-folder
    python Testing/benchmark/overlap_benchmark.py --profile --slices 300 --recipes read-folder
    python Testing/benchmark/overlap_benchmark.py --slices 300 --frames 100 200 300   # the same segmentation, fewer frames

The case is benchmark.py's (a 512 x 512 x N CT series, InstanceNumber counting down, and TotalSegmentator's 117
labels as one label map on a 1.5 mm LAS grid), plus what users combine with it, on the same grid: a BODY mask
(the phantom's body outline, around nearly every organ) and 10 structures that overlap organs and each other (four
tumours, two planning margins each around a tumour, two vessels along the body, two rings). They are given to
SegAlign three ways: the label map alone (``labelmap``: no overlaps); ``files``: the label map, body.nii.gz and the
10 structures as separate NIfTI files (``segalign export DICOM total.nii.gz body.nii.gz s1.nii.gz ...``); and
``folder``: one folder of 128 binary masks (TotalSegmentator's default output, 117 organs, plus the body and the
10 structures). ``folder117`` is the 117 organ masks alone, the non-overlapping export of a folder of masks.

Recipes, each its own process (wall time, CPU time, the process's own peak resident memory, VmHWM):
  export-<input>   ``segalign export DICOM <input> -o OUT -q`` (label PNGs, manifest, labels.json): the whole export
  read-<input>     what the export does before its writers: read the input, scan the series, sample every frame
                   on two threads (SegmentationSampler, and each frame's label counts, as the export's frame loop)
``--code ROOT`` measures the code of a checkout (a git worktree of a commit) instead of the installed segalign.
With ``--baseline ROOT`` (a checkout of SegAlign before segments could overlap, e.g. a git worktree of the commit
before 766d5e2), the label map and folder117 recipes also run on that code (``PYTHONPATH=ROOT/SegAlign/SegAlignLib``),
as ``<recipe>@base``: the non-overlapping export must be no slower and no larger than before, and its label PNGs
byte for byte the same. Every read recipe prints the pixels of every segment over all frames: the 117 organs must
count the same pixels whichever way they are given, and body and structures the same as files and as a folder.

Targets (issue 22): the overlapping export (files, folder) at most 1.5 x the wall time of the non-overlapping
export, peak memory at most 300 MiB, and flat in the number of frames (N = 100, 200, 300).
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

INPUTS = ("labelmap", "folder117", "files", "folder")
RECIPES = [f"{kind}-{input_}" for input_ in INPUTS for kind in ("read", "export")]
BASELINE_RECIPES = ("read-labelmap", "export-labelmap", "read-folder117", "export-folder117")
TARGET_RATIO, TARGET_PEAK_MIB = 1.5, 300
STRUCTURES = 10


# ------------------------------------------------------------------------------------------------ the case


def prepare_overlap_case(work: Path, slices: int) -> Path:
    """benchmark.py's case for ``slices`` frames, plus body.nii.gz, structures/ (10 files), masks/ (128 masks) and
    masks117/ (links to the organ masks), generated once."""
    import benchmark

    case = benchmark.prepare_case(work, slices)
    done = case / "overlap-ready-v1"
    if done.exists():
        return case
    import nibabel as nib
    from segalign.segmentation import builtin_table
    from segalign.synthetic import Cylinder, Ellipsoid, Torus, rasterize_shape, write_nifti

    image = nib.load(str(case / "segmentation.nii.gz"))
    labels, affine = np.asarray(image.dataobj), image.affine
    shape = labels.shape
    length = benchmark.SLICE_SPACING * (slices - 1)
    rng = np.random.default_rng(1000 + slices)
    body = Ellipsoid(1, "body", (0, 0, 0), (180, 130, length))  # the CT's body outline (benchmark.prepare_case)

    def inside(margin: float) -> tuple[float, float, float]:
        return (rng.uniform(-120 + margin, 120 - margin), rng.uniform(-70 + margin / 2, 70 - margin / 2),
                rng.uniform(-length / 2 + 25, length / 2 - 25))

    structures = []
    tumours = [Ellipsoid(1, f"tumour_{n}", inside(20), tuple(rng.uniform(8, 22, size=3))) for n in range(1, 5)]
    structures += tumours
    structures += [Ellipsoid(1, f"ptv_{n}", tumour.centre, tuple(r + 7.0 for r in tumour.radii))
                   for n, tumour in enumerate(tumours[:2], start=1)]
    structures += [Cylinder(1, f"vessel_{n}", (rng.uniform(-60, 60), rng.uniform(-30, 30), 0.0), length / 2 - 10,
                            (rng.uniform(4, 7), rng.uniform(4, 7)), axes=((0, 0, 1), (1, 0, 0), (0, 1, 0)))
                   for n in (1, 2)]
    structures += [Torus(1, f"ring_{n}", inside(40), rng.uniform(25, 40), rng.uniform(4, 8), rng.uniform(5, 12))
                   for n in (1, 2)]
    assert len(structures) == STRUCTURES
    table = builtin_table("totalsegmentator")
    masks, masks117, parts = case / "masks", case / "masks117", case / "structures"
    for folder in (masks, masks117, parts):
        folder.mkdir(exist_ok=True)
    for value in range(1, 118):
        name = f"{table[value].name}.nii.gz"
        write_nifti(masks / name, (labels == value).astype(np.uint8), affine)
        (masks117 / name).unlink(missing_ok=True)
        (masks117 / name).symlink_to(Path("..") / "masks" / name)
    body_mask = rasterize_shape(body, shape, affine).astype(np.uint8)
    write_nifti(case / "body.nii.gz", body_mask, affine)
    write_nifti(masks / "body.nii.gz", body_mask, affine)
    for structure in structures:
        mask = rasterize_shape(structure, shape, affine).astype(np.uint8)
        write_nifti(parts / f"{structure.name}.nii.gz", mask, affine)
        write_nifti(masks / f"{structure.name}.nii.gz", mask, affine)
    done.write_text("ok\n")
    return case


def inputs_of(case: Path, input_: str) -> list[Path]:
    """The segmentation arguments of an input."""
    if input_ == "labelmap":
        return [case / "segmentation.nii.gz"]
    if input_ == "files":
        return [case / "segmentation.nii.gz", case / "body.nii.gz", *sorted((case / "structures").iterdir())]
    return [case / ("masks" if input_ == "folder" else "masks117")]


# ------------------------------------------------------------------------------------------------ recipes (child processes)


def run_recipe(recipe: str, case: Path, out: Path, dicom: Path | None = None) -> None:
    kind, input_ = recipe.split("-", 1)
    paths = inputs_of(case, input_)
    dicom = dicom or case / "dicom"
    if kind == "export":
        from segalign.cli import main

        started = time.perf_counter()
        code = main(["export", str(dicom), *map(str, paths), "-o", str(out), "-q"])
        print(json.dumps({"export_s": time.perf_counter() - started, "exit": code}), flush=True)
        raise SystemExit(0 if code == 0 else 3)  # 3: refused (a writer that cannot hold overlaps yet)
    phases: dict[str, float] = {}
    clock = time.perf_counter()
    import segalign
    import segalign.dicom
    import segalign.readers
    import segalign.segmentation
    from segalign import scan_folder

    phases["import_s"] = time.perf_counter() - clock
    clock = time.perf_counter()

    old = not hasattr(segalign, "load_segmentations")  # SegAlign before overlapping segments
    if old:
        from segalign import load_segmentation
        from segalign.segmentation import FrameSampler

        segmentation = load_segmentation(paths[0])
        sampler = FrameSampler(segmentation.labels, segmentation.affine)
        layers = [segmentation.labels]
    else:
        from segalign import load_segmentations
        from segalign.segmentation import SegmentationSampler

        segmentation = load_segmentations(paths)
        sampler = SegmentationSampler(segmentation)
        layers = [layer.labels for layer in segmentation.layers]
    phases["read_s"] = time.perf_counter() - clock
    clock = time.perf_counter()
    frames = scan_folder(dicom).select().ordered("instance")
    phases["scan_s"] = time.perf_counter() - clock
    clock = time.perf_counter()
    from concurrent.futures import ThreadPoolExecutor

    def counts_on(frame):
        sampled, _ = sampler.sample_counted(frame)
        sampled = [sampled] if old else sampled
        total = np.zeros(1 + max(int(np.iinfo(layer.dtype).max) for layer in sampled), dtype=np.int64)
        for layer in sampled:
            labelled = layer[layer != 0]
            counts = np.bincount(labelled)
            total[:len(counts)] += counts
        return total

    pixels = np.zeros(1, dtype=np.int64)
    with ThreadPoolExecutor(max_workers=2) as pool:  # as the export's frame loop: two frames at a time
        for counts in pool.map(counts_on, frames):
            if len(counts) > len(pixels):
                pixels = np.pad(pixels, (0, len(counts) - len(pixels)))
            pixels[:len(counts)] += counts
    phases["sample_s"] = time.perf_counter() - clock
    names = {value: label.name for value, label in segmentation.label_table.items()}
    print(json.dumps({
        "phases": phases, "frames": len(frames), "layers": len(layers),
        "layer_mib": sum(layer.nbytes for layer in layers) / 2**20,
        "pixels": {names.get(int(v), str(v)): int(pixels[v]) for v in np.flatnonzero(pixels) if v},
    }), flush=True)


# ------------------------------------------------------------------------------------------------ measuring


def measure(recipe: str, case: Path, out: Path, code_root: Path | None, dicom: Path | None = None) -> dict:
    """Run one recipe as a child process (on the code under ``code_root`` if given; onto the series in ``dicom``,
    default the case's); wall and CPU seconds and its own peak resident memory (VmHWM, MiB)."""
    env = dict(os.environ)
    if code_root is not None:
        env["PYTHONPATH"] = str(code_root / "SegAlign" / "SegAlignLib")
    started = time.perf_counter()
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        child = subprocess.Popen([sys.executable, __file__, "run", recipe, str(case), str(out),
                                  *([str(dicom)] if dicom else [])], stdout=stdout, stderr=stderr, env=env)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        stdout.seek(0)
        stderr.seek(0)
        printed, errors = stdout.read().decode(errors="replace"), stderr.read().decode(errors="replace")
    code = os.waitstatus_to_exitcode(status)
    result: dict = {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime}
    for line in printed.splitlines():
        if line.startswith("{"):
            result.update(json.loads(line))
    if code == 3:
        result["refused"] = errors.strip().splitlines()[-1] if errors.strip() else "refused"
    elif code != 0:
        raise RuntimeError(f"recipe {recipe} failed:\n{errors[-3000:]}")
    result["output_mb"] = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6 if out.exists() else 0.0
    return result


def _report_peak_memory() -> None:
    status = Path("/proc/self/status").read_text()
    peak = next(int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM:"))
    print(json.dumps({"peak_mib": peak}), flush=True)


def same_pngs(a: Path, b: Path) -> str:
    """Whether two exports' label PNGs are byte for byte the same (by manifest row)."""
    import csv

    def rows(out: Path) -> dict[str, str]:
        with (out / "manifest.csv").open() as stream:
            return {row["sop_instance_uid"]: row["label_png"] for row in csv.DictReader(stream)}

    first, second = rows(a), rows(b)
    if first.keys() != second.keys():
        return "different frames"
    differing = sum((a / first[uid]).read_bytes() != (b / second[uid]).read_bytes() for uid in first)
    return "byte-identical" if differing == 0 else f"**{differing} PNGs differ**"


def benchmark(work: Path, slices: int, repeats: int, recipes: list[str], baseline: Path | None,
              code: Path | None = None) -> dict:
    import shutil

    case = prepare_overlap_case(work, slices)
    runs = [(recipe, code, "") for recipe in recipes]
    if baseline is not None:
        runs += [(recipe, baseline, "@base") for recipe in recipes if recipe in BASELINE_RECIPES]
    results: dict[str, list[dict]] = {}
    kept: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(dir=work) as scratch:
        for repeat in range(repeats):
            for recipe, root, suffix in (runs if repeat % 2 == 0 else list(reversed(runs))):
                name = recipe + suffix
                out = Path(scratch) / f"{name}-{repeat}"
                result = measure(recipe, case, out, root)
                results.setdefault(name, []).append(result)
                print(f"  N={slices} run {repeat + 1}/{repeats} {name:22s} {result['wall_s']:7.2f} s "
                      f"{result.get('peak_mib', float('nan')):6.0f} MiB{'  refused' if 'refused' in result else ''}",
                      file=sys.stderr)
                if name in kept:
                    shutil.rmtree(kept[name], ignore_errors=True)
                kept[name] = out
        identical = {}
        for recipe in ("export-labelmap", "export-folder117"):
            if recipe in kept and f"{recipe}@base" in kept and (kept[recipe] / "manifest.csv").exists():
                identical[recipe] = same_pngs(kept[recipe], kept[f"{recipe}@base"])
    rows = {}
    for name, runs_of in results.items():
        row = {key: statistics.median(r[key] for r in runs_of) for key in ("wall_s", "cpu_s", "peak_mib", "output_mb")
               if all(key in r for r in runs_of)}
        for key in ("layers", "layer_mib", "frames", "refused", "pixels"):
            if key in runs_of[-1]:
                row[key] = runs_of[-1][key]
        if all("phases" in r for r in runs_of):
            row["phases"] = {k: statistics.median(r["phases"][k] for r in runs_of) for k in runs_of[0]["phases"]}
        rows[name] = row
    return {"slices": slices, "repeats": repeats, "recipes": rows, "identical": identical,
            "pixel_checks": pixel_checks(rows)}


def pixel_checks(rows: dict[str, dict]) -> list[str]:
    """Every segment counts the same pixels over all frames whichever way it was given (and on either code)."""
    problems = []
    reference = rows.get("read-labelmap", {}).get("pixels")
    for name, row in rows.items():
        pixels = row.get("pixels")
        if not pixels or reference is None or name == "read-labelmap":
            continue
        for segment, count in reference.items():
            if pixels.get(segment) != count:
                problems.append(f"{name}: {segment} {pixels.get(segment)} pixels, the label map {count}")
    files, folder = rows.get("read-files", {}).get("pixels"), rows.get("read-folder", {}).get("pixels")
    if files and folder:  # the body and the structures: named after their files either way
        for segment in sorted(set(folder) | set(files)):
            if files.get(segment) != folder.get(segment):
                problems.append(f"{segment}: read-files {files.get(segment)} pixels, read-folder {folder.get(segment)}")
    return problems


def table(reports: list[dict]) -> str:
    lines = ["| N | recipe | code | wall s | CPU s | peak MiB | layers | layer MiB | output MB | wall / export-labelmap | "
             "import / read / scan / sample s |", "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for report in reports:
        rows = report["recipes"]
        base = rows.get("export-labelmap", {}).get("wall_s")
        for name, row in rows.items():
            recipe, _, code = name.partition("@")
            phases = row.get("phases")
            phase_text = " / ".join(f"{phases[k]:.2f}" for k in ("import_s", "read_s", "scan_s", "sample_s")) if phases else ""
            wall = f"{row['wall_s']:.2f}" if "refused" not in row else f"refused ({row['wall_s']:.2f})"
            ratio = f"{row['wall_s'] / base:.2f}" if base and "refused" not in row else ""
            layers = f"{row['layers']} | {row['layer_mib']:.0f}" if "layers" in row else " | "
            lines.append(
                f"| {report['slices']} | {recipe} | {code or 'today'} | {wall} | {row['cpu_s']:.2f} | "
                f"{row.get('peak_mib', float('nan')):.0f} | {layers} | {row.get('output_mb', 0):.1f} | {ratio} | "
                f"{phase_text} |"
            )
    notes = []
    for report in reports:
        for recipe, verdict in report["identical"].items():
            notes.append(f"N = {report['slices']}: {recipe}'s label PNGs against the baseline's: {verdict}.")
        problems = report["pixel_checks"]
        notes.append(f"N = {report['slices']}: segment pixel counts across inputs: "
                     + ("all equal." if not problems else f"**{len(problems)} differ**: " + "; ".join(problems[:5])))
        for name, row in report["recipes"].items():
            if "refused" in row:
                notes.append(f"N = {report['slices']}: {name} refused: {row['refused']}")
    notes += verdicts(reports)
    return "\n".join(lines) + "\n\n" + "\n".join(notes)


def verdicts(reports: list[dict]) -> list[str]:
    """The targets, met or missed, for every N."""
    lines = []
    for report in reports:
        rows, n = report["recipes"], report["slices"]
        for recipe in ("export-labelmap", "export-folder117", "read-labelmap"):
            now, before = rows.get(recipe), rows.get(f"{recipe}@base")
            if now and before and "refused" not in now:
                lines.append(f"N = {n}: {recipe} today / before: wall {now['wall_s'] / before['wall_s']:.2f} x, peak "
                             f"{now['peak_mib']:.0f} / {before['peak_mib']:.0f} MiB, output {now['output_mb']:.2f} / "
                             f"{before['output_mb']:.2f} MB.")
        base = rows.get("export-labelmap")
        for recipe in ("export-files", "export-folder", "read-files", "read-folder"):
            row = rows.get(recipe)
            if not row or "refused" in row or not base:
                continue
            against = "export-labelmap" if recipe.startswith("export") else "read-labelmap"
            ratio = row["wall_s"] / rows[against]["wall_s"] if against in rows else float("nan")
            verdict = ("met" if ratio <= TARGET_RATIO else "MISSED") if recipe.startswith("export") else "(reading only)"
            lines.append(f"N = {n}: {recipe}: wall {ratio:.2f} x {against} (target {TARGET_RATIO} x: {verdict}), peak "
                         f"{row['peak_mib']:.0f} MiB (target {TARGET_PEAK_MIB}: "
                         f"{'met' if row['peak_mib'] <= TARGET_PEAK_MIB else 'MISSED'}).")
    peaks: dict[str, list[tuple[int, float]]] = {}
    for report in reports:
        for name, row in report["recipes"].items():
            if "peak_mib" in row and "refused" not in row:
                peaks.setdefault(name, []).append((report["slices"], row["peak_mib"]))
    for name, values in peaks.items():
        if len(values) > 1:
            lines.append(f"{name} peak MiB by N: " + ", ".join(f"{n}: {peak:.0f}" for n, peak in values))
    return lines


FRAMES_RECIPES = ("export-labelmap", "export-files", "export-folder")


def frames_subset(case: Path, count: int) -> Path:
    """A folder holding the case's first ``count`` files by position (links), the same segmentation's series cut short."""
    import pydicom

    folder = case / f"dicom-first-{count}"
    if not folder.exists():
        files = sorted((case / "dicom").iterdir(), key=lambda path: float(pydicom.dcmread(
            path, stop_before_pixels=True, specific_tags=["ImagePositionPatient"]).ImagePositionPatient[2]))
        folder.mkdir()
        for path in files[:count]:
            (folder / path.name).symlink_to(path)
    return folder


def frames_flatness(work: Path, slices: int, counts: list[int], repeats: int, code: Path | None) -> dict:
    """The N = ``slices`` case's segmentations (the same arrays every time) exported onto the first ``counts`` frames
    of its series: the peak must not grow with the frames."""
    import shutil

    case = prepare_overlap_case(work, slices)
    rows: dict[str, dict[int, dict]] = {}
    with tempfile.TemporaryDirectory(dir=work) as scratch:
        for repeat in range(repeats):
            for recipe in FRAMES_RECIPES:
                for count in counts:
                    out = Path(scratch) / f"{recipe}-{count}-{repeat}"
                    result = measure(recipe, case, out, code, frames_subset(case, count) if count < slices else None)
                    rows.setdefault(recipe, {}).setdefault(count, []).append(result)  # type: ignore[arg-type]
                    print(f"  frames {count} run {repeat + 1}/{repeats} {recipe:16s} {result['wall_s']:6.2f} s "
                          f"{result['peak_mib']:5.0f} MiB", file=sys.stderr)
                    shutil.rmtree(out, ignore_errors=True)
    return {recipe: {count: {key: statistics.median(r[key] for r in runs) for key in ("wall_s", "cpu_s", "peak_mib")}
                     for count, runs in by_count.items()} for recipe, by_count in rows.items()}


def frames_table(slices: int, report: dict) -> str:
    counts = sorted({count for by_count in report.values() for count in by_count})
    lines = [f"The N = {slices} case's segmentations exported onto the first {', '.join(map(str, counts))} frames of "
             "its series (the same arrays every time): wall s / peak MiB",
             "| recipe | " + " | ".join(f"{count} frames" for count in counts) + " |",
             "| --- | " + " | ".join("---:" for _ in counts) + " |"]
    for recipe, by_count in report.items():
        lines.append(f"| {recipe} | " + " | ".join(
            f"{by_count[count]['wall_s']:.2f} / {by_count[count]['peak_mib']:.0f}" for count in counts) + " |")
    return "\n".join(lines)


def profile(recipe: str, case: Path, work: Path, top: int = 25) -> None:
    """One run of ``recipe`` under cProfile: its top functions by cumulative and by own time."""
    import pstats

    with tempfile.TemporaryDirectory(dir=work) as scratch:
        stats = Path(scratch) / "profile.stats"
        child = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(stats), __file__, "run", recipe, str(case),
                                str(Path(scratch) / "out")], check=False, capture_output=True, text=True)
        if child.returncode not in (0, 3):
            raise RuntimeError(f"recipe {recipe} failed:\n{child.stderr[-2000:]}")
        print(f"== {recipe}, {case.name}")
        print("\n".join(line for line in child.stdout.splitlines() if line.startswith("{"))[:2000])
        pstats.Stats(str(stats)).sort_stats("cumulative").print_stats(top)
        pstats.Stats(str(stats)).sort_stats("tottime").print_stats(top)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "run":
        import atexit

        atexit.register(_report_peak_memory)
        run_recipe(argv[1], Path(argv[2]), Path(argv[3]), Path(argv[4]) if len(argv) > 4 else None)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, nargs="+", default=[100, 200, 300])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--recipes", nargs="+", default=RECIPES, choices=RECIPES)
    parser.add_argument("--baseline", type=Path, help="a checkout of SegAlign before overlapping segments")
    parser.add_argument("--code", type=Path, help="a checkout of SegAlign to measure as today's (default: the "
                        "installed segalign), e.g. a git worktree of a commit, away from uncommitted changes")
    parser.add_argument("--work", type=Path, default=Path("benchmark-results"))
    parser.add_argument("--profile", action="store_true", help="run each recipe once under cProfile instead")
    parser.add_argument("--frames", type=int, nargs="+", metavar="COUNT",
                        help="instead: the largest --slices case exported onto its first COUNT frames (peak memory "
                        "against the number of frames, the segmentation unchanged)")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.profile:
        for slices in args.slices:
            for recipe in args.recipes:
                profile(recipe, prepare_overlap_case(args.work, slices), args.work)
        return 0
    if args.frames:
        report = frames_flatness(args.work, max(args.slices), args.frames, args.repeats, args.code)
        print(frames_table(max(args.slices), report))
        (args.work / "overlap-frames.json").write_text(json.dumps(report, indent=2) + "\n")
        return 0
    reports = []
    for slices in args.slices:
        print(f"preparing N={slices}...", file=sys.stderr)
        reports.append(benchmark(args.work, slices, args.repeats, args.recipes, args.baseline, args.code))
        print(table(reports[-1:]) + "\n", flush=True)
    print(table(reports))
    machine = {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine()}
    (args.work / "overlap-benchmark.json").write_text(json.dumps({"machine": machine, "runs": reports}, indent=2) + "\n")
    print(f"written {args.work / 'overlap-benchmark.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
