"""``--volume`` against what users do today to get a CT and its labels as training volumes: dcm2niix for the image,
then nibabel to put the segmentation onto the image's grid.

    python Testing/benchmark/volume_benchmark.py                      # N = 300, 3 runs
    python Testing/benchmark/volume_benchmark.py --slices 100 300 --repeats 1

The case is benchmark.py's: a 512 x 512 x N CT series (InstanceNumber counting down, files in random name order) and
TotalSegmentator's 117 labels as one label map on a 1.5 mm LAS grid. Recipes, each its own process (wall time, CPU
time, peak resident memory of that process):

  segalign-volume   ``segalign export DICOM NIFTI -o OUT -q --volume``: the whole export (label PNGs, manifest,
                    labels.json, export.json) and image.nii.gz and labels.nii.gz (gzip level 1, nibabel's default)
  dcm2niix          ``dcm2niix -z y -f image -o OUT DICOM`` (the PyPI binary; gzip as it compresses by default)
  nibabel-resample  the recipe of nibabel's documentation: ``nibabel.processing.resample_from_to(segmentation,
                    image, order=0)`` onto dcm2niix's image, saved as labels.nii.gz (needs scipy)

Target (issue 25): segalign-volume in at most 0.5 x the wall time of dcm2niix plus nibabel-resample. The outputs
are compared too: the two images voxel for voxel, the two label volumes voxel for voxel (nearest neighbour on the
same grid may differ only where a voxel centre lies halfway between two segmentation voxels).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

RECIPES = ("segalign-volume", "dcm2niix", "nibabel-resample")
TARGET_RATIO = 0.5


def dcm2niix_command() -> str:
    try:
        import dcm2niix

        return str(dcm2niix.bin)
    except (ImportError, AttributeError):
        found = shutil.which("dcm2niix")
        if found is None:
            raise SystemExit("dcm2niix is not installed (pip install dcm2niix)") from None
        return found


def command(recipe: str, case: Path, out: Path, reference: Path) -> list[str]:
    """The child process of ``recipe``; ``reference`` is where the dcm2niix recipe wrote its image."""
    if recipe == "dcm2niix":
        return [dcm2niix_command(), "-z", "y", "-b", "n", "-f", "image", "-o", str(out), str(case / "dicom")]
    return [sys.executable, __file__, "run", recipe, str(case), str(out), str(reference)]


def run_recipe(recipe: str, case: Path, out: Path, reference: Path) -> None:
    if recipe == "segalign-volume":
        from segalign.cli import main

        raise SystemExit(main(["export", str(case / "dicom"), str(case / "segmentation.nii.gz"), "-o", str(out), "-q",
                               "--volume"]))
    if recipe == "nibabel-resample":
        import nibabel as nib
        from nibabel.processing import resample_from_to

        image = nib.load(str(reference / "image.nii.gz"))
        segmentation = nib.load(str(case / "segmentation.nii.gz"))
        labels = resample_from_to(segmentation, image, order=0, mode="constant", cval=0)
        out.mkdir(parents=True, exist_ok=True)
        nib.save(labels, str(out / "labels.nii.gz"))
        return
    raise SystemExit(f"unknown recipe {recipe}")


def measure(recipe: str, case: Path, out: Path, reference: Path) -> dict[str, float]:
    """Wall and CPU seconds and peak resident memory (MiB) of the recipe's process (its ru_maxrss, which also
    counts what it inherited from this process before it exec'd: this process never holds a volume, so that is
    the interpreter's few tens of MiB at most)."""
    if out.exists():
        shutil.rmtree(out)
    if recipe == "dcm2niix":
        out.mkdir(parents=True)
    started = time.perf_counter()
    with tempfile.TemporaryFile() as stderr:
        child = subprocess.Popen(command(recipe, case, out, reference), stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        stderr.seek(0)
        errors = stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"recipe {recipe} failed:\n{errors[-2000:]}")
    size = sum(p.stat().st_size for p in out.rglob("*.nii.gz")) / 1e6
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_mib": usage.ru_maxrss / 1024,
            "nifti_mb": size}


def compare(ours: Path, dcm2niix: Path, nibabel: Path) -> dict[str, object]:
    """Differing voxels: SegAlign's image against dcm2niix's, its labels against nibabel's resampled ones."""
    import nibabel as nib

    image, reference = nib.load(str(ours / "image.nii.gz")), nib.load(str(dcm2niix / "image.nii.gz"))
    labels, resampled = nib.load(str(ours / "labels.nii.gz")), nib.load(str(nibabel / "labels.nii.gz"))
    return {
        "image_voxels_differing": int(np.count_nonzero(image.get_fdata() != reference.get_fdata())),
        "image_affine_mm": float(np.abs(image.affine - reference.affine).max()),
        "label_voxels_differing": int(np.count_nonzero(np.asarray(labels.dataobj) != np.asarray(resampled.dataobj))),
        "label_voxels": int(np.count_nonzero(np.asarray(labels.dataobj))),
    }


def benchmark(work: Path, slices: int, repeats: int) -> dict:
    import benchmark as base

    case = base.prepare_case(work, slices)
    outputs = {recipe: work / f"out-volume-{slices}-{recipe}" for recipe in RECIPES}
    runs: dict[str, list[dict[str, float]]] = {recipe: [] for recipe in RECIPES}
    for _ in range(repeats):
        for recipe in RECIPES:  # in order: nibabel-resample reads dcm2niix's image
            runs[recipe].append(measure(recipe, case, outputs[recipe], outputs["dcm2niix"]))
    medians = {recipe: {key: statistics.median(run[key] for run in runs[recipe]) for key in runs[recipe][0]}
               for recipe in RECIPES}
    theirs = medians["dcm2niix"]["wall_s"] + medians["nibabel-resample"]["wall_s"]
    return {
        "slices": slices, "repeats": repeats, "medians": medians,
        "ratio": medians["segalign-volume"]["wall_s"] / theirs,
        "same": json.loads(subprocess.run(  # in a process of its own: the volumes must not swell this one
            [sys.executable, __file__, "compare", *(str(outputs[recipe]) for recipe in RECIPES)],
            check=True, capture_output=True, text=True).stdout),
    }


def table(report: dict) -> str:
    lines = [f"N = {report['slices']} ({report['repeats']} runs, medians)", "",
             "| recipe | wall s | CPU s | peak MiB | NIfTI MB |", "| --- | ---: | ---: | ---: | ---: |"]
    for recipe, row in report["medians"].items():
        lines.append(f"| {recipe} | {row['wall_s']:.2f} | {row['cpu_s']:.2f} | {row['peak_mib']:.0f} | "
                     f"{row['nifti_mb']:.1f} |")
    same = report["same"]
    lines += ["", f"segalign-volume / (dcm2niix + nibabel-resample): {report['ratio']:.2f} x (target at most "
              f"{TARGET_RATIO} x)",
              f"image: {same['image_voxels_differing']} voxels differ from dcm2niix's, affines within "
              f"{same['image_affine_mm']:.2g} mm; labels: {same['label_voxels_differing']} voxels differ from "
              f"nibabel's ({same['label_voxels']} labelled)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "run":
        run_recipe(argv[1], Path(argv[2]), Path(argv[3]), Path(argv[4]))
        return 0
    if argv and argv[0] == "compare":
        print(json.dumps(compare(Path(argv[1]), Path(argv[2]), Path(argv[3]))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, nargs="+", default=[300])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "segalign-benchmark")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    reports = []
    for slices in args.slices:
        report = benchmark(args.work, slices, args.repeats)
        reports.append(report)
        print(table(report) + "\n", flush=True)
    machine = {"python": platform.python_version(), "cpus": os.cpu_count()}
    (args.work / "volume_benchmark.json").write_text(json.dumps({"machine": machine, "reports": reports}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
