"""Output-folder safety: what SegAlign may delete or replace, and how an export gets into place.

SegAlign deletes or replaces only what it can prove it wrote, because an output folder is named by a user who may
have mistyped it, may have given a folder of their own work, or may have another export running into it:

* An output folder that is not empty is replaced only if it is an earlier SegAlign export (:func:`export_problem`
  is None: its export.json says SegAlign wrote it, and it holds nothing but :data:`EXPORT_ENTRIES`, the names the
  writers write, and the files file managers drop into any folder) and only with ``overwrite``. Any other folder is
  refused whatever the options (:func:`check_output_dir`), as is an output folder that is or holds an input, or
  lies inside an input folder (the DICOM folder, a folder of masks), whose next scan would take the export's files
  for input (:func:`check_nesting`).
* Even then, deleting is done entry by entry, of export entries only (:func:`remove_export`): whatever appeared in
  the folder after it was checked stays, and so does the folder.
* An export is written into a hidden temporary folder beside the output (:func:`make_partial`,
  ``.NAME.partial-XXXXXXXX``) and renamed into place at the end (:func:`publish`), so an interrupted export never
  leaves a folder that looks complete. The next export into the same parent removes such folders
  (:func:`remove_stale_partials`) only once it can prove the export that wrote them is dead (its marker,
  :data:`PARTIAL_MARKER`, names a process of this host that has ended: :mod:`.locks`).
* A lock file beside the output (``.NAME.lock``, :class:`~.locks.OutputLock`) keeps two exports from writing into
  the same folder at once.

Tests may patch this module's functions (:func:`check_output_dir`, :func:`publish`...): the export core calls them
through this module (``folders.publish(...)``), so a patch reaches it. Batches use the same functions.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import SegAlignError, short_path
from .. import files
from ..writers.images import ENTRIES as PNG_ENTRIES
from ..writers.dicom_seg import ENTRIES as DICOM_SEG_ENTRIES
from ..writers.rtstruct import ENTRIES as RTSTRUCT_ENTRIES
from ..writers.volume import ENTRIES as VOLUME_ENTRIES, FOLDER_SUFFIXES as VOLUME_FOLDER_SUFFIXES
from . import locks
from .locks import WRITTEN_BY

__all__ = [
    "EXPORT_ENTRIES", "FILE_MANAGER_METADATA", "FOLDER_SUFFIXES", "Input", "PARTIAL_MARKER", "WRITTEN_BY",
    "check_nesting", "check_output_dir", "export_problem", "foreign_entry", "make_parents", "make_partial", "publish",
    "remove_export", "remove_parents", "remove_stale_partials",
]

#: Everything an export folder may hold: a name ending in "/" is a folder (of PNG images, or of folders of PNG
#: images: masks/<segment>/; see FOLDER_SUFFIXES for the others), any other name a file. A folder is taken for an earlier SegAlign export, which
#: ``overwrite`` may replace, only if its export.json says SegAlign wrote it and it holds nothing but these; a
#: writer adds the names it writes here (its ``ENTRIES``).
EXPORT_ENTRIES = frozenset({"export.json"}) | PNG_ENTRIES | DICOM_SEG_ENTRIES | RTSTRUCT_ENTRIES | VOLUME_ENTRIES
#: Inside the hidden temporary folder of an export being written: who writes it (pid, host, start time), so a
#: later export can tell a folder left by a killed one (removed) from one still being written (left alone).
PARTIAL_MARKER = ".segalign-partial.json"
#: A larger export.json is not SegAlign's (whose are a few kB); it is not read whole to find out.
_EXPORT_JSON_LIMIT = 16 << 20
#: Files that file managers drop into any folder they show (Finder, Explorer): not the user's data, so an export that
#: holds them is still an export, and they are deleted with it.
FILE_MANAGER_METADATA = frozenset({".ds_store", "thumbs.db", "desktop.ini", ".directory"})
#: What the folders of an export hold: PNG images, except the preview page's per-frame data scripts and the mask
#: volumes.
FOLDER_SUFFIXES: dict[str, tuple[str, ...]] = {"viewer/": (".js",), **VOLUME_FOLDER_SUFFIXES}


@dataclass(frozen=True)
class Input:
    """An input of an export or a batch, which an output folder may neither be, hold nor (if the input is a folder)
    lie inside; ``what`` names it in messages (``"DICOM folder"``, ``"segmentation"``, ``"folder of masks"``...),
    after its path ``of`` if given (``"of job p1"``)."""

    path: Path
    what: str = "input"
    of: str = ""


#: What becomes of the files of an output inside an input folder, by the folder's kind (:attr:`Input.what`).
READ_AS = {"DICOM folder": "scanned as DICOM", "folder of masks": "read as masks",
           "folder of studies": "searched for studies"}


def check_output_dir(output_dir: Path, overwrite: bool, protected: Sequence[Path | Input]) -> None:
    """Refuse an output location that is not a folder, is or holds an input (one of ``protected``) or lies inside
    an input folder (:func:`check_nesting`), or is a non-empty folder that may not be replaced: one that is not an
    earlier SegAlign export (never), or one that is, without ``overwrite``."""
    if output_dir.is_symlink():  # replacing a link would delete or hide what it points to, not the link
        raise SegAlignError(
            f"output {output_dir} is a symbolic link (to {os.readlink(output_dir)}); give the folder itself"
        )
    if output_dir.exists() and not output_dir.is_dir():
        raise SegAlignError(f"output {output_dir} exists and is not a folder")
    check_nesting(output_dir, protected)
    if output_dir.is_dir() and any(output_dir.iterdir()):
        problem = export_problem(output_dir)
        if problem is not None:  # never replaced, whatever the options: say so now, not after --overwrite
            def foreign(option: str) -> str:
                return (
                    f"output folder {output_dir} is not empty and is not a SegAlign export ({problem}); "
                    f"it is never replaced, even with {option}: choose another folder"
                )

            raise SegAlignError(foreign("overwrite=True"), cli_message=foreign("--overwrite"))
        if not overwrite:
            def earlier(option: str) -> str:
                return f"output folder {output_dir} holds an earlier SegAlign export; {option} to replace it"

            raise SegAlignError(earlier("pass overwrite=True"), cli_message=earlier("use --overwrite"))


def check_nesting(output_dir: Path, protected: Sequence[Path | Input], holds: bool = True) -> None:
    """Refuse an output folder that lies inside an input folder, whose next scan would find the output's files
    among the input (a plain :class:`~pathlib.Path` in ``protected`` counts as a folder if it is one now), and,
    with ``holds``, one that is or holds an input (``overwrite`` could delete it). Paths are compared resolved
    (links and ``..`` followed); a file's folder is not an input, so an output beside an input file is fine."""
    resolved = output_dir.resolve()
    for item in protected:
        item = item if isinstance(item, Input) else Input(Path(item))
        path = item.path.resolve()
        named = f"the {item.what} {short_path(item.path, 100)}{' ' + item.of if item.of else ''}"
        if resolved == path or (holds and resolved in path.parents):
            raise SegAlignError(f"output folder {short_path(output_dir, 100)} would contain {named}; "
                                "choose another folder")
        if path in resolved.parents and path.is_dir():
            raise SegAlignError(f"output folder {short_path(output_dir, 100)} is inside {named}: its files would be "
                                f"{READ_AS.get(item.what, 'read as input')} next time; choose an output outside it")


def export_problem(folder: str | os.PathLike[str]) -> str | None:
    """Why ``folder`` is not an export SegAlign wrote (``"it holds notes.txt, which an export does not write"``), or
    None if it is one: its export.json says SegAlign wrote it and it holds nothing else than :data:`EXPORT_ENTRIES`.

    Only such a folder is ever replaced (``overwrite``) or deleted by SegAlign.
    """
    folder = Path(folder)
    export_json = folder / "export.json"
    if not export_json.is_file() or export_json.is_symlink():
        return "it has no export.json"
    foreign = foreign_entry(folder, EXPORT_ENTRIES)
    if foreign is not None:
        return f"it holds {foreign}, which an export does not write"
    try:
        with export_json.open(encoding="utf-8") as stream:
            text = stream.read(_EXPORT_JSON_LIMIT + 1)
        provenance = json.loads(text) if len(text) <= _EXPORT_JSON_LIMIT else None
    except (OSError, ValueError):  # unreadable, not UTF-8, not JSON
        provenance = None
    # Exports written before "written_by" existed are known by their "segalign_version".
    if not isinstance(provenance, dict) or not (
        provenance.get("written_by") == WRITTEN_BY or isinstance(provenance.get("segalign_version"), str)
    ):
        return "its export.json was not written by SegAlign"
    return None


def foreign_entry(folder: Path, allowed: frozenset[str]) -> str | None:
    """The first entry of ``folder`` (in name order) that is not one of ``allowed`` (names as in
    :data:`EXPORT_ENTRIES`) or, inside an allowed folder, not a PNG image or a folder of them; None if there is none.
    Links and special files are always foreign: an export writes none."""
    for entry in _entries(folder):
        if _is_file_manager_metadata(entry):
            continue
        if entry.is_dir(follow_symlinks=False):
            if f"{entry.name}/" not in allowed:
                return f"{entry.name}/"
            inner = _foreign_image(Path(entry.path), depth=1, suffixes=FOLDER_SUFFIXES.get(f"{entry.name}/", (".png",)))
            if inner is not None:
                return f"{entry.name}/{inner}"
        elif entry.name not in allowed or not entry.is_file(follow_symlinks=False):
            return entry.name
    return None


def _foreign_image(folder: Path, depth: int, suffixes: tuple[str, ...] = (".png",)) -> str | None:
    """The first entry of an image folder that is not a PNG file (or one of ``suffixes``) or (``depth`` levels down)
    a folder of them."""
    for entry in _entries(folder):
        if _is_file_manager_metadata(entry):
            continue
        if entry.is_dir(follow_symlinks=False):
            inner = _foreign_image(Path(entry.path), depth - 1, suffixes) if depth > 0 else ""
            if inner is not None:
                return f"{entry.name}/{inner}"
        elif not (entry.name.lower().endswith(suffixes) and entry.is_file(follow_symlinks=False)):
            return entry.name
    return None


def _is_file_manager_metadata(entry: os.DirEntry) -> bool:
    name = entry.name.lower()
    return (name in FILE_MANAGER_METADATA or name.startswith("._")) and entry.is_file(follow_symlinks=False)


def _entries(folder: Path) -> list[os.DirEntry]:
    with os.scandir(folder) as entries:
        return sorted(entries, key=lambda entry: entry.name)


def remove_export(folder: Path, extra: frozenset[str] = frozenset()) -> bool:
    """Delete an export folder entry by entry, only what an export writes (:data:`EXPORT_ENTRIES` and ``extra``;
    PNGs in its image folders), so nothing else is deleted even if it appeared after the folder was checked; such
    an entry stays, and so does the folder. True if the folder is gone."""
    allowed = EXPORT_ENTRIES | extra
    try:
        for entry in _entries(folder):
            if entry.is_dir(follow_symlinks=False):
                if f"{entry.name}/" in allowed:
                    _remove_images(Path(entry.path), depth=1, suffixes=FOLDER_SUFFIXES.get(f"{entry.name}/", (".png",)))
            elif (entry.name in allowed and entry.is_file(follow_symlinks=False)) or _is_file_manager_metadata(entry):
                os.unlink(entry.path)
        folder.rmdir()
    except OSError:
        return False
    return True


def _remove_images(folder: Path, depth: int, suffixes: tuple[str, ...] = (".png",)) -> None:
    for entry in _entries(folder):
        if entry.is_dir(follow_symlinks=False):
            if depth > 0:
                _remove_images(Path(entry.path), depth - 1, suffixes)
        elif (entry.name.lower().endswith(suffixes) and entry.is_file(follow_symlinks=False)) or (
            _is_file_manager_metadata(entry)
        ):
            os.unlink(entry.path)
    with contextlib.suppress(OSError):  # not empty: something else was put there; the parent's rmdir fails too
        folder.rmdir()


def make_parents(output_dir: Path) -> list[Path]:
    """Create the missing parents of ``output_dir``; returns those created, deepest first (for
    :func:`remove_parents`)."""
    missing = [parent for parent in output_dir.parents if not parent.exists()]
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    return missing


def remove_parents(created: list[Path]) -> None:
    """Remove the folders :func:`make_parents` created, deepest first, as long as they are still empty."""
    for folder in created:
        try:
            folder.rmdir()
        except OSError:
            break


def make_partial(output_dir: Path) -> Path:
    """Create the hidden folder ``.NAME.partial-XXXXXXXX`` beside ``output_dir`` that the export is written into,
    with its marker. It is made like any folder (unlike tempfile.mkdtemp's 0700), so the published export has the
    permissions the user's umask gives."""
    for _ in range(100):
        folder = output_dir.with_name(f".{output_dir.name}.partial-{uuid.uuid4().hex[:8]}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        try:
            files.write_json(folder / PARTIAL_MARKER, locks.owner())
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return folder
    raise FileExistsError(errno.EEXIST, "could not create a temporary folder", str(output_dir.parent))


def remove_stale_partials(parent: Path) -> list[Path]:
    """Remove the temporary folders that killed exports left in ``parent``; returns those removed.

    Only a folder that provably is one is removed: named ``.NAME.partial-...``, with a marker saying SegAlign
    wrote it from a process of this host that is no longer running, and holding nothing but export entries.
    """
    removed = []
    try:
        entries = _entries(parent)
    except OSError:
        return []
    for entry in entries:
        if not re.fullmatch(r"\..+\.partial-\w+", entry.name) or not entry.is_dir(follow_symlinks=False):
            continue
        folder = Path(entry.path)
        try:
            marker = folder / PARTIAL_MARKER
            holder = locks.read_owner(marker.read_text(encoding="utf-8")) if not marker.is_symlink() else None
            if not locks.owner_is_gone(holder) or foreign_entry(folder, EXPORT_ENTRIES | {PARTIAL_MARKER}) is not None:
                continue
        except (OSError, UnicodeDecodeError):
            continue
        if remove_export(folder, extra=frozenset({PARTIAL_MARKER})):
            removed.append(folder)
    return removed


def publish(temporary: Path, output_dir: Path, overwrite: bool) -> list[str]:
    """Move the finished export into place, replacing an earlier export only; returns warnings for the user.

    The output folder is checked again here, at the rename, since it may have been created, filled or changed
    while the export ran. An earlier export is renamed aside, the new one moved in (a rename onto a folder that
    is not empty fails), and the old one deleted only if it still is purely an export; if not, it is kept aside
    and a warning says where. Nothing but export entries is ever deleted.
    """
    (temporary / PARTIAL_MARKER).unlink()
    check_output_dir(output_dir, overwrite, protected=[])
    if not output_dir.exists() or not any(output_dir.iterdir()):
        try:
            with contextlib.suppress(FileNotFoundError):
                output_dir.rmdir()  # empty (fails if it was filled just now); Windows cannot rename onto it
            temporary.rename(output_dir)  # fails if a folder with something in it appeared meanwhile
        except OSError as error:
            if output_dir.exists():
                raise SegAlignError(
                    f"output folder {output_dir} was created or filled while the export ran; the export was not "
                    "written"
                ) from error
            raise
        return []
    old = output_dir.with_name(f".{output_dir.name}.old-{uuid.uuid4().hex[:8]}")
    output_dir.rename(old)
    try:
        temporary.rename(output_dir)
    except OSError as error:
        try:
            old.rename(output_dir)  # put the previous export back rather than leave it hidden
        except OSError:
            raise SegAlignError(
                f"output folder {output_dir} was created again while the export was moved into place; the export "
                f"was not written, and the previous export is now in {old}"
            ) from error
        raise
    problem = export_problem(old)
    if problem is None and remove_export(old):
        return []
    why = f"it is no longer only a SegAlign export: {problem}" if problem else "it holds something an export does not"
    return [f"the previous contents of {output_dir} changed during the export ({why}); they were kept in {old}"]
