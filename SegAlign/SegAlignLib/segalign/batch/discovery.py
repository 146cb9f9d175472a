"""Jobs from a folder of studies (:func:`find_jobs`, what ``segalign jobs`` and ``segalign batch STUDIES/`` read):
the study layouts recognised, and how a folder is told to hold DICOM files, a segmentation or a folder of masks."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import zlib
from fnmatch import fnmatch
from pathlib import Path

from ..errors import SegAlignError, describe, short_path
from ..readers import SEGMENTATION_SUFFIXES
from ..readers.nifti import NIFTI_SUFFIXES
from ..files import safe_name
from .jobs import Job, name_jobs

#: The names a study's segmentation file may have: the readers' suffixes but ``.dcm``, which in a study folder is
#: the DICOM series (a DICOM SEG there is found by neither). Only ever tested with ``str.endswith`` and looked up
#: one by one, so their order does not matter.
STUDY_SEGMENTATION_SUFFIXES = tuple(suffix for suffix in SEGMENTATION_SUFFIXES if suffix != ".dcm")


def find_jobs(
    root: str | os.PathLike[str], dicom: str | None = None, segmentation: str | None = None
) -> tuple[list[Job], list[str]]:
    """The jobs of a folder of studies, and a note for each folder that is not one (or not only one) job.

    Layouts recognised, for each folder STUDY directly under ``root`` (or ``root`` itself, if it is one):

    * ``STUDY/`` holds a DICOM folder (any name, DICOM files at any depth below it) or DICOM files itself, and one
      segmentation: a file (``.nii``, ``.nii.gz``, ``.seg.nrrd``, ``.nrrd``, ``.mha``, ``.mhd``) or a folder of NIfTI
      masks (TotalSegmentator's ``segmentations/``);
    * ``STUDY/`` holds only DICOM, and its segmentation lies beside it: ``STUDY.nii.gz`` (or any suffix above),
      as model outputs are often written next to their inputs;
    * ``STUDY/`` holds a DICOM folder (or DICOM files) and no segmentation file but one RT Structure Set among its
      files (as planning systems export a CT and its structures together): that is its segmentation.

    ``dicom`` and ``segmentation`` are shell patterns (``"ct*"``, ``"*.nii.gz"``) that the names of a study's DICOM
    folder and segmentation must match, for studies that hold several. Each job is named after its study folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise SegAlignError(f"folder of studies not found: {short_path(root)}")
    jobs: list[Job] = []
    notes: list[str] = []
    own = _study_job(root, dicom, segmentation)
    if own == NO_SEGMENTATION and _holds_dicom(root, depth=0):  # ROOT/ is a study of DICOM files: its structures?
        own = _study_job(root, dicom, segmentation, structure_set=True)
    if isinstance(own, Job):  # one study: ROOT/ itself, or ROOT/STUDY/ with ROOT/STUDY.nii.gz beside it
        beside = own.dicom_dir.parent == root and own.segmentation.parent == root and _is_named_after(
            own.segmentation, own.dicom_dir)
        name = own.dicom_dir.name if beside else root.absolute().name
        return [dataclasses.replace(own, name=safe_name(name, "study"))], []
    try:
        children = sorted(entry for entry in root.iterdir() if not entry.name.startswith("."))
    except OSError as error:
        raise SegAlignError(f"{short_path(root)}: the folder cannot be read ({describe(error)})") from None
    siblings = {entry.name.lower(): entry for entry in children if entry.is_file()}
    for study in children:
        if not study.is_dir():
            continue
        found = _study_job(study, dicom, segmentation)
        if isinstance(found, str) and _holds_dicom(study):  # a DICOM folder, its segmentation beside it?
            beside = [siblings[key] for key in (study.name.lower() + suffix for suffix in STUDY_SEGMENTATION_SUFFIXES)
                      if key in siblings and (segmentation is None or fnmatch(siblings[key].name, segmentation))]
            if len(beside) == 1:
                found = Job(study.name, study, beside[0])
        if found == NO_SEGMENTATION:
            found = _study_job(study, dicom, segmentation, structure_set=True)
        if isinstance(found, Job):
            jobs.append(found)
        else:
            near = [entry.name for entry in siblings.values()
                    if entry.name.lower().startswith(study.name.lower() + ".") and not _is_named_after(entry, study)]
            passed = (f"; passed over {', '.join(sorted(near)[:3])} beside it (a segmentation beside a study is named "
                      f"{study.name}.nii.gz, {study.name}.seg.nrrd, ...)") if near else ""
            notes.append(f"{study}: {found}{passed}")
    if not jobs and not notes:
        notes.append(f"{root}: no study folders in it")
    names = name_jobs([(job.dicom_dir, None, job.name) for job in jobs])
    return [dataclasses.replace(job, name=name) for job, name in zip(jobs, names)], notes


def _is_named_after(path: Path, study: Path) -> bool:
    """Whether the file ``path`` is named as a study's segmentation beside it: ``STUDY`` and a segmentation suffix."""
    return any(path.name.lower() == study.name.lower() + suffix for suffix in STUDY_SEGMENTATION_SUFFIXES)


def _study_job(study: Path, dicom: str | None, segmentation: str | None, structure_set: bool = False) -> Job | str:
    """The job of one study folder, or why it is not one; with ``structure_set``, a study with one DICOM folder and
    no segmentation file may have an RT Structure Set among its files as its segmentation."""
    try:
        entries = sorted(entry for entry in study.iterdir() if not entry.name.startswith("."))
    except OSError as error:
        return f"cannot be read ({describe(error)})"
    segmentations = [
        entry for entry in entries
        if (entry.is_file() and entry.name.lower().endswith(STUDY_SEGMENTATION_SUFFIXES)
            or entry.is_dir() and _is_mask_folder(entry))
        and (segmentation is None or fnmatch(entry.name, segmentation))
    ]
    dicom_dirs = [entry for entry in entries if entry.is_dir() and entry not in segmentations
                  and (dicom is None or fnmatch(entry.name, dicom)) and _holds_dicom(entry)]
    if dicom is None and not dicom_dirs and _holds_dicom(study, depth=0):
        dicom_dirs = [study]  # the DICOM files lie in the study folder itself
    if not dicom_dirs:
        return "no folder of DICOM files in it" if segmentations else NO_SEGMENTATION
    if not segmentations and structure_set and len(dicom_dirs) == 1:  # among the DICOM files, as planning
        segmentations = structure_sets(study, segmentation)  # systems export a CT and its structures
    if not segmentations:
        return NO_SEGMENTATION
    choices = (("segmentations", segmentations, "segmentation"), ("DICOM folders", dicom_dirs, "dicom"))
    for kind, found, option in choices:
        if len(found) > 1:
            listed = ", ".join(entry.name for entry in found[:4]) + (", ..." if len(found) > 4 else "")
            return f"{len(found)} {kind} ({listed}): choose with --{option} PATTERN"
    return Job(study.name, dicom_dirs[0], segmentations[0])


#: Why a study folder is not a job, when it holds no segmentation.
NO_SEGMENTATION = ("no segmentation in it (a .nii/.nii.gz/.seg.nrrd/.nrrd/.mha file, a folder of NIfTI masks, or an "
                   "RT Structure Set)")
#: The most files of a study folder looked at for an RT Structure Set.
STRUCTURE_SET_SEARCH_FILES = 20_000


def structure_sets(study: Path, pattern: str | None = None) -> list[Path]:
    """The RT Structure Sets among the files of a study folder (at any depth, hidden folders left out; their names
    matching ``pattern`` if given), told by their first bytes; at most :data:`STRUCTURE_SET_SEARCH_FILES` files are
    opened."""
    from ..readers import rtstruct
    from ..readers.registry import read_head

    found, opened = [], 0
    for directory, subdirectories, names in os.walk(study):
        subdirectories[:] = sorted(name for name in subdirectories if not name.startswith("."))
        for name in sorted(names):
            if name.startswith(".") or (pattern is not None and not fnmatch(name, pattern)):
                continue
            opened += 1
            if opened > STRUCTURE_SET_SEARCH_FILES:
                return found
            path = Path(directory) / name
            with contextlib.suppress(OSError, EOFError, zlib.error):
                if rtstruct.matches(path, read_head(path)):
                    found.append(path)
    return found


def _is_mask_folder(folder: Path) -> bool:
    """A folder whose files are NIfTI masks (and nothing else but hidden files)."""
    try:
        names = [entry.name for entry in folder.iterdir() if not entry.name.startswith(".")]
    except OSError:
        return False
    return bool(names) and all(name.lower().endswith(NIFTI_SUFFIXES) for name in names)


def _holds_dicom(folder: Path, depth: int = 8, files: int = 64) -> bool:
    """Whether a DICOM file (``DICM`` after its 128-byte preamble) lies in ``folder``, at most ``depth`` folders
    down; at most ``files`` files are opened, so a folder of anything else is ruled out quickly."""
    opened = 0
    base = len(folder.parts)
    for directory, subdirectories, names in os.walk(folder):
        if len(Path(directory).parts) - base >= depth:
            subdirectories[:] = []
        subdirectories[:] = sorted(name for name in subdirectories if not name.startswith("."))
        for name in sorted(names):
            if name.lower().endswith(STUDY_SEGMENTATION_SUFFIXES) or name.startswith("."):
                continue
            opened += 1
            with contextlib.suppress(OSError):
                with open(os.path.join(directory, name), "rb") as stream:
                    if stream.read(132)[128:] == b"DICM":
                        return True
            if opened >= files:
                return False
    return False

