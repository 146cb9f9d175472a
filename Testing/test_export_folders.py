"""The output-folder safety of :mod:`segalign.export.folders` and :mod:`segalign.export.locks`, function by function,
on tables of folder contents: what counts as an earlier export, which output locations are refused, what removing an
export deletes, which temporary folders of killed exports are removed, how an export is published, owner records and
the lock. (test_safety.py checks the same rules end to end, through exports and the command line.)
"""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path

import pytest

from segalign.errors import SegAlignError
from segalign.export import folders, locks
from segalign.export.folders import PARTIAL_MARKER

#: A pid that no process has: above Linux's largest pid_max (2**22), and positive.
NO_SUCH_PID = 2 ** 22 + 12345
#: The content of an export.json SegAlign writes (the part that marks it).
SEGALIGN_JSON = json.dumps({"written_by": "SegAlign", "segalign_version": "1.0"})
#: An export as it lies on disk (names relative to its folder; a name ending in "/" is an empty folder).
EXPORT = {
    "export.json": SEGALIGN_JSON,
    "labels/0000_i1.png": "png",
    "labels/0001_i2.png": "png",
    "masks/liver/0000_i1.png": "png",
    "viewer/frame-0000.js": "js",
    "manifest.csv": "index\n",
    "labels.json": "[]",
    "seg.dcm": "dicom",
}
EXPORT_WITHOUT_MANIFEST = {name: text for name, text in EXPORT.items() if name != "manifest.csv"}


def make_tree(root: Path, entries: dict[str, str | tuple[str, str]]) -> Path:
    """Create ``entries`` under ``root``: ``"name": "text"`` a file, ``"name/": ""`` a folder, ``"name": ("link",
    "target")`` a symbolic link."""
    root.mkdir(parents=True, exist_ok=True)
    for name, content in entries.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, tuple):
            path.symlink_to(content[1])
        elif name.endswith("/"):
            path.mkdir(exist_ok=True)
        else:
            path.write_text(content)
    return root


def tree(root: Path) -> list[str]:
    """Everything under ``root``, relative, sorted (folders end in "/")."""
    return sorted(f"{p.relative_to(root)}{'/' if p.is_dir() and not p.is_symlink() else ''}" for p in root.rglob("*"))


# --- export_problem: what counts as an earlier export --------------------------------------------------------------

EXPORT_PROBLEMS = [
    ("empty", {}, "it has no export.json"),
    ("earlier export", EXPORT, None),
    ("export of an older SegAlign (no written_by)", {**EXPORT, "export.json": '{"segalign_version": "0.3"}'}, None),
    ("export.json of someone else", {**EXPORT, "export.json": '{"tool": "other"}'},
     "its export.json was not written by SegAlign"),
    ("export.json not JSON", {**EXPORT, "export.json": "not json"}, "its export.json was not written by SegAlign"),
    ("export.json a list", {**EXPORT, "export.json": "[]"}, "its export.json was not written by SegAlign"),
    ("export.json a link", {**EXPORT, "real.json": SEGALIGN_JSON, "export.json": ("link", "real.json")},
     "it has no export.json"),
    ("export.json a folder", {"export.json/": ""}, "it has no export.json"),
    ("foreign file", {**EXPORT, "notes.txt": "mine"}, "it holds notes.txt, which an export does not write"),
    ("foreign folder", {**EXPORT, "extra/a.png": "png"}, "it holds extra/, which an export does not write"),
    ("file-manager metadata only", {
        **EXPORT, ".DS_Store": "", "Thumbs.db": "", "._manifest.csv": "", "labels/desktop.ini": "",
        "labels/._0000_i1.png": "", "masks/liver/.directory": "",
    }, None),
    ("file-manager metadata without export.json", {".DS_Store": "", "Thumbs.db": ""}, "it has no export.json"),
    ("nested foreign file", {**EXPORT, "masks/liver/notes.txt": "mine"},
     "it holds masks/liver/notes.txt, which an export does not write"),
    ("nested foreign image folder", {**EXPORT, "masks/liver/deeper/a.png": "png"},
     "it holds masks/liver/deeper/, which an export does not write"),
    ("image where the viewer holds scripts", {**EXPORT, "viewer/a.png": "png"},
     "it holds viewer/a.png, which an export does not write"),
    ("a link among the images", {**EXPORT, "labels/0002_i3.png": ("link", "/etc/hostname")},
     "it holds labels/0002_i3.png, which an export does not write"),
    ("an export entry that is a link", {**EXPORT, "rtstruct.dcm": ("link", "/etc/hostname")},
     "it holds rtstruct.dcm, which an export does not write"),
    ("an export file's name as a folder", {**EXPORT_WITHOUT_MANIFEST, "manifest.csv/": ""}, "it holds manifest.csv/"),
]


@pytest.mark.parametrize("contents, problem", [case[1:] for case in EXPORT_PROBLEMS],
                         ids=[case[0] for case in EXPORT_PROBLEMS])
def test_export_problem(tmp_path: Path, contents: dict, problem: str | None) -> None:
    folder = make_tree(tmp_path / "out", contents)
    found = folders.export_problem(folder)
    if problem is None:
        assert found is None
    else:
        assert found is not None and found.startswith(problem), found


def test_an_export_json_too_large_to_be_segalign_s_is_not_read(tmp_path: Path) -> None:
    folder = make_tree(tmp_path / "out", EXPORT)
    with (folder / "export.json").open("r+b") as stream:  # sparse: takes no room
        stream.truncate(folders._EXPORT_JSON_LIMIT + 1)
    assert folders.export_problem(folder) == "its export.json was not written by SegAlign"


# --- check_output_dir: which output locations are refused ----------------------------------------------------------

OUTPUT_CHECKS = [
    # name, what lies at the output, overwrite, the library's message (None: accepted), the command line's
    ("missing", None, False, None, None),
    ("empty folder", {}, False, None, None),
    ("earlier export", EXPORT, False, "holds an earlier SegAlign export; pass overwrite=True to replace it",
     "holds an earlier SegAlign export; use --overwrite to replace it"),
    ("earlier export, overwrite", EXPORT, True, None, None),
    ("foreign folder", {"notes.txt": "mine"}, False, "it is never replaced, even with overwrite=True",
     "it is never replaced, even with --overwrite"),
    ("foreign folder, overwrite", {"notes.txt": "mine"}, True, "it is never replaced, even with overwrite=True",
     "it is never replaced, even with --overwrite"),
    ("a file", "file", True, "exists and is not a folder", "exists and is not a folder"),
    ("a link to an export", "link", True, "is a symbolic link", "is a symbolic link"),
]


@pytest.mark.parametrize("contents, overwrite, message, cli_message", [case[1:] for case in OUTPUT_CHECKS],
                         ids=[case[0] for case in OUTPUT_CHECKS])
def test_check_output_dir(tmp_path: Path, contents, overwrite: bool, message, cli_message) -> None:
    out = tmp_path / "out"
    if contents == "file":
        out.write_text("a file")
    elif contents == "link":
        make_tree(tmp_path / "real", EXPORT)
        out.symlink_to(tmp_path / "real")
    elif contents is not None:
        make_tree(out, contents)
    before = tree(tmp_path)
    if message is None:
        folders.check_output_dir(out, overwrite, protected=[])
    else:
        with pytest.raises(SegAlignError, match=message) as raised:
            folders.check_output_dir(out, overwrite, protected=[])
        assert cli_message in raised.value.cli_message
    assert tree(tmp_path) == before  # checking changes nothing


@pytest.mark.parametrize("output, protected", [("dicom", "dicom"), ("", "dicom"), ("dicom", "dicom/seg.nii.gz")],
                         ids=["the input", "its parent", "the folder of an input file"])
def test_check_output_dir_refuses_a_folder_holding_an_input(tmp_path: Path, output: str, protected: str) -> None:
    make_tree(tmp_path / "dicom", {"CT.0001.dcm": "dicom", "seg.nii.gz": "nifti"})
    with pytest.raises(SegAlignError, match="would contain the input"):
        folders.check_output_dir(tmp_path / output, True, protected=[tmp_path / protected])
    folders.check_output_dir(tmp_path / "elsewhere", True, protected=[tmp_path / protected])  # beside it: fine


# --- remove_export: only export entries are deleted ----------------------------------------------------------------

REMOVALS = [
    # name, contents, extra allowed names, whether the folder goes, what stays
    ("an export", EXPORT, frozenset(), True, []),
    ("with file-manager metadata", {**EXPORT, ".DS_Store": "", "labels/Thumbs.db": ""}, frozenset(), True, []),
    ("with a file of the user's", {**EXPORT, "mine.csv": "keep"}, frozenset(), False, ["mine.csv"]),
    ("with a note among the images", {**EXPORT, "labels/keep.txt": "keep"}, frozenset(),
     False, ["labels/", "labels/keep.txt"]),
    ("with a folder of the user's", {**EXPORT, "work/a.png": "keep"}, frozenset(), False, ["work/", "work/a.png"]),
    ("a link among the images", {**EXPORT, "labels/link.png": ("link", "/etc/hostname")}, frozenset(),
     False, ["labels/", "labels/link.png"]),
    ("a temporary folder, its marker not allowed", {**EXPORT, PARTIAL_MARKER: "{}"}, frozenset(),
     False, [PARTIAL_MARKER]),
    ("a temporary folder", {**EXPORT, PARTIAL_MARKER: "{}"}, frozenset({PARTIAL_MARKER}), True, []),
]


@pytest.mark.parametrize("contents, extra, gone, left", [case[1:] for case in REMOVALS],
                         ids=[case[0] for case in REMOVALS])
def test_remove_export(tmp_path: Path, contents: dict, extra: frozenset, gone: bool, left: list[str]) -> None:
    folder = make_tree(tmp_path / "old", contents)
    assert folders.remove_export(folder, extra=extra) is gone
    assert not folder.exists() if gone else tree(folder) == left
    assert Path("/etc/hostname").exists()  # a link is removed or left, never followed


# --- remove_stale_partials: temporary folders of killed exports ----------------------------------------------------

def _record(**changes: object) -> dict:
    return {**locks.owner(), "pid": NO_SUCH_PID, **changes}


STALE_PARTIALS = [
    # name, folder name, marker (a record, text, or None), other contents, whether it is removed
    ("left by a dead export", ".out.partial-1a2b3c4d", _record, {"labels/a.png": "x", "masks/liver/a.png": "x"}, True),
    ("empty, left by a dead export", ".out.partial-1a2b3c4d", _record, {}, True),
    ("of a running export", ".out.partial-1a2b3c4d", lambda: _record(pid=os.getpid()), {"labels/a.png": "x"}, False),
    ("of another host", ".out.partial-1a2b3c4d", lambda: _record(host="elsewhere"), {"labels/a.png": "x"}, False),
    ("of another container", ".out.partial-1a2b3c4d", lambda: _record(pid_namespace="another pid:[1]"), {}, False),
    ("without marker", ".out.partial-1a2b3c4d", None, {"labels/a.png": "x"}, False),
    ("marker not SegAlign's", ".out.partial-1a2b3c4d", lambda: {**_record(), "written_by": "other"}, {}, False),
    ("marker not JSON", ".out.partial-1a2b3c4d", lambda: "not json", {}, False),
    ("holding a file of the user's", ".out.partial-1a2b3c4d", _record, {"notes.txt": "mine"}, False),
    ("not hidden", "out.partial-1a2b3c4d", _record, {}, False),
    ("not a temporary folder's name", ".out.old-1a2b3c4d", _record, {}, False),
]


@pytest.mark.parametrize("name, marker, contents, removed", [case[1:] for case in STALE_PARTIALS],
                         ids=[case[0] for case in STALE_PARTIALS])
def test_remove_stale_partials(tmp_path: Path, name: str, marker, contents: dict, removed: bool) -> None:
    folder = make_tree(tmp_path / name, contents)
    if marker is not None:
        record = marker()
        (folder / PARTIAL_MARKER).write_text(record if isinstance(record, str) else json.dumps(record))
    before = tree(folder)
    assert folders.remove_stale_partials(tmp_path) == ([folder] if removed else [])
    assert not folder.exists() if removed else tree(folder) == before


def test_a_marker_that_is_a_link_is_never_trusted(tmp_path: Path) -> None:
    (tmp_path / "record.json").write_text(json.dumps(_record()))
    folder = make_tree(tmp_path / ".out.partial-1a2b3c4d", {PARTIAL_MARKER: ("link", str(tmp_path / "record.json"))})
    assert folders.remove_stale_partials(tmp_path) == [] and folder.is_dir()


def test_a_file_named_like_a_temporary_folder_is_left(tmp_path: Path) -> None:
    (tmp_path / ".out.partial-1a2b3c4d").write_text("mine")
    assert folders.remove_stale_partials(tmp_path) == []
    assert folders.remove_stale_partials(tmp_path / "missing") == []


# --- make_partial, publish ------------------------------------------------------------------------------------------

def test_make_partial_makes_a_hidden_folder_beside_the_output_with_its_owner(tmp_path: Path) -> None:
    partial = folders.make_partial(tmp_path / "out")
    assert partial.parent == tmp_path and partial.name.startswith(".out.partial-")
    record = locks.read_owner((partial / PARTIAL_MARKER).read_text(encoding="utf-8"))
    assert record is not None and record["pid"] == os.getpid() and not locks.owner_is_gone(record)
    assert folders.remove_stale_partials(tmp_path) == []  # this process's own: running


PUBLISHES = [
    # name, what lies at the output, overwrite, the error (None: published), what is kept aside
    ("into a missing folder", None, False, None),
    ("into an empty folder", {}, False, None),
    ("over an earlier export", EXPORT, True, None),
    ("over an earlier export without overwrite", EXPORT, False, "holds an earlier SegAlign export"),
    ("over a folder of the user's", {"notes.txt": "mine"}, True, "is never replaced"),
]


@pytest.mark.parametrize("contents, overwrite, error", [case[1:] for case in PUBLISHES],
                         ids=[case[0] for case in PUBLISHES])
def test_publish(tmp_path: Path, contents, overwrite: bool, error: str | None) -> None:
    out = tmp_path / "out"
    if contents is not None:
        make_tree(out, contents)
    before = tree(out) if out.exists() else None
    partial = folders.make_partial(out)
    make_tree(partial, {"export.json": SEGALIGN_JSON, "labels/0000_i9.png": "new"})
    if error is None:
        assert folders.publish(partial, out, overwrite) == []
        assert tree(out) == ["export.json", "labels/", "labels/0000_i9.png"] and not partial.exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing aside, no marker
    else:
        with pytest.raises(SegAlignError, match=error):
            folders.publish(partial, out, overwrite)
        assert tree(out) == before  # untouched


def test_publish_keeps_an_earlier_export_aside_when_it_changed_meanwhile(tmp_path: Path, monkeypatch) -> None:
    out = make_tree(tmp_path / "out", EXPORT)
    partial = make_tree(folders.make_partial(out), {"export.json": SEGALIGN_JSON})
    real_check = folders.check_output_dir

    def check_then_write(output_dir: Path, overwrite: bool, protected: list[Path]) -> None:
        real_check(output_dir, overwrite, protected)
        (output_dir / "notes.txt").write_text("just saved")  # the user, right after the last check

    monkeypatch.setattr(folders, "check_output_dir", check_then_write)
    [warning] = folders.publish(partial, out, overwrite=True)
    [aside] = [p for p in tmp_path.iterdir() if p.name.startswith(".out.old-")]
    assert f"they were kept in {aside}" in warning and "notes.txt" in warning
    assert (aside / "notes.txt").read_text() == "just saved" and (aside / "seg.dcm").is_file()
    assert tree(out) == ["export.json"]


# --- make_parents, remove_parents -----------------------------------------------------------------------------------

def test_make_parents_and_remove_parents(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "c" / "out"
    created = folders.make_parents(out)
    assert created == [tmp_path / "a" / "b" / "c", tmp_path / "a" / "b", tmp_path / "a"] and out.parent.is_dir()
    (tmp_path / "a" / "mine.txt").write_text("keep")
    folders.remove_parents(created)
    assert tree(tmp_path) == ["a/", "a/mine.txt"]  # removed while empty, then stopped
    assert folders.make_parents(tmp_path / "out") == []


# --- owner records, pids, the lock ----------------------------------------------------------------------------------

READ_OWNERS = [
    ("a record", json.dumps({"written_by": "SegAlign", "pid": 1}), {"written_by": "SegAlign", "pid": 1}),
    ("someone else's", json.dumps({"written_by": "other", "pid": 1}), None),
    ("a list", "[]", None),
    ("not JSON", "{", None),
    ("empty", "", None),
]


@pytest.mark.parametrize("text, record", [case[1:] for case in READ_OWNERS], ids=[case[0] for case in READ_OWNERS])
def test_read_owner(text: str, record: dict | None) -> None:
    assert locks.read_owner(text) == record


OWNERS_GONE = [
    ("no record", lambda: None, False),
    ("a process that ended, here", _record, True),
    ("this process", lambda: _record(pid=os.getpid()), False),
    ("another host", lambda: _record(host="elsewhere"), False),
    ("another pid namespace or boot", lambda: _record(pid_namespace="another-boot pid:[4026531836]"), False),
    ("no pid", lambda: {k: v for k, v in _record().items() if k != "pid"}, False),
    ("a pid that is no number", lambda: _record(pid="12"), False),
    ("a pid that is a bool", lambda: _record(pid=True), False),
    ("pid 0", lambda: _record(pid=0), False),
]


@pytest.mark.parametrize("record, gone", [case[1:] for case in OWNERS_GONE], ids=[case[0] for case in OWNERS_GONE])
def test_owner_is_gone(record, gone: bool) -> None:
    assert locks.owner_is_gone(record()) is gone


def test_owner_is_gone_asks_pid_running(monkeypatch) -> None:
    monkeypatch.setattr(locks, "pid_running", lambda pid: True)  # the seam: a pid reused by another process
    assert not locks.owner_is_gone(_record())


@pytest.mark.parametrize("pid, running", [(os.getpid(), True), (0, True), (-1, True), (NO_SUCH_PID, False)],
                         ids=["this process", "0", "negative", "no such pid"])
def test_pid_running(pid: int, running: bool) -> None:
    assert locks.pid_running(pid) is running


def test_owner_says_who_writes() -> None:
    record = locks.owner()
    assert record["written_by"] == folders.WRITTEN_BY == "SegAlign"
    assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
    assert record["pid_namespace"] == locks.pid_namespace()


def test_the_output_lock_admits_one_holder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first, second = locks.OutputLock(out), locks.OutputLock(out)
    first.acquire()
    try:
        assert locks.read_owner(first.path.read_text())["pid"] == os.getpid()
        busy = f"another export into {out} is running (pid {os.getpid()} on {socket.gethostname()}, since "
        with pytest.raises(SegAlignError, match=re.escape(busy)):
            second.acquire()
    finally:
        first.release()
    assert not first.path.exists()
    second.acquire()
    second.release()
    second.release()  # releasing a lock not held does nothing
    assert sorted(tmp_path.iterdir()) == []


@pytest.mark.parametrize("holder, taken", [(lambda: _record(), True), (lambda: _record(pid=os.getppid()), False),
                                           (lambda: _record(host="elsewhere"), False)],
                         ids=["a dead export's", "a running export's", "another host's"])
def test_without_flock_a_lock_file_is_taken_over_only_from_a_dead_export(tmp_path: Path, monkeypatch, holder,
                                                                        taken: bool) -> None:
    monkeypatch.setattr(locks, "try_flock", lambda fd: None)  # the seam: as on Windows, or a file system without locks
    lock = locks.OutputLock(tmp_path / "out")
    lock.path.write_text(json.dumps(holder()))
    if taken:
        lock.acquire()
        assert locks.read_owner(lock.path.read_text())["pid"] == os.getpid()
        lock.release()
    else:
        with pytest.raises(SegAlignError, match="another export into"):
            lock.acquire()
        assert lock.path.exists()


@pytest.mark.skipif(os.name != "posix", reason="flock")
def test_try_flock(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    path.write_text("")
    first, second = os.open(path, os.O_RDWR), os.open(path, os.O_RDWR)
    try:
        assert locks.try_flock(first) is True
        assert locks.try_flock(second) is False
    finally:
        os.close(first)
        os.close(second)
