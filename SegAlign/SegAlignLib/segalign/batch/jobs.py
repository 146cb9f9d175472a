"""Jobs and jobs tables: :class:`Job` (one export of a batch), :func:`read_jobs` and :func:`write_jobs` (the CSV
table ``segalign batch`` reads and ``segalign jobs`` writes), and :func:`name_jobs` (each job's output folder name,
a function of the table so that a rerun finds every job's export again)."""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..errors import SegAlignError, describe, short, short_path
from ..files import safe_name

#: The columns of a jobs table: the first two are required.
JOB_COLUMNS = ("dicom_dir", "segmentation", "series", "name")


@dataclass(frozen=True)
class Job:
    """One export of a batch: ``segmentation`` onto the series of ``dicom_dir`` (the ``series`` one when it holds
    several: a SeriesInstanceUID, SeriesNumber or index, as ``segalign export --series`` takes), written to
    ``OUT_ROOT/<name>/``."""

    name: str
    dicom_dir: Path
    segmentation: Path
    series: str | None = None



def read_jobs(path: str | os.PathLike[str]) -> list[Job]:
    """The jobs of a jobs table (CSV, UTF-8, a header naming ``dicom_dir`` and ``segmentation``, optionally
    ``series`` and ``name``). Relative paths are relative to the table's folder; blank lines are ignored. Jobs
    without a name are named after their DICOM folder (see :func:`name_jobs`); given names are made file-name safe
    and must stay unique."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8-sig", newline="") as stream:  # -sig: Excel writes a byte order mark
            reader = csv.reader(stream)
            rows = [(reader.line_num, row) for row in reader]
    except FileNotFoundError:
        raise SegAlignError(f"jobs table not found: {short_path(path)}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise SegAlignError(f"jobs table {short_path(path)} cannot be read: {describe(error)}") from None
    rows = [(line, row) for line, row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise SegAlignError(f"jobs table {short_path(path)} is empty; its first line must be a header: "
                            f"{','.join(JOB_COLUMNS)}")
    header = [cell.strip().lower() for cell in rows[0][1]]
    missing = [column for column in JOB_COLUMNS[:2] if column not in header]
    unknown = [column for column in header if column not in JOB_COLUMNS]
    if missing or unknown or len(set(header)) < len(header):
        what = (f"it has no column {' or '.join(missing)}" if missing else
                f"column {short(unknown[0], 40)!r} is not one of {', '.join(JOB_COLUMNS)}" if unknown else
                "a column is named twice")
        raise SegAlignError(f"jobs table {short_path(path)}: {what} (the header must name dicom_dir and "
                            "segmentation, and may name series and name)")
    base = path.absolute().parent
    entries = []
    for line, row in rows[1:]:
        if len(row) > len(header):
            raise SegAlignError(f"jobs table {short_path(path)} line {line}: {len(row)} values, but the header "
                                f"names {len(header)} columns (quote values that hold commas)")
        values = dict(zip(header, (cell.strip() for cell in row)))
        for column in JOB_COLUMNS[:2]:
            if not values.get(column):
                raise SegAlignError(f"jobs table {short_path(path)} line {line}: {column} is empty")
        entries.append((
            line, base / Path(values["dicom_dir"]).expanduser(), base / Path(values["segmentation"]).expanduser(),
            values.get("series") or None, values.get("name") or None,
        ))
    if not entries:
        raise SegAlignError(f"jobs table {short_path(path)} has a header but no jobs")
    names = name_jobs([(dicom, series, name) for _, dicom, _, series, name in entries], base,
                      where=lambda index: f"jobs table {short_path(path)} line {entries[index][0]}")
    return [Job(name, dicom, segmentation, series)
            for name, (_, dicom, segmentation, series, _) in zip(names, entries)]


def name_jobs(
    jobs: Sequence[tuple[Path, str | None, str | None]],
    base: Path | None = None,
    where: Callable[[int], str] = lambda index: f"job {index + 1}",
) -> list[str]:
    """Unique, file-name safe names for jobs given as ``(dicom_dir, series, name or None)``.

    A given name is kept (made safe: letters, digits, ``._-``); two that are the same without regard to case are
    refused. A job without one is named after the last part of its DICOM folder's path, or as many last parts as
    make it unique (``case01_ct`` beside ``case02_ct``), then its series; what is still shared gets ``-2``,
    ``-3``... in table order. Names are a function of the table, so a rerun gives every job the same folder.
    """
    taken: dict[str, int] = {}
    names: list[str | None] = []
    for index, (_, _, name) in enumerate(jobs):
        if name is None:
            names.append(None)
            continue
        safe = _unreserved(safe_name(name))
        if safe.lower() in taken:
            raise SegAlignError(f"{where(index)}: name {short(name, 60)!r} is also the name of "
                                f"{where(taken[safe.lower()])} (names must differ, also in case)")
        taken[safe.lower()] = index
        names.append(safe)

    def parts(dicom_dir: Path) -> list[str]:
        try:
            relative = dicom_dir.relative_to(base) if base is not None else dicom_dir
        except ValueError:
            relative = dicom_dir
        return [part for part in relative.parts if part not in (relative.anchor, "", ".", "..")] or ["job"]

    unnamed = [index for index, name in enumerate(names) if name is None]
    depth = {index: 1 for index in unnamed}

    def candidate(index: int) -> str:
        dicom_dir, series, _ = jobs[index]
        text = "_".join(parts(dicom_dir)[-depth[index]:]) + (f"_series-{series}" if series else "")
        return _unreserved(safe_name(text, "job"))

    while True:  # deepen the names that collide, as long as their paths have more parts
        groups: dict[str, list[int]] = {}
        for index in unnamed:
            groups.setdefault(candidate(index).lower(), []).append(index)
        deeper = [index for group in groups.values() if len({tuple(parts(jobs[i][0])) for i in group}) > 1
                  for index in group if depth[index] < len(parts(jobs[index][0]))]
        if not deeper:
            break
        for index in deeper:
            depth[index] += 1
    for index in unnamed:
        stem = candidate(index)
        name, number = stem, 1
        while name.lower() in taken:
            number += 1
            name = f"{stem}-{number}"
        taken[name.lower()] = index
        names[index] = name
    return [name for name in names if name is not None]


def _unreserved(name: str) -> str:
    """A job name that cannot be mistaken for a batch table (batch.csv, batch-part-...csv)."""
    return f"{name}_job" if re.fullmatch(r"batch.*\.csv", name, re.IGNORECASE) else name


def write_jobs(jobs: Sequence[Job], path: str | os.PathLike[str]) -> None:
    """Write ``jobs`` as a jobs table (paths relative to the table's folder where they lie under it)."""
    path = Path(path)
    base = path.absolute().parent
    with path.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(JOB_COLUMNS)
        for job in jobs:
            writer.writerow([_relative(job.dicom_dir, base), _relative(job.segmentation, base), job.series or "",
                             job.name])


def _relative(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` when it lies under it, else absolute (read_jobs reads paths from the table's
    folder, not from the working folder)."""
    absolute = Path(path).absolute()
    try:
        return absolute.relative_to(base).as_posix()
    except ValueError:
        return str(absolute)

