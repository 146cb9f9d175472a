"""``segalign batch`` against a shell loop of ``segalign export`` calls: wall time for a cohort, side by side.

    python Testing/benchmark/batch_benchmark.py                    # 16 studies of 512 x 512 x 60, 117 labels, 3 runs
    python Testing/benchmark/batch_benchmark.py --dask             # also on a local Dask cluster (2 workers)
    python Testing/benchmark/batch_benchmark.py --studies 32 --slices 100
    python Testing/benchmark/batch_benchmark.py --options "--dicom-seg --images"   # heavier jobs
    python Testing/benchmark/batch_benchmark.py --out /dev/shm/segalign-batch      # outputs on tmpfs

The study is benchmark.py's case (a 512 x 512 CT, InstanceNumber counting down, files in random name order, and a
117-label segmentation on a 1.5 mm LAS grid), copied once per study so that every job reads its own files. Each
recipe runs with an empty output folder, the recipes alternate over the repetitions, and the table gives medians.
Every recipe's label PNGs are compared with the shell loop's, file by file.

Recipes:
  loop        one ``segalign export DICOM SEG -o OUT/<study> -q`` process per study, one after the other
  workers-1   ``segalign batch JOBS.csv -o OUT -q --workers 1`` (the jobs in the batch process)
  workers-2   ``segalign batch JOBS.csv -o OUT -q --workers 2`` (a pool of two worker processes)
  dask-2      (--dask) ``segalign batch ... --scheduler ADDRESS`` on a LocalCluster of two single-threaded worker
              processes on 127.0.0.1, started before the timing (a cluster is already running when users submit)
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark import prepare_case  # noqa: E402 (the same case as the single-export benchmark)

SEGALIGN = [sys.executable, "-m", "segalign"]


def prepare_cohort(work: Path, studies: int, slices: int) -> Path:
    """``studies`` copies of the case, and their jobs table; returns the table."""
    case = prepare_case(work, slices)
    cohort = work / f"cohort-{studies}x{slices}"
    table = cohort / "jobs.csv"
    if table.exists():
        return table
    rows = ["dicom_dir,segmentation,name"]
    for index in range(studies):
        study = cohort / f"study{index:03d}"
        if not study.exists():
            shutil.copytree(case / "dicom", study / "dicom")
            shutil.copyfile(case / "segmentation.nii.gz", study / "segmentation.nii.gz")
        rows.append(f"{study.name}/dicom,{study.name}/segmentation.nii.gz,{study.name}")
    table.write_text("\n".join(rows) + "\n")
    return table


#: Written into the outputs folder, so that the benchmark only ever deletes what it wrote there.
MARKER = ".segalign-batch-benchmark"


def claim(outputs: Path) -> None:
    """Make ``outputs`` the benchmark's: a new or empty folder, or one it marked before; anything else is refused."""
    if outputs.exists() and any(outputs.iterdir()) and not (outputs / MARKER).exists():
        sys.exit(f"{outputs} holds files the benchmark did not write; give another --out")
    outputs.mkdir(parents=True, exist_ok=True)
    (outputs / MARKER).write_text("outputs of Testing/benchmark/batch_benchmark.py\n")


def run_recipe(recipe: str, table: Path, out: Path, scheduler: str | None, extra: list[str]) -> float:
    """Run one recipe into the empty folder ``out`` (inside the claimed outputs folder); its wall time in seconds."""
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    if recipe == "loop":
        for line in table.read_text().splitlines()[1:]:
            dicom, segmentation, name = line.split(",")
            subprocess.run([*SEGALIGN, "export", str(table.parent / dicom), str(table.parent / segmentation), "-o",
                            str(out / name), "-q", *extra], check=True)
    else:
        where = ["--scheduler", scheduler] if recipe.startswith("dask") else ["--workers", recipe.split("-")[1]]
        subprocess.run([*SEGALIGN, "batch", str(table), "-o", str(out), "-q", *where, *extra], check=True)
    return time.perf_counter() - started


def differing_pngs(reference: Path, other: Path) -> int:
    """Label PNGs that differ (or are missing) between two cohorts of exports."""
    names = {p.relative_to(reference) for p in reference.rglob("labels/*.png")}
    theirs = {p.relative_to(other) for p in other.rglob("labels/*.png")}
    return len(names ^ theirs) + sum((reference / n).read_bytes() != (other / n).read_bytes() for n in names & theirs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=16)
    parser.add_argument("--slices", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dask", action="store_true", help="also run on a local Dask cluster of two workers")
    parser.add_argument("--options", default="", help="export options for every recipe, e.g. '--dicom-seg --images'")
    parser.add_argument("--work", type=Path, default=Path("benchmark-results"), help="cases, outputs and results")
    parser.add_argument("--out", type=Path, help="where the recipes write (default: WORK/batch-out); e.g. /dev/shm "
                        "to see what the file system costs")
    args = parser.parse_args(argv)
    table = prepare_cohort(args.work, args.studies, args.slices)
    outputs = args.out or args.work / "batch-out"
    claim(outputs)
    recipes = ["loop", "workers-1", "workers-2"] + (["dask-2"] if args.dask else [])
    cluster = None
    scheduler = None
    if args.dask:
        from distributed import LocalCluster

        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None)
        scheduler = cluster.scheduler_address
    times: dict[str, list[float]] = {recipe: [] for recipe in recipes}
    try:
        for repeat in range(args.repeats):
            order = recipes if repeat % 2 == 0 else recipes[::-1]
            for recipe in order:
                seconds = run_recipe(recipe, table, outputs / recipe, scheduler, args.options.split())
                times[recipe].append(seconds)
                print(f"run {repeat + 1}: {recipe} {seconds:.2f} s", file=sys.stderr, flush=True)
    finally:
        if cluster is not None:
            cluster.close()
    median = {recipe: statistics.median(values) for recipe, values in times.items()}
    report = {
        "machine": {"python": platform.python_version(), "cores": _cores(), "system": platform.platform()},
        "studies": args.studies, "slices": args.slices, "repeats": args.repeats, "options": args.options,
        "wall_s": times,
        "outputs": str(outputs),
        "differing_pngs": {recipe: differing_pngs(outputs / "loop", outputs / recipe) for recipe in recipes},
    }
    (args.work / "batch-benchmark.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"{args.studies} studies of 512 x 512 x {args.slices}, 117 labels, options '{args.options}', written to "
          f"{outputs}; medians of {args.repeats} runs, "
          f"{_cores()} cores, Python {platform.python_version()}\n")
    print("| recipe | wall s | s per study | wall / loop | speed-up over workers-1 | label PNGs differing |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for recipe in recipes:
        print(f"| {recipe} | {median[recipe]:.2f} | {median[recipe] / args.studies:.3f} | "
              f"{median[recipe] / median['loop']:.2f} | {median['workers-1'] / median[recipe]:.2f} | "
              f"{report['differing_pngs'][recipe]} |")
    return 0


def _cores() -> int:
    from segalign.batch import default_workers

    return default_workers()


if __name__ == "__main__":
    sys.exit(main())
