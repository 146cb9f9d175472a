"""An nnU-Net v2 raw dataset from a batch's volumes (``segalign batch --nnunet DatasetNNN_Name``).

Every job exports as usual, with volumes (``image.nii.gz``, ``labels.nii.gz``) in its own folder, which stays the
record. When the jobs have ended, :func:`build_dataset` makes ``OUT_ROOT/DatasetNNN_Name/``::

    imagesTr/<case>_0000.nii.gz   a hard link to the job's image.nii.gz (a copy where links are not possible)
    labelsTr/<case>.nii.gz        the job's labels.nii.gz with its values renumbered to the cohort's mapping
    dataset.json                  channel_names, labels, numTraining, file_ending (nnU-Net v2's dataset format)

The image is linked, not copied: it is already what nnU-Net reads (the same voxels, the same affine), a link costs
neither space nor time, and a job exported again gets a new file (exports replace their folder), linked again here.
The labels are written anew: nnU-Net wants consecutive values from 0 (background), one mapping for every case.

The cohort's mapping is by name: the label table's names in value order when ``--labels`` gives one, else the
union of every job's segment names in job order, then each job's labels.json order. A job is left out of the
dataset (its batch row says why, in one line; the others go on) when one of its names is not in the table, when one
of its names is another job's name spelled differently (case, spaces, ``_`` or ``-``: the same structure cannot
have two names, nor two structures one), when its segments overlap (nnU-Net takes one label per voxel; flatten them
with ``--overlap later-wins``), when its modality is not the first case's (one channel), or when its case name is
another's. dataset.json is rewritten at the end of every run from the jobs complete then, so a rerun after an
interrupted one completes the dataset.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import SegAlignError, short
from ..files import safe_name
from .jobs import Job
from .results import JobResult

#: nnU-Net v2's dataset folder names: Dataset, three digits, _, a name.
DATASET_PATTERN = re.compile(r"Dataset\d{3}_[A-Za-z0-9][A-Za-z0-9_.-]*")
FILE_ENDING = ".nii.gz"
#: What SegAlign keeps of the cases it wrote (so that a rerun rewrites only what changed and removes cases left out).
STATE_FILE = ".segalign-nnunet.json"


def check_dataset_name(name: str) -> str:
    """``name`` if it is an nnU-Net v2 dataset name (``Dataset042_Liver``), else a one-line refusal."""
    if not isinstance(name, str) or not DATASET_PATTERN.fullmatch(name):
        raise SegAlignError(f"nnU-Net dataset name {short(str(name), 60)!r} is not DatasetNNN_Name (Dataset, three "
                            "digits, _, a name of letters, digits, ._-), e.g. Dataset042_Liver")
    return name


def check_dataset_folder(folder: Path) -> None:
    """Refuse a dataset folder SegAlign did not write: one that exists, is not empty and has no state file (someone's
    own nnU-Net dataset of that name), since building would replace its cases."""
    try:
        present = any(folder.iterdir())
    except FileNotFoundError:
        return
    except NotADirectoryError:
        raise SegAlignError(f"nnU-Net dataset {folder} is a file, not a folder") from None
    if present and not (folder / STATE_FILE).is_file():
        raise SegAlignError(f"nnU-Net dataset folder {folder} holds files SegAlign did not write (no {STATE_FILE}): "
                            "choose another dataset name or output folder")


def _key(name: str) -> str:
    """Names that mean the same structure: compared without regard to case, spaces, ``_`` and ``-``."""
    return re.sub(r"[\s_-]+", "", name).casefold()


def case_name(job_name: str) -> str:
    """nnU-Net's case identifier for a job: letters, digits, ``_`` and ``-`` (its channel suffix follows a ``_``)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", safe_name(job_name, "case"))


def table_mapping(label_table: str) -> list[str]:
    """The names of a label table (a file, or ``totalsegmentator``), in value order: labels 1, 2, ..."""
    from ..segmentation.labels import builtin_table, read_label_file

    table = builtin_table(label_table.lower()) if label_table.lower() == "totalsegmentator" else \
        read_label_file(label_table)
    return [table[value].name for value in sorted(table) if value != 0]


def _read_export(folder: Path) -> tuple[list[dict], str]:
    labels = json.loads((folder / "labels.json").read_text(encoding="utf-8"))
    provenance = json.loads((folder / "export.json").read_text(encoding="utf-8"))
    return labels, str(provenance.get("modality") or "")


def build_dataset(
    out_root: Path, dataset: str, jobs: Sequence[Job], results: dict[str, JobResult], label_table: str | None,
) -> tuple[Path, dict[str, str]]:
    """Make (or complete) ``out_root/dataset`` from the jobs that ended ``ok`` or ``skipped``; returns the dataset
    folder and, by job name, the one-line reason of each job left out."""
    folder = out_root / dataset
    check_dataset_folder(folder)
    images, labels_dir = folder / "imagesTr", folder / "labelsTr"
    images.mkdir(parents=True, exist_ok=True)
    labels_dir.mkdir(exist_ok=True)
    state_path = folder / STATE_FILE
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        state = {}
    old_cases: dict[str, dict] = state.get("cases", {}) if isinstance(state, dict) else {}

    names = table_mapping(label_table) if label_table else []
    by_key = {_key(name): name for name in names}
    refused: dict[str, str] = {}
    accepted: list[tuple[Job, str, list[dict]]] = []
    modality = None
    cases_taken: dict[str, str] = {}
    for job in jobs:
        result = results.get(job.name)
        if result is None or result.status not in ("ok", "skipped"):
            continue
        export = out_root / job.name
        try:
            entries, job_modality = _read_export(export)
        except (OSError, ValueError) as error:
            refused[job.name] = f"nnU-Net dataset: the export's labels.json or export.json cannot be read ({error})"
            continue
        if any(int(entry.get("layer", 1)) > 1 for entry in entries) or (export / "labels_layer2.nii.gz").exists():
            later = [entry["name"] for entry in entries if int(entry.get("layer", 1)) > 1]
            refused[job.name] = (f"nnU-Net dataset: segments overlap (the export put {', '.join(map(repr, later[:3]))}"
                                 " in a further label layer); nnU-Net takes one label per voxel: flatten them with "
                                 "--overlap later-wins")
            continue
        conflicts, own, new = [], {}, []
        for entry in entries:
            name = entry["name"]
            known = by_key.get(_key(name))
            if _key(name) in own:  # two of its own segments would be one label
                conflicts.append(f"{own[_key(name)]!r} and {name!r} name one structure twice")
            elif known is None and label_table:
                conflicts.append(f"{name!r} is not in the label table")
            elif known is not None and known != name:
                conflicts.append(f"{name!r} is {known!r} elsewhere")
            elif known is None:
                new.append(name)
            own.setdefault(_key(name), name)
        if conflicts:
            refused[job.name] = f"nnU-Net dataset: its names conflict with the cohort's mapping: {'; '.join(conflicts)}"
            continue
        if modality is not None and job_modality != modality:
            refused[job.name] = (f"nnU-Net dataset: modality {job_modality or 'unknown'}, but channel 0 is "
                                 f"{modality} (one channel per dataset)")
            continue
        case = case_name(job.name)
        if case.lower() in cases_taken:
            refused[job.name] = f"nnU-Net dataset: case name {case!r} is also job {cases_taken[case.lower()]}'s"
            continue
        cases_taken[case.lower()] = job.name
        modality = modality if modality is not None else job_modality
        for name in new:
            by_key[_key(name)] = name
            names.append(name)
        accepted.append((job, case, entries))

    number = {name: index for index, name in enumerate(names, start=1)}
    cases: dict[str, dict] = {}
    for job, case, entries in accepted:
        export = out_root / job.name
        image, labels = export / "image.nii.gz", export / "labels.nii.gz"
        lookup = {int(entry["value"]): number[by_key[_key(entry["name"])]] for entry in entries}
        stamp = {"job": job.name, "mapping": sorted(lookup.items()),
                 "image": _stamp(image), "labels": _stamp(labels)}
        target_image, target_labels = images / f"{case}_0000{FILE_ENDING}", labels_dir / f"{case}{FILE_ENDING}"
        if old_cases.get(case) != json.loads(json.dumps(stamp)) or not target_image.exists() \
                or not target_labels.exists():
            _link_or_copy(image, target_image)
            _write_labels(labels, target_labels, lookup, len(names))
        cases[case] = stamp
    for case in set(old_cases) - set(cases):  # cases of jobs now failed or left out
        for path in (images / f"{case}_0000{FILE_ENDING}", labels_dir / f"{case}{FILE_ENDING}"):
            path.unlink(missing_ok=True)
    description = {
        "channel_names": {"0": modality or "unknown"},
        "labels": {"background": 0, **number},
        "numTraining": len(cases),
        "file_ending": FILE_ENDING,
        "name": dataset.split("_", 1)[1],
        "description": "written by SegAlign (segalign batch --nnunet) from each job's volumes",
    }
    _write_json(folder / "dataset.json", description)
    _write_json(state_path, {"cases": cases})
    return folder, refused


def _stamp(path: Path) -> list[int]:
    status = path.stat()
    return [status.st_ino, status.st_size, status.st_mtime_ns]


def _link_or_copy(source: Path, target: Path) -> None:
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)
    except OSError:  # another file system, or one without hard links
        shutil.copyfile(source, temporary)
    os.replace(temporary, target)


def _write_labels(source: Path, target: Path, lookup: dict[int, int], count: int) -> None:
    import nibabel as nib

    image = nib.load(str(source))
    values = np.asarray(image.dataobj)
    table = np.zeros(int(max([int(values.max(initial=0)), *lookup]) + 1), dtype=np.uint16)
    for value, label in lookup.items():
        table[value] = label
    relabelled = table[values].astype(np.uint8 if count < 256 else np.uint16)
    header = image.header.copy()
    header.set_data_dtype(relabelled.dtype)
    header["scl_slope"], header["scl_inter"] = 1, 0
    result = nib.Nifti1Image(relabelled, image.affine, header)
    temporary = target.with_name(f".{target.name}.tmp.nii.gz")
    nib.save(result, str(temporary))
    os.replace(temporary, target)


def _write_json(path: Path, value: object) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)
