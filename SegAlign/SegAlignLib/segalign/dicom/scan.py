"""Finding series: scanning a folder (:func:`scan_folder`), and building one series from given files
(:func:`series_from_files`, the one way to do it for callers that already know the files, such as the Slicer
bridge).

Both read each file's header once (``headers.read_header``), group the frames of one SeriesInstanceUID into a
:class:`~segalign.dicom.model.Series` the same way, and check its UIDs (:func:`check_uids`). A scan skips what is
not an image series and says so in :attr:`DicomScan.warnings`; given files are the caller's choice, so a file
that cannot be read, or files of several series, are refused instead.
"""

from __future__ import annotations

import os
import stat
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, Iterator

from pydicom.errors import InvalidDicomError

from ..errors import SegAlignError, describe, short, short_path
from ..signals import reraise_interrupt
from . import headers
from .frames import frames_of
from .headers import Header, non_image_reason
from .model import DicomScan, Series
from .mosaic import image_types
from .values import odd_int, optional_int, value_text

#: ``progress(done, total)``: called after each file's header is read; an exception raised from it stops the reading.
Progress = Callable[[int, int], None]


def iter_files(
    root: Path,
    hidden: list[Path] | None = None,
    skipped: list[tuple[Path, str]] | None = None,
    revisited: list[tuple[Path, Path]] | None = None,
) -> Iterable[Path]:
    """Every regular file under ``root``, recursively, in a deterministic order.

    Nothing under ``root`` vanishes unreported:

    * hidden folders (``.name``) are not entered; they are appended to ``hidden``;
    * symbolic links to folders are followed (a series is often assembled from links), but every real folder is
      entered once: a link to a folder already entered (a loop back to an ancestor, or a second way to the same
      folder) is not entered again, and ``(link, real folder)`` is appended to ``revisited``;
    * what cannot be scanned is appended to ``skipped`` with the reason: a folder that cannot be listed, a broken
      or looping link, and anything that is not a regular file (a FIFO, which would block a read, a device...).
    """
    visited: set[str] = set()

    def unlistable(error: OSError) -> None:
        if skipped is not None:
            skipped.append((Path(error.filename or root), f"folder cannot be listed: {describe(error)}"))

    for directory, subdirectories, names in os.walk(root, onerror=unlistable, followlinks=True):
        real = os.path.realpath(directory)
        if real in visited:
            subdirectories[:] = []
            if revisited is not None:
                revisited.append((Path(directory), Path(real)))
            continue
        visited.add(real)
        if hidden is not None:
            hidden.extend(Path(directory) / name for name in subdirectories if name.startswith("."))
        subdirectories[:] = sorted(name for name in subdirectories if not name.startswith("."))
        for name in sorted(names):
            path = Path(directory) / name
            reason = _not_a_file(path)
            if not reason:
                yield path
            elif skipped is not None:
                skipped.append((path, reason))


def _not_a_file(path: Path) -> str:
    """Why ``path`` cannot be read as a file (empty when it is a regular file, or a link to one)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        if os.path.islink(path) and not os.path.lexists(os.path.realpath(path)):
            return "broken symbolic link (its target does not exist)"
        return f"cannot be read: {describe(error)}"
    return "" if stat.S_ISREG(mode) else f"not a regular file ({_file_kind(mode)})"


def _file_kind(mode: int) -> str:
    """What a file system entry of ``mode`` is, in words."""
    kinds = {
        stat.S_ISREG: "a file", stat.S_ISDIR: "a folder", stat.S_ISFIFO: "a FIFO", stat.S_ISSOCK: "a socket",
        stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device",
    }
    return next((name for test, name in kinds.items() if test(mode)), "of an unknown kind")


def scan_folder(root: str | os.PathLike[str], progress: Progress | None = None) -> DicomScan:
    """Scan ``root`` recursively and group the frames of every image series by SeriesInstanceUID.

    Files that are not DICOM, cannot be parsed, or are DICOM objects without patient geometry (DICOMDIR, SR, SEG,
    projection radiographs...) are skipped and counted in :attr:`DicomScan.warnings`. File names are never used
    for anything but reporting. ``progress(done, total)`` is called after each file's header is read (the folder
    is listed first); an exception raised from it stops the scan.
    """
    root = Path(root)
    _check_folder(root)
    scan = DicomScan(root=root, series=[])
    by_uid: dict[str, Series] = {}
    hidden: list[Path] = []
    skipped: list[tuple[Path, str]] = []  # folders that cannot be listed, broken links, FIFOs...
    revisited: list[tuple[Path, Path]] = []  # links to folders already scanned
    odd_instance_numbers: list[tuple[Path, object]] = []
    paths = list(iter_files(root, hidden, skipped, revisited)) if progress is not None else iter_files(
        root, hidden, skipped, revisited)
    for path in _reporting(paths, progress):
        try:
            header = headers.read_header(path)
        except InvalidDicomError:
            scan.not_dicom.append(path)
            continue
        except Exception as error:  # pydicom raises many kinds of error on truncated or corrupt files
            reraise_interrupt(error)
            scan.unreadable.append((path, describe(error)))
            continue
        if odd_int(header.dataset.get("InstanceNumber")):
            odd_instance_numbers.append((path, header.dataset.get("InstanceNumber")))
        reason = non_image_reason(header.dataset)
        if reason:
            scan.non_image.append((path, reason))
            continue
        uid = _series_uid(header)
        series = by_uid.get(uid)
        if series is None:
            series = by_uid[uid] = _new_series(uid, header)
        _add_frames(series, header, path)
    scan.unreadable.extend(skipped)
    scan.series = sorted(by_uid.values(), key=lambda s: (s.series_number is None, s.series_number or 0, s.uid))
    for series in scan.series:
        check_uids(series, root)
    _summarise_skipped(scan)
    if hidden:
        scan.warnings.append(f"did not look into {len(hidden)} hidden folders (e.g. {hidden[0]})")
    if revisited:
        link, real = revisited[0]
        scan.warnings.append(
            f"did not enter {len(revisited)} linked folders a second time: they lead to folders already scanned "
            f"(e.g. {short_path(link)} is {short_path(real)})"
        )
    if odd_instance_numbers:
        path, value = odd_instance_numbers[0]
        scan.warnings.append(
            f"{len(odd_instance_numbers)} files have an InstanceNumber that is not an integer "
            f"(e.g. {short_path(path)}: '{short(value_text(value))}'); they are ordered as files without "
            "InstanceNumber are"
        )
    return scan


def series_from_files(paths: Iterable[str | os.PathLike[str]], progress: Progress | None = None) -> Series:
    """The series held by the DICOM files ``paths``: the same :class:`Series` :func:`scan_folder` finds for them.

    The files are read in sorted order (a path given twice is read once), so the order of ``paths`` does not
    matter. Frames that cannot be placed are the series' :attr:`~Series.problems`, as in a scan (an export
    refuses them). The files are the caller's choice, so nothing is skipped: a :class:`SegAlignError` refuses no
    files, a file that cannot be read as DICOM (naming it), and files of more than one SeriesInstanceUID (naming
    them). ``progress(done, total)`` is called after each file's header is read; an exception raised from it
    stops the reading.
    """
    files = sorted({Path(path) for path in paths})
    if not files:
        raise SegAlignError("no DICOM files given")
    by_uid: dict[str, Series] = {}
    first_file: dict[str, Path] = {}
    for path in _reporting(files, progress):
        try:
            header = headers.read_header(path)
        except Exception as error:
            reraise_interrupt(error)
            raise SegAlignError(f"{path}: cannot be read as DICOM ({type(error).__name__}: {error})") from None
        uid = _series_uid(header)
        if uid not in by_uid:
            by_uid[uid], first_file[uid] = _new_series(uid, header), path
        _add_frames(by_uid[uid], header, path)
    if len(by_uid) > 1:
        found = [f"{short(uid or '(no SeriesInstanceUID)', 70)} (e.g. {short_path(first_file[uid], 60)})"
                 for uid in list(by_uid)[:3]]
        more = f" and {len(by_uid) - 3} more" if len(by_uid) > 3 else ""
        raise SegAlignError(
            f"the {len(files)} files belong to {len(by_uid)} different series: {', '.join(found)}{more}; "
            "give the files of one series"
        )
    (series,) = by_uid.values()
    check_uids(series, _common_folder(files))
    return series


def _series_uid(header: Header) -> str:
    """The SeriesInstanceUID a file's frames are grouped by ("" when it has none: such files form one series)."""
    return str(header.get("SeriesInstanceUID", "") or "").strip()


def _new_series(uid: str, header: Header) -> Series:
    """An empty series described by the header of its first file."""
    dataset = header.dataset
    return Series(
        uid=uid,
        description=str(dataset.get("SeriesDescription", "") or ""),
        modality=str(dataset.get("Modality", "") or ""),
        series_number=optional_int(dataset.get("SeriesNumber")),
        patient_position=str(dataset.get("PatientPosition", "") or "").strip(),
        image_type=tuple(image_types(dataset)),
    )


def _add_frames(series: Series, header: Header, path: Path) -> None:
    """Add the frames of one file to ``series``, or what keeps them from being placed to its problems."""
    try:
        series.frames.extend(frames_of(header, path))
    except SegAlignError as error:
        series.problems.append(str(error))
    except Exception as error:  # a value pydicom parsed but that is unusable in a way not foreseen here
        series.problems.append(f"{short_path(path)}: the header cannot be used ({describe(error)})")


def _reporting(paths: Iterable[Path], progress: Progress | None) -> Iterator[Path]:
    """``paths``, calling ``progress(done, total)`` as each one is done with (when the next is asked for, and at
    the end). ``paths`` must be a list when ``progress`` is given (its length is the total)."""
    if progress is None:
        yield from paths
        return
    total = len(paths)  # type: ignore[arg-type]
    for done, path in enumerate(paths, start=1):
        if done > 1:
            progress(done - 1, total)
        yield path
    progress(total, total)


def _common_folder(files: list[Path]) -> Path:
    """The deepest folder holding all ``files`` (what their notes name them relative to); "" when there is none
    (absolute and relative paths mixed)."""
    try:
        return Path(os.path.commonpath([str(path.parent) for path in files]))
    except ValueError:
        return Path("")


def _check_folder(root: Path) -> None:
    """Refuse a DICOM folder that is missing, is not a folder, or cannot be listed, saying which."""
    try:
        mode = os.stat(root).st_mode
    except FileNotFoundError:
        raise SegAlignError(f"DICOM folder not found: {short_path(root)}") from None
    except OSError as error:
        raise SegAlignError(f"DICOM folder {short_path(root)} cannot be read: {describe(error)}") from None
    if not stat.S_ISDIR(mode):
        raise SegAlignError(f"DICOM folder {short_path(root)} is {_file_kind(mode)}, not a folder")
    try:
        with os.scandir(root):
            pass
    except OSError as error:
        raise SegAlignError(f"DICOM folder {short_path(root)} cannot be read: {describe(error)}") from None


def check_uids(series: Series, root: Path) -> None:
    """Never trust a UID as a key without checking: report blank and repeated SOPInstanceUIDs."""
    if not series.uid:
        series.notes.append(
            f"{len(series.files)} files have no SeriesInstanceUID; they are treated as one series"
        )
    blank = [frame for frame in series.frames if not frame.sop_instance_uid]
    if blank:
        series.notes.append(f"{len(blank)} frames have no SOPInstanceUID (nor MediaStorageSOPInstanceUID)")
    counts = Counter((frame.sop_instance_uid, frame.frame_number) for frame in series.frames if frame.sop_instance_uid)
    repeated = [key for key, count in counts.items() if count > 1]
    if repeated:
        files = sorted(
            _relative(frame.source_file, root)
            for frame in series.frames
            if (frame.sop_instance_uid, frame.frame_number) == repeated[0]
        )
        series.notes.append(
            f"{len(repeated)} SOPInstanceUIDs occur in more than one file (e.g. {', '.join(files)}); "
            "every file is exported, identify frames by source_file"
        )
    if any(frame.instance_number is None for frame in series.frames):
        missing = sum(frame.instance_number is None for frame in series.frames)
        series.notes.append(f"{missing} frames have no InstanceNumber; they are ordered by position")


def _relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root``, or as it is when it is not under ``root`` (given files, absolute and relative
    paths mixed)."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _summarise_skipped(scan: DicomScan) -> None:
    if scan.not_dicom:
        scan.warnings.append(f"skipped {len(scan.not_dicom)} files that are not DICOM")
    if scan.unreadable:
        path, reason = scan.unreadable[0]
        scan.warnings.append(
            f"skipped {len(scan.unreadable)} files or folders that cannot be read "
            f"(e.g. {short_path(path)}: {short(reason, 160)})"
        )
    if scan.non_image:
        reasons = Counter(reason for _, reason in scan.non_image)
        described = ", ".join(f"{count} {reason}" for reason, count in reasons.most_common())
        scan.warnings.append(
            f"skipped {len(scan.non_image)} DICOM files that are not images on a patient grid ({described})"
        )
