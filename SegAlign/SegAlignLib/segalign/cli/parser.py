"""The ``segalign`` command line's arguments: the parser (:func:`build_parser`, its commands and their option
groups) and the translation of parsed arguments into the option objects every front end shares
(:func:`export_options`, :func:`read_options`). Only this module knows argparse's names for the options."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from ..errors import SegAlignError
from ..options import (
    DicomSegOptions, ExportOptions, OverlayOptions, ReadOptions, RtStructOptions, SegmentationType, VolumeFormat,
    VolumeOptions,
)
from ..readers import ACCEPTED
from ..version import __version__


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    """``argv`` parsed (argparse exits with its usage message on a mistake); no command at all prints the list of
    commands, each with its line, and exits with status 2."""
    parser = build_parser()
    if not argv:
        parser.print_help(sys.stderr)
        parser.exit(2)
    return parser.parse_args(join_negative_window(list(argv)))


def join_negative_window(argv: list[str]) -> list[str]:
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
    """The ``segalign`` argument parser: commands export, batch, jobs, info, check and demo (``args.command`` names the
    one given)."""
    parser = argparse.ArgumentParser(
        prog="segalign",
        description="Put a NIfTI segmentation on its DICOM frames, pixel for pixel, in native acquisition order.",
    )
    parser.add_argument("--version", action="version", version=f"segalign {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    export = commands.add_parser(
        "export",
        help="write one label PNG per DICOM frame, and a manifest",
        description="Sample SEGMENTATION on every frame of the DICOM series in DICOM_DIR and write "
        "OUT_DIR/labels/*.png (one per frame, laid out like pixel_array), OUT_DIR/manifest.csv and "
        "OUT_DIR/labels.json.",
    )
    export.add_argument("dicom_dir", metavar="DICOM_DIR", type=Path,
                        help="folder with the DICOM series (searched recursively)")
    export.add_argument(
        "segmentation", metavar="SEGMENTATION", type=Path, nargs="+",
        help=f"the segmentation: {ACCEPTED} (chosen by content); several at once become one segmentation whose "
        "segments may overlap (label values and names made unique)",
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
        "DICOM SEG or RT Structure Set, else every series it overlaps), each into OUT_DIR/<series folder>/, listed "
        "in OUT_DIR/series.csv",
    )
    add_export_options(export)
    export.add_argument(
        "--overwrite", action="store_true",
        help="replace OUT_DIR if it is an earlier SegAlign export; other folders are never replaced",
    )
    export.add_argument("-q", "--quiet", action="store_true", help="no progress bar, warnings or summary")

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
    batch.add_argument(
        "--nnunet", metavar="DatasetNNN_Name",
        help="also make an nnU-Net v2 raw dataset of the jobs' volumes in OUT_ROOT/DatasetNNN_Name/ (imagesTr, "
        "labelsTr, dataset.json): one label mapping for the cohort, from --labels or the segment names; a job whose "
        "names conflict or whose segments overlap (unless --overlap later-wins) is left out and fails; implies "
        "--volume",
    )
    add_study_patterns(batch, "with a folder of studies: ")
    add_export_options(batch)
    batch.add_argument("-q", "--quiet", action="store_true", help="no progress bar, job errors or summary")

    jobs = commands.add_parser(
        "jobs", help="write the jobs table of a folder of studies",
        description="Find the jobs of ROOT, one per study folder: a folder holding a DICOM folder (or DICOM files) "
        "and one segmentation (a NIfTI file or a folder of NIfTI masks such as TotalSegmentator's; else one RT "
        "Structure Set among its files), or a DICOM folder with its segmentation beside it (STUDY/ and "
        "STUDY.nii.gz). Folders that are not one job are listed.",
    )
    jobs.add_argument("root", metavar="ROOT", type=Path, help="folder of study folders (or one study folder)")
    jobs.add_argument("-o", "--output", type=Path, metavar="JOBS_CSV", help="write the table here (default: print it)")
    add_study_patterns(jobs)

    info = commands.add_parser(
        "info", help="describe the DICOM series in a folder",
        description="Describe every image series in DICOM_DIR: orientation, stacking, spacing, tilt, duplicates.",
    )
    info.add_argument("dicom_dir", metavar="DICOM_DIR", type=Path)
    info.add_argument("--json", action="store_true", help="print JSON instead of text")

    check = commands.add_parser(
        "check", help="compare an export you already made with the truth, and name what is wrong with it",
        description="Compare EXPORT (a folder of label images or masks, one per frame; a folder of mask folders, one "
        "per label; or a 3D array file: .npy, NIfTI, NRRD, meant as the slices in DICOM order) with SEGMENTATION "
        "sampled on every frame of the series in DICOM_DIR in acquisition order (what 'segalign export' writes), "
        "and explain every difference: in-plane flips and transposes, frame order (reversed, one slice off, sorted "
        "by file name or position), renamed or merged labels, differences on boundaries only, frames missing. "
        "Exit status: 0 exact, 1 not exact, 2 cannot compare.",
    )
    check.add_argument("dicom_dir", metavar="DICOM_DIR", type=Path,
                       help="folder with the DICOM series (searched recursively)")
    check.add_argument("segmentation", metavar="SEGMENTATION", type=Path,
                       help=f"the segmentation the export was made from: {ACCEPTED}")
    check.add_argument("export", metavar="EXPORT", type=Path, help="the export to check")
    check.add_argument("--series", metavar="SERIES",
                       help="the series when DICOM_DIR holds several: SeriesInstanceUID, SeriesNumber or index")
    check.add_argument("--labels", metavar="TABLE",
                       help="label names and colours of SEGMENTATION, as for 'segalign export --labels'")
    check.add_argument("--json", action="store_true", help="print the result as one JSON object")
    check.add_argument("-o", "--output", type=Path, metavar="REPORT_DIR",
                       help="also write report.json, a side-by-side picture of every frame that differs and an "
                       "index.html listing them (a new folder, or an earlier report's)")

    demo = commands.add_parser(
        "demo", help="make a synthetic CT and segmentation, and export it",
        description="Write a synthetic 512x512 CT series (InstanceNumber counting down) and a TotalSegmentator-style "
        "LAS segmentation with an embedded label table, then export it.",
    )
    demo.add_argument("-o", "--output", type=Path, default=Path("segalign-demo"),
                      help="folder for the demo (default: ./segalign-demo)")
    demo.add_argument("--slices", type=int, default=80, help="number of CT slices (default 80)")
    demo.add_argument("-q", "--quiet", action="store_true")
    return parser


def add_study_patterns(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """``--dicom`` and ``--segmentation``: which folder and file of a study folder are its job (find_jobs)."""
    parser.add_argument("--dicom", metavar="PATTERN",
                        help=f"{prefix}the DICOM folder's name pattern, when a study holds several")
    parser.add_argument("--segmentation", metavar="PATTERN",
                        help=f"{prefix}the segmentation's name pattern (e.g. '*.nii.gz'), when a study holds several")


def add_export_options(parser: argparse.ArgumentParser) -> None:
    """The flags that say what an export writes and how the segmentation is read, shared by ``export`` and
    ``batch`` (:func:`export_options` and :func:`read_options` read them back)."""
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
        "--volume", action="store_true",
        help="also write OUT_DIR/image.nii.gz (the frames' pixel values in modality units) and labels.nii.gz (their "
        "labels; labels_layer2.nii.gz... where segments overlap) on the series' own grid, every voxel on its frame's "
        "pixel (as dcm2niix stacks them); irregular series are refused",
    )
    parser.add_argument(
        "--volume-masks", action="store_true",
        help="also write one 0/1 volume per segment in OUT_DIR/volume_masks/; implies --volume",
    )
    parser.add_argument(
        "--volume-resample", action="store_true",
        help="put unevenly spaced frames (missing slices) onto a regular grid instead of refusing them: labels from "
        "the nearest frame, the image linear between neighbouring frames (the warning gives the largest "
        "displacement); implies --volume",
    )
    parser.add_argument(
        "--volume-format", choices=[member.value for member in VolumeFormat], default=None,
        help="nifti (.nii.gz, the default) or nrrd (.nrrd, for 3D Slicer); implies --volume",
    )
    parser.add_argument(
        "--labels", metavar="TABLE",
        help="label names and colours: CSV value,name[,r,g,b], a Slicer color table, or 'totalsegmentator' "
        "(the built-in TotalSegmentator v2 'total' classes)",
    )
    parser.add_argument(
        "--overlap", choices=["keep", "later-wins", "error"], default="keep",
        help="where segments overlap (masks of a folder, segments of a SEG or .seg.nrrd, several files): keep every "
        "segment whole (default), flatten them to one label map letting the later one win, or refuse",
    )
    parser.add_argument(
        "--allow-many-labels", action="store_true",
        help="accept a segmentation that looks like an intensity image (hundreds of values, smooth histogram)",
    )
    parser.add_argument(
        "--skip-unplaced-contours", action="store_true",
        help="an RT Structure Set whose contours do not all lie on a frame of its series (between slices, off the "
        "plane of the image they reference, on images not in DICOM_DIR, in another frame of reference) is refused, "
        "listing them; this exports the others, with a warning listing those left out",
    )


def export_options(args: argparse.Namespace) -> ExportOptions:
    """The :class:`~segalign.options.ExportOptions` of ``export``'s or ``batch``'s parsed flags (see
    :func:`add_export_options`)."""
    overlays = None
    if args.overlays:
        overlays = OverlayOptions(args.window, args.alpha, args.outline, preview=not args.no_preview)
    else:  # checked all the same: a mistyped flag is an error whether or not it is used
        OverlayOptions(args.window, args.alpha, args.outline)
        if args.no_preview:
            raise SegAlignError("--no-preview needs --overlays (the preview page is written with the overlays)")
    # --dicom-seg-type alone asks for the SEG too: a choice of type is never silently dropped
    wants_seg = args.dicom_seg or args.dicom_seg_type is not None
    dicom_seg = DicomSegOptions(args.dicom_seg_type or SegmentationType.BINARY) if wants_seg else None
    # so do --volume-masks, --volume-resample and --volume-format ask for the volumes
    wants_volume = args.volume or args.volume_masks or args.volume_resample or args.volume_format is not None
    volume = VolumeOptions(args.volume_format or VolumeFormat.NIFTI, args.volume_masks, args.volume_resample)
    return ExportOptions(
        order=args.order, masks=args.masks, images=args.images, stats=args.stats,
        split_mosaics=args.split_mosaics, overlays=overlays, dicom_seg=dicom_seg,
        rtstruct=RtStructOptions() if args.rtstruct else None, volume=volume if wants_volume else None,
    )


def read_options(args: argparse.Namespace) -> ReadOptions:
    """The :class:`~segalign.options.ReadOptions` of the ``--labels``, ``--overlap``, ``--allow-many-labels`` and
    ``--skip-unplaced-contours`` flags."""
    return ReadOptions(args.labels, args.overlap, args.allow_many_labels, args.skip_unplaced_contours)
