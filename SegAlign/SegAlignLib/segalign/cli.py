"""The ``segalign`` command line: ``export``, ``batch``, ``jobs``, ``info`` and ``demo``.

User errors print one line (``segalign: error: ...``, then any details indented on the lines after it) and exit
with status 1; an export interrupted by Ctrl-C, SIGTERM or SIGHUP exits with 128 + the signal's number (130 for
Ctrl-C) and leaves nothing behind.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Sequence, TextIO

from .version import __version__
from .diagnosis import diagnose
from .dicom import DicomScan, scan_folder
from .errors import MESSAGE_LIMIT, SegAlignError, one_line
from .export import export_segmentation
from .options import ExportOptions, ReadOptions, SegmentationType
from .readers import ACCEPTED, SEGMENTATION_SUFFIXES, load_segmentation
from .signals import Interrupted, Signalled, signal_number, signals_as_interrupts


#: The longest message line printed, and the most detail lines after it: a 10,000-character header value or a
#: listing of 5,000 series never floods the terminal.
DETAIL_LIMIT = 20


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    Errors print one line (then their details), exit 1. Ctrl-C, SIGTERM and SIGHUP stop the command as Ctrl-C
    does, with one line and exit status 128 + the signal's number (130 for Ctrl-C).
    """
    parser = build_parser()
    args = parser.parse_args(_join_negative_window(list(sys.argv[1:] if argv is None else argv)))
    with signals_as_interrupts():
        try:
            return int(args.run(args) or 0)
        except SegAlignError as error:
            _print_error(error.cli_message, error.details)
            return 1
        except OSError as error:  # the file system said no (permissions, a file where a folder should be...)
            where = f"{error.filename}: " if error.filename else ""
            _print_error(f"{where}{error.strerror or error}")
            return 1
        except KeyboardInterrupt as interrupt:
            number = signal_number(interrupt)
            by = "" if number == signal.SIGINT else f" by {signal.Signals(number).name}"
            written = interrupt.written if isinstance(interrupt, Interrupted) else getattr(args, "written", None)
            what = f"the export in {written} is complete" if written else getattr(args, "interrupted", None)
            _write_line(sys.stderr, f"segalign: interrupted{by}; {what or 'nothing was written'}")
            return 128 + int(number)


def _one_line(text: object, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` on one line (whitespace collapsed), cut to ``limit`` characters with an ellipsis."""
    return one_line(text, limit)


def _write_line(stream: TextIO, line: str) -> None:
    """Write a line that may hold anything (a path of undecodable bytes, characters the terminal cannot show):
    what the stream's encoding cannot represent is written as backslash escapes rather than failing."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        line = line.encode(encoding, "backslashreplace").decode(encoding, "replace")
    except LookupError:
        line = line.encode("ascii", "backslashreplace").decode("ascii")
    stream.write(line + "\n")
    stream.flush()


def _print_error(message: str, details: Sequence[str] = ()) -> None:
    """``segalign: error: MESSAGE`` on one line, then each detail indented on its own line (at most
    :data:`DETAIL_LIMIT`)."""
    _write_line(sys.stderr, f"segalign: error: {_one_line(message)}")
    shown = details if len(details) <= DETAIL_LIMIT else details[:DETAIL_LIMIT - 1]
    for detail in shown:
        _write_line(sys.stderr, f"  {_one_line(detail)}")
    if len(shown) < len(details):
        _write_line(sys.stderr, f"  ... and {len(details) - len(shown)} more")


def _join_negative_window(argv: list[str]) -> list[str]:
    """``--window -600,1500`` as ``--window=-600,1500``: argparse would take the negative centre for an option."""
    joined: list[str] = []
    index = 0
    while index < len(argv):
        if argv[index] == "--window" and index + 1 < len(argv) and argv[index + 1].startswith("-"):
            joined.append(f"--window={argv[index + 1]}")
            index += 2
        else:
            joined.append(argv[index])
            index += 1
    return joined


def build_parser() -> argparse.ArgumentParser:
    """The ``segalign`` argument parser: commands export, batch, jobs, info and demo."""
    parser = argparse.ArgumentParser(
        prog="segalign",
        description="Put a NIfTI segmentation on its DICOM frames, pixel for pixel, in native acquisition order.",
    )
    parser.add_argument("--version", action="version", version=f"segalign {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    export = commands.add_parser(
        "export",
        help="write one label PNG per DICOM frame, and a manifest",
        description="Sample SEGMENTATION on every frame of the DICOM series in DICOM_DIR and write OUT_DIR/labels/*.png "
        "(one per frame, laid out like pixel_array), OUT_DIR/manifest.csv and OUT_DIR/labels.json.",
    )
    export.add_argument("dicom_dir", metavar="DICOM_DIR", type=Path, help="folder with the DICOM series (searched recursively)")
    export.add_argument(
        "segmentation", metavar="SEGMENTATION", type=Path,
        help=f"the segmentation: {ACCEPTED} (chosen by content)",
    )
    export.add_argument("-o", "--output", required=True, type=Path, metavar="OUT_DIR", help="output folder")
    export.add_argument(
        "--series", metavar="SERIES",
        help="the series to export when DICOM_DIR holds several: its SeriesInstanceUID, its SeriesNumber, or its "
        "index in the list 'segalign info' prints (ambiguous numbers are refused)",
    )
    export.add_argument(
        "--all-series", action="store_true",
        help="export onto every series of DICOM_DIR the segmentation belongs to (its frame of reference for a "
        "DICOM SEG, else every series it overlaps), each into OUT_DIR/<series folder>/, listed in OUT_DIR/series.csv",
    )
    add_export_options(export)
    export.add_argument(
        "--overwrite", action="store_true",
        help="replace OUT_DIR if it is an earlier SegAlign export; other folders are never replaced",
    )
    export.add_argument("-q", "--quiet", action="store_true", help="no progress bar, warnings or summary")
    export.set_defaults(run=run_export)

    batch = commands.add_parser(
        "batch", help="export a cohort: one export per job of a jobs table, resumable, locally or on Dask",
        description="Export every job of JOBS (a CSV with columns dicom_dir,segmentation[,series,name], paths "
        "relative to its folder; or a folder of studies, as 'segalign jobs' reads it) into OUT_ROOT/<name>/, as "
        "'segalign export' writes it, and OUT_ROOT/batch.csv (name,status,frames,seconds,error,...). Run it again "
        "to resume: complete jobs whose inputs did not change are skipped, failed and changed ones are redone.",
    )
    batch.add_argument("jobs", metavar="JOBS", type=Path, help="the jobs table (CSV), or a folder of studies")
    batch.add_argument("-o", "--output", required=True, type=Path, metavar="OUT_ROOT", help="folder of the exports")
    where = batch.add_mutually_exclusive_group()
    where.add_argument(
        "--workers", type=int, metavar="N",
        help="jobs at once on this machine, each in its own process (default: the number of cores)",
    )
    where.add_argument(
        "--scheduler", metavar="ADDRESS",
        help="run the jobs on the Dask cluster whose scheduler is at ADDRESS (tcp://HOST:PORT); its workers must "
        "see the inputs and OUT_ROOT at the same paths (needs pip install 'segalign[dask]')",
    )
    batch.add_argument("--num-parts", type=int, default=1, metavar="K",
                       help="run only every K-th job (for job arrays; with --part-id)")
    batch.add_argument("--part-id", type=int, default=0, metavar="I",
                       help="with --num-parts: run jobs I, I+K, I+2K... (0..K-1); a last run without them writes "
                       "the whole batch.csv")
    batch.add_argument("--redo", action="store_true", help="export every job again, even complete ones")
    add_study_patterns(batch, "with a folder of studies: ")
    add_export_options(batch)
    batch.add_argument("-q", "--quiet", action="store_true", help="no progress bar, job errors or summary")
    batch.set_defaults(run=run_batch_command)

    jobs = commands.add_parser(
        "jobs", help="write the jobs table of a folder of studies",
        description="Find the jobs of ROOT, one per study folder: a folder holding a DICOM folder (or DICOM files) "
        "and one segmentation (a NIfTI file or a folder of NIfTI masks such as TotalSegmentator's), or a DICOM "
        "folder with its segmentation beside it (STUDY/ and STUDY.nii.gz). Folders that are not one job are listed.",
    )
    jobs.add_argument("root", metavar="ROOT", type=Path, help="folder of study folders (or one study folder)")
    jobs.add_argument("-o", "--output", type=Path, metavar="JOBS_CSV", help="write the table here (default: print it)")
    add_study_patterns(jobs)
    jobs.set_defaults(run=run_jobs)

    info = commands.add_parser(
        "info", help="describe the DICOM series in a folder",
        description="Describe every image series in DICOM_DIR: orientation, stacking, spacing, tilt, duplicates.",
    )
    info.add_argument("dicom_dir", metavar="DICOM_DIR", type=Path)
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.set_defaults(run=run_info)

    demo = commands.add_parser(
        "demo", help="make a synthetic CT and segmentation, and export it",
        description="Write a synthetic 512x512 CT series (InstanceNumber counting down) and a TotalSegmentator-style "
        "LAS segmentation with an embedded label table, then export it.",
    )
    demo.add_argument("-o", "--output", type=Path, default=Path("segalign-demo"), help="folder for the demo (default: ./segalign-demo)")
    demo.add_argument("--slices", type=int, default=80, help="number of CT slices (default 80)")
    demo.add_argument("-q", "--quiet", action="store_true")
    demo.set_defaults(run=run_demo)
    return parser


def add_study_patterns(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """``--dicom`` and ``--segmentation``: which folder and file of a study folder are its job (find_jobs)."""
    parser.add_argument("--dicom", metavar="PATTERN",
                        help=f"{prefix}the DICOM folder's name pattern, when a study holds several")
    parser.add_argument("--segmentation", metavar="PATTERN",
                        help=f"{prefix}the segmentation's name pattern (e.g. '*.nii.gz'), when a study holds several")


def add_export_options(parser: argparse.ArgumentParser) -> None:
    """The flags that say what an export writes and how the segmentation is read, shared by ``export`` and
    ``batch`` (:meth:`ExportOptions.from_args` and :meth:`ReadOptions.from_args` read them back)."""
    parser.add_argument(
        "--order", choices=["instance", "position"], default="instance",
        help="instance: InstanceNumber then frame (native, the default); position: along the slice normal",
    )
    parser.add_argument("--masks", action="store_true", help="also write one binary PNG per segment per frame")
    parser.add_argument(
        "--overlays", action="store_true",
        help="also write the frames with the labels drawn on them (overlays/*.png) and the index.html preview page",
    )
    parser.add_argument(
        "--no-preview", action="store_true",
        help="with --overlays: no index.html preview page and no viewer/ (its per-frame data, about twice the size "
        "of the overlay PNGs)",
    )
    parser.add_argument(
        "--images", action="store_true",
        help="also write each frame's pixels as a 16-bit PNG (images/*.png; the manifest gives slope and intercept)",
    )
    parser.add_argument("--stats", action="store_true", help="per-label pixel counts and areas (mm2) in the manifest")
    parser.add_argument(
        "--split-mosaics", action="store_true",
        help="Siemens mosaics: one image per slice (tile), each with its own geometry in the manifest, instead of "
        "one label mosaic per frame laid out like pixel_array (the default; tiles.csv says where each tile lies)",
    )
    parser.add_argument(
        "--window", metavar="CENTER,WIDTH|PRESET",
        help="overlay window: CENTER,WIDTH or abdomen, bone, brain, lung, mediastinum (default: each frame's own)",
    )
    parser.add_argument("--alpha", type=float, default=0.4, help="overlay label opacity, 0..1 (default 0.4)")
    parser.add_argument("--outline", action="store_true", help="draw label outlines instead of filled labels")
    parser.add_argument(
        "--dicom-seg", action="store_true",
        help="also write OUT_DIR/seg.dcm: a DICOM Segmentation on the series' own frames, for PACS, OHIF and Slicer",
    )
    parser.add_argument(
        "--dicom-seg-type", choices=[member.value for member in SegmentationType], default=None,
        help="binary: one 1-bit frame per segment per frame, readable everywhere (default); labelmap: one "
        "RLE-compressed frame per frame holding all segments (much smaller; newer readers); implies --dicom-seg",
    )
    parser.add_argument(
        "--rtstruct", action="store_true",
        help="also write OUT_DIR/rtstruct.dcm: an RT Structure Set whose contours follow the pixel edges of every "
        "frame, for planning systems and SlicerRT",
    )
    parser.add_argument(
        "--labels", metavar="TABLE",
        help="label names and colours: CSV value,name[,r,g,b], a Slicer color table, or 'totalsegmentator' "
        "(the built-in TotalSegmentator v2 'total' classes)",
    )
    parser.add_argument(
        "--overlap", choices=["error", "later-wins"], default="error",
        help="where masks of a folder overlap: refuse (default) or let the later file in name order win",
    )
    parser.add_argument(
        "--allow-many-labels", action="store_true",
        help="accept a segmentation that looks like an intensity image (hundreds of values, smooth histogram)",
    )


def run_export(args: argparse.Namespace) -> int:
    """``segalign export``: scan, load, export, then report warnings and a summary."""
    report = _Reporter(quiet=args.quiet)
    _refuse_swapped(args.dicom_dir, args.segmentation)
    scan = scan_folder(args.dicom_dir)
    if args.all_series:
        if args.series is not None:
            raise SegAlignError("give --series or --all-series, not both")
        return _run_all_series(args, scan, report)
    series = scan.select(args.series)
    segmentation = load_segmentation(
        args.segmentation, label_table=args.labels, overlap=args.overlap, allow_many_labels=args.allow_many_labels
    )
    result = export_segmentation(
        series,
        segmentation,
        args.output,
        ExportOptions.from_args(args),
        dicom_root=args.dicom_dir,
        overwrite=args.overwrite,
        warnings=scan.warnings,
        progress=report.progress,
        other_inputs=[args.labels] if args.labels and Path(args.labels).exists() else [],
    )
    args.written = result.output_dir  # interrupted from here on, the export is complete all the same
    report.done()
    for warning in result.warnings:
        report.warn(warning)
    names = ", ".join(segmentation.label_table[v].name for v in result.labels_found[:8])
    more = f" and {len(result.labels_found) - 8} more" if len(result.labels_found) > 8 else ""
    report.say(
        f"wrote {result.frames} frames of series {series.uid or '(no SeriesInstanceUID)'} to {result.output_dir}\n"
        f"  {len(result.labels_found)} labels on the frames: {names or 'none'}{more}\n"
        f"  manifest: {result.manifest}"
        + (f"\n  preview:  {result.output_dir / 'index.html'}" if args.overlays and not args.no_preview else "")
        + (f"\n  DICOM SEG: {result.output_dir / result.outputs['dicom_seg']}" if "dicom_seg" in result.outputs else "")
        + (f"\n  RTSTRUCT: {result.output_dir / result.outputs['rtstruct']}" if "rtstruct" in result.outputs else "")
    )
    return 0


def run_batch_command(args: argparse.Namespace) -> int:
    """``segalign batch``: read the jobs, run them, print the failed ones and a one-line summary; exit 1 if any
    job failed."""
    from .batch import find_jobs, read_jobs, run_batch

    if args.jobs.is_dir():
        jobs, notes = find_jobs(args.jobs, dicom=args.dicom, segmentation=args.segmentation)
        for note in notes:
            if not args.quiet:
                _write_line(sys.stderr, f"segalign: note: not a job: {note}")
        if not jobs:
            raise SegAlignError(f"no jobs found in {args.jobs} (see 'segalign jobs --help' for the layouts)")
    else:
        if args.dicom or args.segmentation:
            raise SegAlignError("--dicom and --segmentation choose within a folder of studies; JOBS is a table")
        jobs = read_jobs(args.jobs)
    progress = _BatchProgress(args.quiet)
    args.interrupted = "the batch stopped; run the same command again to finish it (complete jobs are skipped)"
    try:
        result = run_batch(
            jobs, args.output, ExportOptions.from_args(args), ReadOptions.from_args(args), workers=args.workers,
            scheduler=args.scheduler, num_parts=args.num_parts, part_id=args.part_id, redo=args.redo,
            progress=progress.update,
        )
    except Interrupted as interrupt:  # one job's export is complete; the batch is not
        progress.done()
        raise (KeyboardInterrupt() if interrupt.signum == signal.SIGINT else Signalled(interrupt.signum)) from None
    except KeyboardInterrupt:
        progress.done()
        raise
    progress.done()
    if not args.quiet:
        for note in result.notes:
            _write_line(sys.stderr, f"segalign: note: {note}")
        print(f"batch: {result.summary()}")
    return 1 if result.failed else 0


def run_jobs(args: argparse.Namespace) -> int:
    """``segalign jobs``: the jobs table of a folder of studies, printed or written; exit 1 when there is none."""
    from .batch import JOB_COLUMNS, find_jobs, write_jobs

    jobs, notes = find_jobs(args.root, dicom=args.dicom, segmentation=args.segmentation)
    for note in notes:
        _write_line(sys.stderr, f"segalign: note: not a job: {note}")
    if args.output is not None:
        write_jobs(jobs, args.output)
        _write_line(sys.stderr, f"{len(jobs)} jobs written to {args.output}")
    else:
        import csv

        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(JOB_COLUMNS)
        for job in jobs:
            writer.writerow([job.dicom_dir.absolute(), job.segmentation.absolute(), job.series or "", job.name])
    return 0 if jobs else 1


class _BatchProgress:
    """The batch's progress bar on a terminal (jobs done, failed, rate, time left), and each failed job's line."""

    def __init__(self, quiet: bool, stream: TextIO | None = None) -> None:
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.bar = not quiet and self.stream.isatty()
        self.start = time.monotonic()
        self._shown = False

    def update(self, done: int, total: int, failed: int, result: object) -> None:
        if self.quiet:
            return
        if getattr(result, "status", "") == "failed":
            self.done()
            _write_line(self.stream, f"segalign: job {result.name} failed: {result.error}")  # type: ignore[attr-defined]
        if not self.bar:
            return
        elapsed = max(time.monotonic() - self.start, 1e-6)
        rate = done / elapsed
        left = (total - done) / rate if rate > 0 else 0.0
        width = 30
        filled = width * done // max(total, 1)
        self.stream.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} jobs, {failed} failed, "
            f"{rate * 60:.1f} jobs/min, {_duration(left)} left "
        )
        self.stream.flush()
        self._shown = True

    def done(self) -> None:
        if self._shown:
            self.stream.write("\n")
            self._shown = False


def _duration(seconds: float) -> str:
    """``1:02:03`` or ``2:03``."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _run_all_series(args: argparse.Namespace, scan: DicomScan, report: "_Reporter") -> int:
    """``segalign export --all-series``: one export per series; a table of every series; exit 1 if one failed or
    none was exported."""
    from .export import export_all_series

    segmentation = load_segmentation(
        args.segmentation, label_table=args.labels, overlap=args.overlap, allow_many_labels=args.allow_many_labels
    )
    outcomes = export_all_series(
        scan, segmentation, args.output, ExportOptions.from_args(args), overwrite=args.overwrite,
        other_inputs=[args.labels] if args.labels and Path(args.labels).exists() else [],
        progress=lambda done, total, outcome: report.progress(done, total),
    )
    report.done()
    for warning in scan.warnings + segmentation.warnings:
        report.warn(warning)
    exported = [outcome for outcome in outcomes if outcome.status == "exported"]
    failed = [outcome for outcome in outcomes if outcome.status == "failed"]
    lines = [f"{len(exported)} of {len(outcomes)} series exported to {Path(args.output).absolute()} "
             f"(series.csv lists them all)"]
    for outcome in outcomes:
        where = outcome.folder + "/" if outcome.status == "exported" else "-"
        lines.append(f"  {outcome.status:<25} {where:<28} {len(outcome.series.frames):>5} frames  "
                     f"{_one_line(outcome.series.description or outcome.series.modality, 40)}: {outcome.detail}")
    report.say("\n".join(lines))
    if failed:
        _print_error(f"{len(failed)} series could not be exported", [f"{o.folder}: {o.detail}" for o in failed])
        return 1
    if not exported:
        _print_error(f"the segmentation lies on none of the {len(outcomes)} series of {args.dicom_dir}")
        return 1
    return 0


#: Segmentation file names that are never a DICOM file (a .dcm may be either).
NOT_DICOM_SUFFIXES = tuple(suffix for suffix in SEGMENTATION_SUFFIXES if suffix != ".dcm")


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




def run_info(args: argparse.Namespace) -> int:
    """``segalign info``: describe every image series of a folder, as text or JSON; exit 1 when there is none."""
    scan = scan_folder(args.dicom_dir)
    reports = [diagnose(series, scan.root) for series in scan.series]
    if args.json:
        print(json.dumps({"folder": str(args.dicom_dir), "series": [r.as_dict() for r in reports],
                          "warnings": scan.warnings}, indent=2, allow_nan=False))
        return 0 if reports else 1
    for warning in scan.warnings:
        print(f"note: {warning}")
    if not reports:
        print(f"no DICOM image series with patient geometry in {args.dicom_dir}")
        return 1
    if len(reports) > 1:
        print(f"{len(reports)} series (export one with --series and its UID, SeriesNumber or index):")
        print("\n".join(f"  {line}" for line in scan.listing()) + "\n")
    print("\n\n".join(
        (f"[{index}] " if len(reports) > 1 else "") + report.to_text() for index, report in enumerate(reports, 1)
    ))
    return 0


def run_demo(args: argparse.Namespace) -> int:
    """``segalign demo``: write the synthetic CT and segmentation, export, and say where everything is."""
    from .demo import run_demo as demo  # the phantom writer is only needed here

    report = _Reporter(quiet=args.quiet)
    args.interrupted = "the demo did not finish; run it again"
    paths = demo(args.output, slices=args.slices, progress=report.progress)
    report.done()
    report.say(
        "demo finished\n"
        f"  DICOM series:     {paths.dicom_dir}\n"
        f"  segmentation:     {paths.segmentation}\n"
        f"  export:           {paths.export_dir}  (labels/*.png, overlays/*.png, manifest.csv, labels.json)\n"
        f"  DICOM SEG:        {paths.export_dir / 'seg.dcm'}  (open it with the series in Slicer or OHIF)\n"
        f"  preview page:     {paths.export_dir / 'index.html'}  (open it in a browser)\n"
        f"  same as:          segalign export {paths.dicom_dir} {paths.segmentation} -o {paths.export_dir} --overlays --dicom-seg --overwrite"
    )
    return 0


class _Reporter:
    """Progress bar (only on a terminal), warnings and the summary, all silenced by --quiet."""

    def __init__(self, quiet: bool, stream: TextIO | None = None) -> None:
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.bar = not quiet and self.stream.isatty()
        self._shown = False
        self._last = 0.0

    def progress(self, done: int, total: int) -> None:
        if not self.bar:
            return
        now = time.monotonic()
        if done < total and now - self._last < 0.1:
            return
        self._last = now
        width = 30
        filled = width * done // max(total, 1)
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} frames")
        self.stream.flush()
        self._shown = True

    def done(self) -> None:
        if self._shown:
            self.stream.write("\n")
            self._shown = False

    def warn(self, message: str) -> None:
        if not self.quiet:
            _write_line(self.stream, f"segalign: warning: {message}")

    def say(self, message: str) -> None:
        if not self.quiet:
            _write_line(sys.stdout, message)
