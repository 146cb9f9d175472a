"""The ``segalign`` commands, one function each, taking the parsed arguments and returning the exit status:
:func:`run_export` (and ``export --all-series``), :func:`run_batch_command`, :func:`run_jobs`, :func:`run_info`,
:func:`run_check` and :func:`run_demo`.

Errors are raised (``SegAlignError``, ``OSError``) for :func:`segalign.cli.main` to print on one line. A command
interrupted once it has done something says so by raising what the user should be told:
:class:`~segalign.signals.Interrupted` for an export that is complete, :class:`.output.CommandInterrupted`
otherwise.

:func:`segalign.cli.main` calls the commands module-qualified (``commands.run_info``) when it runs, so tests may
replace one here.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
from pathlib import Path

from ..dicom import DicomScan, Series, diagnose, scan_folder
from ..errors import SegAlignError, one_line
from ..export import export_segmentation
from ..readers import SEGMENTATION_SUFFIXES, load_segmentations, structure_set_series
from ..segmentation import Segmentation
from ..signals import Interrupted, signal_number
from .output import CommandInterrupted, Reporter, print_error, write_line
from .parser import export_options, read_options
from .progress import ProgressBar, job_progress


def run_export(args: argparse.Namespace) -> int:
    """``segalign export``: scan, load, export, then report warnings and a summary."""
    bar = ProgressBar("frames", quiet=args.quiet)
    report = Reporter(args.quiet)
    _refuse_swapped(args.dicom_dir, args.segmentation[0])
    scan = scan_folder(args.dicom_dir)
    if args.all_series:
        if args.series is not None:
            raise SegAlignError("give --series or --all-series, not both")
        return _run_all_series(args, scan, bar, report)
    series = _chosen_series(scan, args.series, args.segmentation)
    segmentation = _load(args, scan)
    result = export_segmentation(
        series,
        segmentation,
        args.output,
        export_options(args),
        dicom_root=args.dicom_dir,
        overwrite=args.overwrite,
        warnings=scan.warnings,
        progress=bar.update,
        other_inputs=[args.labels] if args.labels and Path(args.labels).exists() else [],
    )
    try:
        bar.finish()
        for warning in result.warnings:
            report.warn(warning)
        names = ", ".join(segmentation.label_table[v].name for v in result.labels_found[:8])
        more = f" and {len(result.labels_found) - 8} more" if len(result.labels_found) > 8 else ""
        report.say(
            f"wrote {result.frames} frames of series {series.uid or '(no SeriesInstanceUID)'} to {result.output_dir}\n"
            f"  {len(result.labels_found)} labels on the frames: {names or 'none'}{more}\n"
            f"  manifest: {result.manifest}"
            + (f"\n  preview:  {result.output_dir / 'index.html'}" if args.overlays and not args.no_preview else "")
            + (f"\n  DICOM SEG: {result.output_dir / result.outputs['dicom_seg']}"
               if "dicom_seg" in result.outputs else "")
            + (f"\n  RTSTRUCT: {result.output_dir / result.outputs['rtstruct']}"
               if "rtstruct" in result.outputs else "")
            + (f"\n  volumes:  {result.output_dir / result.outputs['volume_image']}, "
               f"{result.outputs['volume_labels']}" if "volume_image" in result.outputs else "")
        )
    except KeyboardInterrupt as interrupt:  # interrupted from here on, the export is complete all the same
        raise Interrupted(signal_number(interrupt), result.output_dir) from None
    return 0


def _run_all_series(args: argparse.Namespace, scan: DicomScan, bar: ProgressBar, report: Reporter) -> int:
    """``segalign export --all-series``: one export per series; a table of every series; exit 1 if one failed or
    none was exported."""
    from ..export import export_all_series

    segmentation = _load(args, scan)
    outcomes = export_all_series(
        scan, segmentation, args.output, export_options(args), overwrite=args.overwrite,
        other_inputs=[args.labels] if args.labels and Path(args.labels).exists() else [],
        progress=lambda done, total, outcome: bar.update(done, total),
    )
    bar.finish()
    for warning in scan.warnings + segmentation.warnings:
        report.warn(warning)
    exported = [outcome for outcome in outcomes if outcome.status == "exported"]
    failed = [outcome for outcome in outcomes if outcome.status == "failed"]
    lines = [f"{len(exported)} of {len(outcomes)} series exported to {Path(args.output).absolute()} "
             f"(series.csv lists them all)"]
    for outcome in outcomes:
        where = outcome.folder + "/" if outcome.status == "exported" else "-"
        lines.append(f"  {outcome.status:<25} {where:<28} {len(outcome.series.frames):>5} frames  "
                     f"{one_line(outcome.series.description or outcome.series.modality, 40)}: {outcome.detail}")
    report.say("\n".join(lines))
    if failed:
        print_error(f"{len(failed)} series could not be exported", [f"{o.folder}: {o.detail}" for o in failed])
        return 1
    if not exported:
        print_error(f"the segmentation lies on none of the {len(outcomes)} series of {args.dicom_dir}")
        return 1
    return 0


#: Segmentation file names that are never a DICOM file (a .dcm may be either).
NOT_DICOM_SUFFIXES = tuple(suffix for suffix in SEGMENTATION_SUFFIXES if suffix != ".dcm")


def _load(args: argparse.Namespace, scan: DicomScan) -> Segmentation:
    """The segmentation (or several, as one) of ``segalign export``; an RT Structure Set is placed on the series of
    DICOM_DIR it was drawn on."""
    return load_segmentations(
        args.segmentation, label_table=args.labels, overlap=args.overlap, allow_many_labels=args.allow_many_labels,
        reference=scan.series, skip_unplaced_contours=args.skip_unplaced_contours,
    )


def _chosen_series(scan: DicomScan, series: str | None, segmentations: list[Path]) -> Series:
    """The series to export: the one ``--series`` names; else, of a folder of several, the one an RT Structure Set
    given as the segmentation was drawn on; else the only one (:meth:`DicomScan.select` refuses otherwise)."""
    if series is None and len(scan.series) > 1 and len(segmentations) == 1:
        drawn_on = structure_set_series(segmentations[0], scan.series)
        if drawn_on is not None:
            return drawn_on
    return scan.select(series)


def _refuse_swapped(dicom_dir: Path, segmentation: Path) -> None:
    """Say that DICOM_DIR and SEGMENTATION look swapped, rather than that a DICOM folder is 'not found'."""
    try:
        looks_like_segmentation = dicom_dir.is_file() and dicom_dir.name.lower().endswith(NOT_DICOM_SUFFIXES)
        swapped = looks_like_segmentation and segmentation.is_dir()
    except OSError:  # a path the file system cannot even look up: the scan says so
        return
    if swapped:
        raise SegAlignError(
            f"the arguments look swapped: DICOM_DIR {dicom_dir} is a segmentation file and SEGMENTATION "
            f"{segmentation} is a folder; the order is: segalign export DICOM_DIR SEGMENTATION -o OUT_DIR"
        )


#: What an interrupted batch leaves.
BATCH_STOPPED = "the batch stopped; run the same command again to finish it (complete jobs are skipped)"


def run_batch_command(args: argparse.Namespace) -> int:
    """``segalign batch``: read the jobs, run them, print the failed ones and a one-line summary; exit 1 if any
    job failed."""
    from ..batch import find_jobs, read_jobs, run_batch

    report = Reporter(args.quiet)
    if args.jobs.is_dir():
        jobs, notes = find_jobs(args.jobs, dicom=args.dicom, segmentation=args.segmentation)
        for note in notes:
            report.note(f"not a job: {note}")
        if not jobs:
            raise SegAlignError(f"no jobs found in {args.jobs} (see 'segalign jobs --help' for the layouts)")
    else:
        if args.dicom or args.segmentation:
            raise SegAlignError("--dicom and --segmentation choose within a folder of studies; JOBS is a table")
        jobs = read_jobs(args.jobs)
    bar = ProgressBar("jobs", quiet=args.quiet, interval=0)  # every job drawn: jobs end seconds apart
    try:
        result = run_batch(
            jobs, args.output, export_options(args), read_options(args), workers=args.workers,
            scheduler=args.scheduler, num_parts=args.num_parts, part_id=args.part_id, redo=args.redo,
            progress=job_progress(bar), studies=args.jobs if args.jobs.is_dir() else None,
            nnunet=args.nnunet,
        )
        bar.finish()
        for note in result.notes:
            report.note(note)
        if not args.quiet:
            print(f"batch: {result.summary()}")
    except KeyboardInterrupt as interrupt:  # also one that found a job's export complete: the batch is not
        bar.finish()
        raise CommandInterrupted(signal_number(interrupt), BATCH_STOPPED) from None
    return 1 if result.failed else 0


def run_jobs(args: argparse.Namespace) -> int:
    """``segalign jobs``: the jobs table of a folder of studies, printed or written; exit 1 when there is none."""
    from ..batch import JOB_COLUMNS, find_jobs, write_jobs

    jobs, notes = find_jobs(args.root, dicom=args.dicom, segmentation=args.segmentation)
    report = Reporter(quiet=False)
    for note in notes:
        report.note(f"not a job: {note}")
    if args.output is not None:
        write_jobs(jobs, args.output)
        write_line(sys.stderr, f"{len(jobs)} jobs written to {args.output}")
    else:
        import csv

        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(JOB_COLUMNS)
        for job in jobs:
            writer.writerow([job.dicom_dir.absolute(), job.segmentation.absolute(), job.series or "", job.name])
    return 0 if jobs else 1


def run_info(args: argparse.Namespace) -> int:
    """``segalign info``: describe every image series of a folder, as text or JSON; exit 1 when there is none."""
    scan = scan_folder(args.dicom_dir)
    reports = [diagnose(series, scan.root) for series in scan.series]
    none = f"no DICOM image series with patient geometry in {args.dicom_dir}"
    if args.json:  # the JSON on standard output, the error (if any) on standard error
        print(json.dumps({"folder": str(args.dicom_dir), "series": [r.as_dict() for r in reports],
                          "warnings": scan.warnings}, indent=2, allow_nan=False))
        if not reports:
            print_error(none)
        return 0 if reports else 1
    for warning in scan.warnings:
        print(f"note: {warning}")
    if not reports:
        print_error(none)
        return 1
    if len(reports) > 1:
        print(f"{len(reports)} series (export one with --series and its UID, SeriesNumber or index):")
        print("\n".join(f"  {line}" for line in scan.listing()) + "\n")
    print("\n\n".join(
        (f"[{index}] " if len(reports) > 1 else "") + report.to_text() for index, report in enumerate(reports, 1)
    ))
    return 0


def run_check(args: argparse.Namespace) -> int:
    """``segalign check``: compare an export with the truth and print what is wrong with it (text or JSON), and
    write the report folder if asked; exit 0 when exact, 1 when not, 2 when the two cannot be compared (one line
    on standard error saying why)."""
    from ..check import check_export
    from ..check.report import refuse_report_folder

    try:
        if args.output is not None:
            refuse_report_folder(args.output, [args.dicom_dir, args.export])
        result = check_export(args.dicom_dir, args.segmentation, args.export, series=args.series,
                              label_table=args.labels)
    except SegAlignError as error:
        print_error(f"cannot compare: {error.cli_message}")
        return 2
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        print_error(f"cannot compare: {where}{error.strerror or error}")
        return 2
    if args.json:
        print(json.dumps(result.as_dict(), indent=2, allow_nan=False))
    else:
        write_line(sys.stdout, result.to_text())
    if args.output is not None:
        try:
            result.write_report(args.output)
        except (SegAlignError, OSError) as error:
            print_error(f"the report cannot be written: {getattr(error, 'cli_message', None) or error}")
            return 2
        if not args.json:
            write_line(sys.stdout, f"report: {args.output / 'index.html'}")
    return 0 if result.exact else 1


def invocation() -> str:
    """How to run this segalign again from a shell: ``segalign`` when that is the command on the PATH that runs
    this Python, else this Python with ``-m segalign`` (a virtual environment that is not activated)."""
    found = shutil.which("segalign")
    here = Path(sys.executable).parent
    if found is not None and Path(found).resolve().parent in (here, here.resolve()):
        return "segalign"
    return f"{shlex.quote(sys.executable)} -m segalign"


def run_demo(args: argparse.Namespace) -> int:
    """``segalign demo``: write the synthetic CT and segmentation, export, and say where everything is."""
    from ..demo import run_demo as demo  # the phantom writer is only needed here

    bar = ProgressBar("frames", quiet=args.quiet)
    report = Reporter(args.quiet)
    try:
        paths = demo(args.output, slices=args.slices, progress=bar.update)
        bar.finish()
        report.say(
            "demo finished\n"
            f"  DICOM series:     {paths.dicom_dir}\n"
            f"  segmentation:     {paths.segmentation}\n"
            f"  export:           {paths.export_dir}  (labels/*.png, overlays/*.png, manifest.csv, labels.json)\n"
            f"  DICOM SEG:        {paths.export_dir / 'seg.dcm'}  (open it with the series in Slicer or OHIF)\n"
            f"  preview page:     {paths.export_dir / 'index.html'}  (open it in a browser)\n"
            f"  same as:          {invocation()} export {paths.dicom_dir} {paths.segmentation} -o {paths.export_dir} "
            "--overlays --dicom-seg --overwrite"
        )
    except Interrupted:  # an interrupt that found the demo's export complete says so
        raise
    except KeyboardInterrupt as interrupt:
        raise CommandInterrupted(signal_number(interrupt), "the demo did not finish; run it again") from None
    return 0
