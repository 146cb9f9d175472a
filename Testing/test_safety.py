"""Exports and the demo never destroy what is not theirs, and interrupted or concurrent runs leave nothing that looks
complete: --overwrite replaces only an earlier SegAlign export (recognised by content), the output folder is checked
again at the final rename, two exports into one folder cannot run at once, temporary folders of killed exports are
cleaned up only when provably dead, permissions follow the umask, SIGTERM/SIGHUP/SIGINT end the command with one
line and 128 + signal, and error lines are capped and printable whatever bytes a path holds.

The slow exports run in real subprocesses (``python -c DRIVER``) whose progress callback prints ``frame N`` and then
waits (a delay, or until a gate file exists), so the test can act at a known point; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import leftovers, read_manifest, run_cli, snapshot

import segalign.cli
from segalign.dicom import scan_folder
from segalign.errors import SegAlignError
from segalign.export import export_segmentation, folders, locks
from segalign.export.folders import EXPORT_ENTRIES, PARTIAL_MARKER, export_problem, remove_export
from segalign.export.locks import OutputLock
from segalign.options import ExportOptions, OverlayOptions
from segalign.readers import load_segmentation
from segalign.synthetic import grid_affine, stack, write_enhanced, write_nifti, write_series

ROWS, COLUMNS = 12, 16
ORIGIN_LPS = (100.0, 60.0, 20.0)
SLICES = 4
POSIX_ONLY = pytest.mark.skipif(os.name != "posix", reason="POSIX signals and permissions")

#: Runs an export in a subprocess: ``cli ARGS...`` (segalign's main) or ``lib DICOM SEG OUT`` (the library call),
#: or ``scan ARGS...`` (main, with a slow scan). Progress prints "frame N", then waits for SEGALIGN_TEST_GATE to
#: exist (at most 30 s) and sleeps SEGALIGN_TEST_DELAY seconds.
DRIVER = r"""
import os, sys, time

def progress(done, total):
    print(f"frame {done}", flush=True)
    gate = os.environ.get("SEGALIGN_TEST_GATE")
    deadline = time.monotonic() + 30
    while gate and not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(float(os.environ.get("SEGALIGN_TEST_DELAY", "0")))

mode, *args = sys.argv[1:]
if mode in ("cli", "scan"):
    import segalign.cli as cli
    import segalign.cli.progress
    import segalign.dicom.headers as headers
    segalign.cli.progress.ProgressBar.update = lambda self, done, total, detail="": progress(done, total)
    if mode == "scan":
        real = headers.read_header
        def slow_header(path):
            print("scanning", flush=True)
            time.sleep(0.05)
            return real(path)
        headers.read_header = slow_header
    sys.exit(cli.main(args))
from segalign import export_segmentation, load_segmentation, scan_folder
dicom_dir, seg, out = args
export_segmentation(scan_folder(dicom_dir).select(), load_segmentation(seg), out, progress=progress)
"""


def make_inputs(root: Path, slices: int = SLICES) -> tuple[Path, Path]:
    """A small axial series and a segmentation with labels 1 and 2 on its grid."""
    dicom = root / "dicom"
    write_series(dicom, stack(ORIGIN_LPS, slices, (0, 0, 2.0), rows=ROWS, columns=COLUMNS))
    labels = np.zeros((COLUMNS, ROWS, slices), dtype=np.uint8)
    labels[2:6, 3:8, :] = 1
    labels[9:14, 1:4, 1:3] = 2
    return dicom, write_nifti(root / "seg.nii.gz", labels, grid_affine(ORIGIN_LPS, (1.0, 1.0, 2.0)))


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    return make_inputs(tmp_path)


def export(dicom: Path, seg: Path, out: Path, options: ExportOptions | None = None, **keywords):
    """The library export of ``dicom`` and ``seg`` into ``out``."""
    return export_segmentation(
        scan_folder(dicom).select(), load_segmentation(seg), out, options, dicom_root=dicom, **keywords
    )


def one_line_error(result, *words: str) -> str:
    assert result.code == 1, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("segalign: error: "), result.stderr
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    return lines[0]


def lock_files(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.endswith(".lock"))


class Driver:
    """One subprocess running DRIVER, killed at the end of the test whatever happens."""

    def __init__(self, tmp_path: Path, *args: object, gate: Path | None = None, delay: float = 0.0) -> None:
        env = dict(os.environ, SEGALIGN_TEST_DELAY=str(delay))
        if gate is not None:
            env["SEGALIGN_TEST_GATE"] = str(gate)
        self.process = subprocess.Popen(
            [sys.executable, "-c", DRIVER, *map(str, args)], cwd=tmp_path, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self._watchdog = threading.Timer(90, self.process.kill)  # never hang the suite
        self._watchdog.start()

    def wait_for(self, prefix: str) -> None:
        """Read stdout until a line starting with ``prefix`` (fails if the process ends first)."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(prefix):
                return
        raise AssertionError(f"process ended before printing {prefix!r}: {self.process.stderr.read()}")

    def finish(self) -> tuple[int, str, str]:
        out, err = self.process.communicate(timeout=60)
        self._watchdog.cancel()
        return self.process.returncode, out, err

    def close(self) -> None:
        self._watchdog.cancel()
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate(timeout=30)


@pytest.fixture
def drivers():
    started: list[Driver] = []
    yield started
    for driver in started:
        driver.close()


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait(timeout=30)
    return process.pid


# --- what counts as an export ---------------------------------------------------------------------------------------


def test_export_json_says_segalign_wrote_it(inputs, tmp_path):
    export(*inputs, tmp_path / "out")
    provenance = json.loads((tmp_path / "out" / "export.json").read_text(encoding="utf-8"))
    assert provenance["written_by"] == "SegAlign"
    assert {"segalign_version", "dicom_dir", "series_instance_uid", "affine_ras", "warnings"} <= set(provenance)
    assert export_problem(tmp_path / "out") is None
    assert {p.name + ("/" if p.is_dir() else "") for p in (tmp_path / "out").iterdir()} <= EXPORT_ENTRIES


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["plain", "overwrite"])
def test_a_folder_that_is_not_an_export_is_refused_at_once_and_never_replaced(inputs, tmp_path, overwrite):
    out = tmp_path / "Documents"
    out.mkdir()
    (out / "notes.txt").write_text("precious\n")
    (out / "thesis").mkdir()
    before = snapshot(tmp_path)
    message = one_line_error(
        run_cli("export", *inputs, "-o", out, *overwrite),
        "not a SegAlign export", "it has no export.json", "never replaced, even with --overwrite",
    )
    assert "use --overwrite" not in message  # the first message already says --overwrite would not help
    assert snapshot(tmp_path) == before and leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "content, extra, reason",
    [
        ('{"tool": "OtherTool"}\n', "patients.csv", "it holds patients.csv, which an export does not write"),
        ('{"tool": "OtherTool", "version": 3}\n', None, "its export.json was not written by SegAlign"),
        ('["written_by", "SegAlign"]\n', None, "its export.json was not written by SegAlign"),
        ("\x00\xff not json", None, "its export.json was not written by SegAlign"),
    ],
    ids=["other-tool-with-data", "other-tool", "json-list", "not-json"],
)
def test_another_tools_export_json_does_not_make_an_export(inputs, tmp_path, content, extra, reason):
    out = tmp_path / "their_tool_output"
    out.mkdir()
    (out / "export.json").write_text(content, encoding="utf-8", errors="surrogateescape")
    if extra:
        (out / extra).write_text("id,name\n1,Jane Doe\n")
    (out / "labels").mkdir()  # a folder named like an export's does not help
    before = snapshot(tmp_path)
    one_line_error(run_cli("export", *inputs, "-o", out, "--overwrite"), reason, "never replaced")
    assert snapshot(tmp_path) == before and leftovers(tmp_path) == [] and lock_files(tmp_path) == []


def test_an_export_with_something_else_in_it_is_not_replaced(inputs, tmp_path):
    out = tmp_path / "out"
    export(*inputs, out)
    (out / "labels" / "my_notes.txt").write_text("mine\n")
    one_line_error(run_cli("export", *inputs, "-o", out, "--overwrite"), "it holds labels/my_notes.txt")
    (out / "labels" / "my_notes.txt").unlink()
    (out / "labels" / "link.png").symlink_to(tmp_path / "seg.nii.gz")
    one_line_error(run_cli("export", *inputs, "-o", out, "--overwrite"), "it holds labels/link.png")
    assert (tmp_path / "seg.nii.gz").is_file()


def test_export_problem_knows_the_layout(tmp_path):
    folder = tmp_path / "export"
    (folder / "masks" / "liver").mkdir(parents=True)
    (folder / "masks" / "liver" / "0000_i1.png").write_bytes(b"png")
    (folder / "export.json").write_text('{"written_by": "SegAlign"}')
    assert export_problem(folder) is None
    (folder / "masks" / "liver" / "deeper").mkdir()
    assert export_problem(folder) == "it holds masks/liver/deeper/, which an export does not write"
    (folder / "masks" / "liver" / "deeper").rmdir()
    (folder / "Labels").mkdir()  # names are exact
    assert export_problem(folder) == "it holds Labels/, which an export does not write"


def test_an_earlier_export_needs_overwrite_worded_for_library_and_cli(inputs, tmp_path):
    out = tmp_path / "out"
    export(*inputs, out)
    with pytest.raises(SegAlignError) as raised:
        export(*inputs, out)
    assert "holds an earlier SegAlign export; pass overwrite=True to replace it" in str(raised.value)
    assert "--overwrite" not in str(raised.value)
    assert "use --overwrite to replace it" in raised.value.cli_message
    one_line_error(run_cli("export", *inputs, "-o", out), "holds an earlier SegAlign export; use --overwrite")
    assert run_cli("export", *inputs, "-o", out, "--overwrite", "-q").code == 0


def test_an_export_from_before_written_by_is_still_replaced(inputs, tmp_path):
    out = tmp_path / "out"
    export(*inputs, out)
    provenance = json.loads((out / "export.json").read_text())
    del provenance["written_by"]
    (out / "export.json").write_text(json.dumps(provenance))
    assert export_problem(out) is None
    assert run_cli("export", *inputs, "-o", out, "--overwrite", "-q").code == 0
    assert json.loads((out / "export.json").read_text())["written_by"] == "SegAlign"


@POSIX_ONLY
def test_an_output_that_is_a_link_is_refused(inputs, tmp_path):
    target = tmp_path / "real"
    export(*inputs, target)
    link = tmp_path / "link"
    link.symlink_to(target)
    before = snapshot(target)
    one_line_error(run_cli("export", *inputs, "-o", link, "--overwrite"), "symbolic link")
    assert snapshot(target) == before and link.is_symlink()


def test_help_says_what_overwrite_replaces(capsys):
    with pytest.raises(SystemExit):
        segalign.cli.main(["export", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "replace OUT_DIR if it is an earlier SegAlign export; other folders are never replaced" in text


# --- the final rename ------------------------------------------------------------------------------------------------


def _at_frame(frame: int, action):
    def progress(done: int, total: int) -> None:
        if done == frame:
            action()

    return progress


def test_a_folder_created_while_exporting_is_left_alone(inputs, tmp_path):
    out = tmp_path / "out"

    def create() -> None:
        out.mkdir()
        (out / "mine.txt").write_text("created meanwhile\n")

    with pytest.raises(SegAlignError, match="not a SegAlign export"):
        export(*inputs, out, progress=_at_frame(2, create))
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]
    assert leftovers(tmp_path) == [] and lock_files(tmp_path) == []


def test_an_export_turned_into_a_users_folder_while_exporting_is_not_replaced(inputs, tmp_path):
    out = tmp_path / "out"
    export(*inputs, out)
    before = snapshot(out)
    with pytest.raises(SegAlignError, match="it holds notes.txt"):
        export(*inputs, out, overwrite=True, progress=_at_frame(2, lambda: (out / "notes.txt").write_text("mine")))
    assert snapshot(out) == {**before, "notes.txt": b"mine"}
    assert leftovers(tmp_path) == [] and lock_files(tmp_path) == []


def test_a_change_after_the_last_check_is_kept_aside_with_a_warning(inputs, tmp_path, monkeypatch):
    out = tmp_path / "out"
    export(*inputs, out, ExportOptions(masks=True))
    real_check = folders.check_output_dir

    def check_then_change(output_dir, overwrite, protected):
        real_check(output_dir, overwrite, protected)
        if not protected:  # the check at the rename: the user writes into the old export right after it
            (output_dir / "notes.txt").write_text("just saved\n")

    monkeypatch.setattr(folders, "check_output_dir", check_then_change)
    result = export(*inputs, out, overwrite=True)
    assert len(read_manifest(out)) == SLICES and not (out / "masks").exists() and not (out / "notes.txt").exists()
    aside = [p for p in tmp_path.iterdir() if p.name.startswith(".out.old-")]
    assert len(aside) == 1
    assert (aside[0] / "notes.txt").read_text() == "just saved\n"
    assert (aside[0] / "masks").is_dir() and (aside[0] / "manifest.csv").is_file()  # the old export, untouched
    warning = [w for w in result.warnings if "kept in" in w]
    assert len(warning) == 1 and str(aside[0]) in warning[0] and "notes.txt" in warning[0]


def test_removing_an_export_deletes_only_export_entries(tmp_path):
    folder = tmp_path / "old"
    (folder / "labels").mkdir(parents=True)
    (folder / "labels" / "0000_i1.png").write_bytes(b"png")
    (folder / "labels" / "keep.txt").write_text("keep")
    (folder / "manifest.csv").write_text("index\n")
    (folder / "mine.csv").write_text("keep")
    assert remove_export(folder) is False
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) == ["labels", "labels/keep.txt", "mine.csv"]
    (folder / "labels" / "keep.txt").unlink()
    (folder / "mine.csv").unlink()
    (folder / "export.json").write_text("{}")
    assert remove_export(folder) is True and not folder.exists()


# --- one export at a time -------------------------------------------------------------------------------------------


def test_a_second_export_into_the_same_folder_is_refused_while_the_first_runs(inputs, tmp_path, drivers):
    out, gate = tmp_path / "out", tmp_path / "gate"
    first = Driver(tmp_path, "cli", "export", *inputs, "-o", out, gate=gate)
    drivers.append(first)
    first.wait_for("frame 1")  # the first export holds the lock and waits at the gate
    def outside_the_running_export() -> dict:  # whose worker threads still write frames meanwhile
        return {path: content for path, content in snapshot(tmp_path).items() if ".partial-" not in path}

    before = outside_the_running_export()
    second = run_cli("export", *inputs, "-o", out, "--masks")
    message = one_line_error(second, f"another export into {out} is running", f"pid {first.process.pid}")
    assert socket.gethostname() in message
    assert outside_the_running_export() == before  # the refused export changed nothing, not even the lock
    gate.touch()
    code, _, err = first.finish()
    assert code == 0, err
    assert len(read_manifest(out)) == SLICES and not (out / "masks").exists()  # the first one's export
    assert leftovers(tmp_path) == [] and lock_files(tmp_path) == []


def test_a_held_lock_refuses_and_its_release_allows(inputs, tmp_path):
    out = tmp_path / "out"
    lock = OutputLock(out)
    lock.acquire()
    try:
        one_line_error(run_cli("export", *inputs, "-o", out), "another export into", f"pid {os.getpid()}")
        assert not out.exists()
    finally:
        lock.release()
    assert lock_files(tmp_path) == []
    assert run_cli("export", *inputs, "-o", out, "-q").code == 0
    assert lock_files(tmp_path) == []


def _stale_lock(out: Path, pid: int, host: str | None = None) -> Path:
    path = out.with_name(f".{out.name}.lock")
    owner = {"written_by": "SegAlign", "pid": pid, "host": host or socket.gethostname(), "started": "earlier",
             "pid_namespace": locks.pid_namespace()}
    path.write_text(json.dumps(owner))
    return path


def test_a_lock_file_left_by_a_killed_export_is_taken(inputs, tmp_path):
    out = tmp_path / "out"
    _stale_lock(out, dead_pid())
    assert run_cli("export", *inputs, "-o", out, "-q").code == 0
    assert lock_files(tmp_path) == []


def test_without_flock_only_a_dead_processs_lock_is_taken_over(inputs, tmp_path, monkeypatch):
    monkeypatch.setattr(locks, "try_flock", lambda fd: None)  # as on Windows
    out = tmp_path / "out"
    lock = _stale_lock(out, os.getppid())  # alive
    one_line_error(run_cli("export", *inputs, "-o", out), "another export into", f"pid {os.getppid()}")
    _stale_lock(out, dead_pid(), host="some-other-host")  # dead perhaps, but not provably: another host
    one_line_error(run_cli("export", *inputs, "-o", out), "on some-other-host", str(lock))
    _stale_lock(out, dead_pid())
    assert run_cli("export", *inputs, "-o", out, "-q").code == 0
    assert lock_files(tmp_path) == [] and len(read_manifest(out)) == SLICES


# --- temporary folders of killed exports ----------------------------------------------------------------------------


def _partial(parent: Path, name: str, owner: dict | None, files: dict[str, str]) -> Path:
    folder = parent / name
    folder.mkdir()
    if owner is not None:
        (folder / PARTIAL_MARKER).write_text(json.dumps({"written_by": "SegAlign", **owner}))
    for relative, text in files.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text(text)
    return folder


@POSIX_ONLY
def test_a_killed_exports_temporary_folder_is_removed_by_the_next_export(inputs, tmp_path, drivers):
    out = tmp_path / "out"
    killed = Driver(tmp_path, "lib", *inputs, out, delay=0.5)
    drivers.append(killed)
    killed.wait_for("frame 2")
    killed.process.send_signal(signal.SIGKILL)
    assert killed.finish()[0] == -signal.SIGKILL
    left = [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    assert len(left) == 1 and (left[0] / PARTIAL_MARKER).is_file() and any((left[0] / "labels").iterdir())
    assert not out.exists()

    host, gone = socket.gethostname(), dead_pid()
    namespace = locks.pid_namespace()
    kept = [
        _partial(tmp_path, ".other.partial-alive", {"pid": os.getpid(), "host": host}, {"labels/a.png": "x"}),
        _partial(tmp_path, ".other.partial-remote", {"pid": gone, "host": "elsewhere"}, {"labels/a.png": "x"}),
        _partial(tmp_path, ".other.partial-foreign", {"pid": gone, "host": host, "pid_namespace": namespace},
                 {"notes.txt": "mine"}),
        _partial(tmp_path, ".other.partial-nomarker", None, {"labels/a.png": "x"}),
        _partial(tmp_path, "other.partial-visible", {"pid": gone, "host": host, "pid_namespace": namespace},
                 {"labels/a.png": "x"}),
    ]
    kept = [  # and a live one written in this pid namespace
        *kept,
        _partial(tmp_path, ".other.partial-alive2", {"pid": os.getpid(), "host": host, "pid_namespace": namespace},
                 {"labels/a.png": "x"}),
    ]
    removed = _partial(tmp_path, ".other.partial-dead", {"pid": gone, "host": host, "pid_namespace": namespace},
                       {"masks/liver/a.png": "x"})

    result = run_cli("export", *inputs, "-o", out)
    assert result.code == 0, result
    assert "segalign: warning: removed 2 temporary folders left by an interrupted export" in result.stderr
    assert not left[0].exists() and not removed.exists()
    assert all(folder.is_dir() for folder in kept)
    assert (kept[2] / "notes.txt").read_text() == "mine"
    assert len(read_manifest(out)) == SLICES and lock_files(tmp_path) == []


# --- permissions ----------------------------------------------------------------------------------------------------


@POSIX_ONLY
@pytest.mark.parametrize("umask, folder_mode, file_mode", [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600)])
def test_an_export_has_the_permissions_the_umask_gives(inputs, tmp_path, umask, folder_mode, file_mode):
    out = tmp_path / "out"
    previous = os.umask(umask)
    try:
        export(*inputs, out, ExportOptions(masks=True, overlays=OverlayOptions(), images=True))
    finally:
        os.umask(previous)
    modes = {p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in [out, *out.rglob("*")]}
    assert len(modes) > 10 and any(p.startswith("out/masks/") for p in modes)
    for path, mode in modes.items():
        expected = folder_mode if (tmp_path / path).is_dir() else file_mode
        assert mode == expected, f"{path}: {oct(mode)}, expected {oct(expected)}"


# --- signals --------------------------------------------------------------------------------------------------------


@POSIX_ONLY
@pytest.mark.parametrize("signum, name", [(signal.SIGTERM, "SIGTERM"), (signal.SIGHUP, "SIGHUP"), (signal.SIGINT, "")])
def test_a_signal_during_the_export_leaves_nothing(inputs, tmp_path, drivers, signum, name):
    out = tmp_path / "out"
    before = snapshot(tmp_path)
    driver = Driver(tmp_path, "cli", "export", *inputs, "-o", out, "--masks", delay=0.3)
    drivers.append(driver)
    driver.wait_for("frame 2")
    driver.process.send_signal(signum)
    code, stdout, stderr = driver.finish()
    assert code == 128 + signum, stderr
    by = f" by {name}" if name else ""
    assert stderr.splitlines() == [f"segalign: interrupted{by}; nothing was written"]
    assert "wrote" not in stdout  # no summary: the export did not finish
    assert not out.exists() and leftovers(tmp_path) == [] and lock_files(tmp_path) == []
    assert snapshot(tmp_path) == before


@POSIX_ONLY
def test_ctrl_c_during_the_scan_is_one_line(inputs, tmp_path, drivers):
    dicom, seg = inputs
    write_series(dicom / "more", stack((0, 0, 200), 40, (0, 0, 1), rows=4, columns=4))  # a scan that takes 2 s
    driver = Driver(tmp_path, "scan", "export", dicom, seg, "-o", tmp_path / "out")
    drivers.append(driver)
    driver.wait_for("scanning")
    time.sleep(0.1)
    driver.process.send_signal(signal.SIGINT)
    code, _, stderr = driver.finish()
    assert (code, stderr) == (130, "segalign: interrupted; nothing was written\n")
    assert not (tmp_path / "out").exists()


def test_the_scan_does_not_swallow_a_ctrl_c_that_pydicom_turns_into_an_error(tmp_path, monkeypatch):
    import pydicom.filereader

    write_enhanced(tmp_path / "dicom" / "enhanced.dcm", stack(ORIGIN_LPS, 3, (0, 0, 2.0), rows=4, columns=4))
    real_unpack = pydicom.filereader.unpack

    def interrupted_unpack(format_: str, data: bytes):
        if sys._getframe(1).f_code.co_name == "read_sequence_item":  # inside pydicom's "except BaseException"
            raise KeyboardInterrupt
        return real_unpack(format_, data)

    monkeypatch.setattr(pydicom.filereader, "unpack", interrupted_unpack)
    with pytest.raises(KeyboardInterrupt):  # not a file counted as unreadable, and the export going on without it
        scan_folder(tmp_path / "dicom")


@POSIX_ONLY
def test_handlers_are_installed_only_while_main_runs_and_ignored_ones_stay_ignored(inputs, tmp_path, monkeypatch):
    seen = {}

    def run(args) -> int:
        seen.update(term=signal.getsignal(signal.SIGTERM), hup=signal.getsignal(signal.SIGHUP))
        return 0

    monkeypatch.setattr(segalign.cli.commands, "run_info", run)
    previous_term = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    previous_hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        assert run_cli("info", tmp_path).code == 0
        assert callable(seen["term"]) and seen["term"] not in (signal.SIG_DFL, signal.SIG_IGN)
        assert seen["hup"] == signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL and signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGHUP, previous_hup)


@POSIX_ONLY
def test_a_ctrl_c_while_publishing_is_held_until_the_export_is_in_place(inputs, tmp_path, monkeypatch):
    out = tmp_path / "out"
    export(*inputs, out)
    real_publish = folders.publish

    def publish_with_ctrl_c(temporary, output_dir, overwrite):
        signal.raise_signal(signal.SIGINT)  # between "renamed aside" and "moved in", were it not held
        return real_publish(temporary, output_dir, overwrite)

    monkeypatch.setattr(folders, "publish", publish_with_ctrl_c)
    result = run_cli("export", *inputs, "-o", out, "--overwrite", "--masks")
    assert result.code == 130
    assert result.stderr == f"segalign: interrupted; the export in {out} is complete\n"
    assert (out / "masks").is_dir() and len(read_manifest(out)) == SLICES  # the new export, complete
    assert leftovers(tmp_path) == [] and lock_files(tmp_path) == []


# --- what main prints -----------------------------------------------------------------------------------------------


def test_error_lines_are_capped_and_details_follow(monkeypatch):
    def run(args) -> int:
        raise SegAlignError(
            "library " * 2000, cli_message="value\n" + "9" * 10_000, details=[f"series {n}" for n in range(50)]
        )

    monkeypatch.setattr(segalign.cli.commands, "run_info", run)
    lines = run_cli("info", ".").stderr.splitlines()
    assert lines[0].startswith("segalign: error: value 999") and lines[0].endswith("…")
    assert len(lines[0]) <= len("segalign: error: ") + segalign.errors.MESSAGE_LIMIT
    assert lines[1:20] == [f"  series {n}" for n in range(19)]
    assert lines[20:] == ["  ... and 31 more"]


def test_an_os_error_is_one_capped_line(monkeypatch):
    def run(args) -> int:
        raise PermissionError(13, "Permission denied", "/very/" + "long/" * 3000 + "name")

    monkeypatch.setattr(segalign.cli.commands, "run_info", run)
    result = run_cli("info", ".")
    assert result.code == 1 and len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("segalign: error: /very/long/") and len(result.stderr) < 400


@POSIX_ONLY
def test_paths_with_undecodable_bytes_print(inputs, tmp_path):
    out = os.fsencode(tmp_path) + b"/out\xff"
    env = dict(os.environ, PYTHONIOENCODING="utf-8:strict", LC_ALL="C.UTF-8")
    command = [sys.executable, "-m", "segalign", "export", *map(os.fsencode, inputs), "-o", out]
    done = subprocess.run(command, capture_output=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert b"out\\udcff" in done.stdout and b"Traceback" not in done.stderr
    again = subprocess.run(command, capture_output=True, timeout=120, env=env)
    assert again.returncode == 1 and b"out\\udcff holds an earlier SegAlign export" in again.stderr
    assert len(again.stderr.splitlines()) == 1


# --- the demo -------------------------------------------------------------------------------------------------------


def test_the_demo_refuses_a_folder_with_the_users_files(tmp_path):
    folder = tmp_path / "demo"
    (folder / "ct_dicom").mkdir(parents=True)
    (folder / "ct_dicom" / "patient_scan.dcm").write_bytes(b"the user's own scan")
    before = snapshot(tmp_path)
    one_line_error(
        run_cli("demo", "--output", folder, "--slices", 2, "-q"),
        "patient_scan.dcm", "the demo did not write", "choose another --output folder",
    )
    assert snapshot(tmp_path) == before

    (folder / "ct_dicom" / "patient_scan.dcm").unlink()
    (folder / "segmentation.nii.gz").write_bytes(b"the user's own segmentation")
    one_line_error(run_cli("demo", "--output", folder, "--slices", 2, "-q"), "segmentation.nii.gz")
    assert (folder / "segmentation.nii.gz").read_bytes() == b"the user's own segmentation"


def test_the_demo_replaces_only_what_an_earlier_demo_wrote(tmp_path):
    folder = tmp_path / "demo"
    assert run_cli("demo", "--output", folder, "--slices", 3, "-q").code == 0
    files = sorted(p.name for p in (folder / "ct_dicom").iterdir())
    assert files == ["CT.0000.dcm", "CT.0001.dcm", "CT.0002.dcm"]
    written = (folder / "ct_dicom" / "CT.0000.dcm").stat().st_mtime_ns

    assert run_cli("demo", "--output", folder, "--slices", 3, "-q").code == 0  # again: reused, export replaced
    assert (folder / "ct_dicom" / "CT.0000.dcm").stat().st_mtime_ns == written
    assert run_cli("demo", "--output", folder, "--slices", 2, "-q").code == 0  # fewer slices: the extra one goes
    assert sorted(p.name for p in (folder / "ct_dicom").iterdir()) == ["CT.0000.dcm", "CT.0001.dcm"]
    assert len(read_manifest(folder / "export")) == 2

    (folder / "ct_dicom" / "patient_scan.dcm").write_bytes(b"mine")  # added after a demo: never deleted
    marker = folder / ".segalign-demo.json"
    listed = json.loads(marker.read_text())
    marker.write_text(json.dumps({**listed, "files": [*listed["files"], "ct_dicom/patient_scan.dcm", "../x"]}))
    one_line_error(run_cli("demo", "--output", folder, "--slices", 3, "-q"), "patient_scan.dcm")
    assert (folder / "ct_dicom" / "patient_scan.dcm").read_bytes() == b"mine"
    assert sorted(p.name for p in (folder / "ct_dicom").iterdir()) == ["CT.0000.dcm", "CT.0001.dcm", "patient_scan.dcm"]


def test_file_manager_metadata_does_not_make_an_export_foreign(tmp_path: Path) -> None:
    """Opening an export in Finder or Explorer drops .DS_Store / Thumbs.db into it; --overwrite still replaces it
    (and removes them), while a real foreign file is still refused."""
    from segalign.synthetic import grid_affine, stack, write_nifti, write_series

    dicom = tmp_path / "dicom"
    write_series(dicom, stack((0, 0, 0), 3, (0, 0, 2.0), rows=8, columns=8))
    seg = write_nifti(tmp_path / "seg.nii.gz", np.ones((8, 8, 3), np.uint8), grid_affine((0, 0, 0), (1, 1, 2)))
    out = tmp_path / "out"
    assert run_cli("export", dicom, seg, "-o", out, "-q").code == 0
    (out / ".DS_Store").write_bytes(b"\0")
    (out / "labels" / "Thumbs.db").write_bytes(b"\0")
    (out / "labels" / "._0000_i1.png").write_bytes(b"\0")
    assert export_problem(out) is None
    assert run_cli("export", dicom, seg, "-o", out, "-q", "--overwrite").code == 0
    assert not (out / ".DS_Store").exists() and not (out / "labels" / "Thumbs.db").exists()
    (out / "labels" / "notes.txt").write_text("mine")
    assert export_problem(out) is not None
    assert run_cli("export", dicom, seg, "-o", out, "-q", "--overwrite").code == 1
    assert (out / "labels" / "notes.txt").read_text() == "mine"


def test_a_partial_folder_from_another_pid_namespace_is_never_taken_for_dead(tmp_path: Path) -> None:
    """Containers can share a host name but not pids: a marker from another pid namespace (or boot) is left."""
    dead = {**locks.owner(), "pid": 2 ** 22 + 12345}
    assert locks.owner_is_gone(dead)
    assert not locks.owner_is_gone({**dead, "pid_namespace": "another-boot pid:[4026531836]"})
    assert not locks.owner_is_gone({**dead, "host": "another-host"})
