"""Hostile input: a seeded campaign of broken, garbled and malicious inputs, and the findings it led to.

Every case ends in one of two ways, checked by :func:`check_contract`:

* **success**: exit status 0, an export folder with its manifest, and every file of the DICOM folder either exported
  or reported as skipped with its reason (:func:`check_accounted`);
* **refusal**: exit status 1, a first line ``segalign: error: ...`` of at most :data:`MAX_LINE` characters that
  names the offending file or attribute, no OUT_DIR and no hidden ``.partial-`` folder left behind.

In both: no traceback, no Python warning or nibabel log line escaping to the user (anything on stderr before the
error line starts with ``segalign:``), the inputs unchanged, no case longer than :data:`CASE_SECONDS` (a SIGALRM
timer fails a hang instead of stalling the suite) and no allocation of more than :data:`CASE_MEMORY` beyond what
the process had (the address space is limited while a case runs, so a header that claims terabytes fails loudly).

The cases are generated from :data:`SEED` with :class:`random.Random`, so a failure names a case that can be run
again: every hostile value of every geometry tag, at the top level of a single-frame file and inside the functional
groups of an enhanced file; truncated, bit-flipped and random files; symbolic links, FIFOs and unreadable folders;
NIfTI files with impossible headers, affines, gzip streams and XML label tables; label table files; outputs that
cannot be written. Everything runs in-process through ``segalign.cli.main``, except the few cases about what a real
process prints. The named tests below the campaign each pin one finding.
"""

from __future__ import annotations

import contextlib
import codecs
import csv
import errno
import gzip
import html.parser
import json
import logging
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from conftest import CliRun, leftovers, read_manifest, run_cli
from segalign.dicom import headers, read_header, scan_folder
from segalign.errors import SegAlignError, describe, short, short_path
from segalign.segmentation import MAX_LABEL, Label, read_label_file
from segalign.writers.images.preview import script_json
from segalign.writers.images.render import color_lookup
from segalign.readers import load_segmentation
from segalign.segmentation import Segmentation
from segalign.synthetic import SeriesIdentity, grid_affine, stack, write_enhanced, write_nifti, write_series

SEED = 20261202
ROWS, COLUMNS, SLICES = 12, 16, 4
ORIGIN_LPS = (100.0, 60.0, 20.0)
STEP = 2.0
AFFINE = grid_affine(ORIGIN_LPS, (1.0, 1.0, STEP))  #: voxel (i, j, k) = pixel (row j, column i) of frame k
#: The file of the single-frame series the campaign breaks (the second one), and the enhanced file.
TARGET = "IM00001.dcm"
ENHANCED = "multi.dcm"
MAX_LINE = 400  #: an error line is never longer (a one-line message for people, whatever the input held)
CASE_SECONDS = 20
CASE_MEMORY = 1 << 30
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def label_volume() -> np.ndarray:
    labels = np.zeros((COLUMNS, ROWS, SLICES), dtype=np.uint8)
    labels[2:6, 3:8, :] = 1
    labels[9:14, 1:4, 1:3] = 2
    return labels


def _pixels(spec) -> np.ndarray:
    return (np.arange(spec.rows * spec.columns).reshape(spec.rows, spec.columns) * 7 + 100).astype(np.uint16)


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A good single-frame series, the same frames as one enhanced file, and segmentations on their grid."""
    root = tmp_path_factory.mktemp("hostile-template")
    specs = stack(ORIGIN_LPS, SLICES, (0, 0, STEP), rows=ROWS, columns=COLUMNS)
    write_series(root / "single", specs, pixel_function=_pixels)
    write_enhanced(root / "enhanced" / ENHANCED, specs, pixel_function=_pixels)
    write_nifti(root / "seg.nii.gz", label_volume(), AFFINE)
    write_nifti(root / "seg.nii", label_volume(), AFFINE)
    return root


@dataclass
class Case:
    root: Path
    dicom: Path
    seg: Path
    out: Path

    @property
    def target(self) -> Path:
        """The file a DICOM case breaks: the second single-frame file, or the enhanced file."""
        single = self.dicom / TARGET
        return single if single.exists() else self.dicom / ENHANCED


def new_case(template: Path, root: Path, kind: str = "single", seg: str = "seg.nii.gz") -> Case:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(template / kind, root / "dicom")
    shutil.copy(template / seg, root / seg)
    return Case(root, root / "dicom", root / seg, root / "out")


# --- the contract ------------------------------------------------------------------------------------------------


class CaseTimeout(BaseException):
    """A case ran longer than CASE_SECONDS (a BaseException, so no ``except Exception`` can swallow it)."""


def _address_space() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@contextlib.contextmanager
def guarded(case_id: str, seconds: float = CASE_SECONDS, memory: int = CASE_MEMORY) -> Iterator[None]:
    """Fail a hang after ``seconds`` and any allocation of more than ``memory`` bytes beyond the current ones."""

    def expired(signum, frame):
        raise CaseTimeout(f"case {case_id} took more than {seconds} s")

    handler = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    limits = resource.getrlimit(resource.RLIMIT_AS)
    used = _address_space()
    if used is not None:
        soft = used + memory if limits[1] == resource.RLIM_INFINITY else min(used + memory, limits[1])
        resource.setrlimit(resource.RLIMIT_AS, (soft, limits[1]))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, handler)
        resource.setrlimit(resource.RLIMIT_AS, limits)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Outcome:
    result: CliRun
    warnings: list[str]  #: Python warnings that reached the warnings machinery unsilenced
    log: list[str]  #: nibabel log lines (nibabel prints them on stderr itself)


#: Warning categories Python shows a user by default (the others are ignored outside __main__).
SHOWN = (UserWarning, RuntimeWarning, SyntaxWarning, FutureWarning, UnicodeWarning, BytesWarning)


def hostile_run(case_id: str, *args: object) -> Outcome:
    """Run the CLI in-process under :func:`guarded`, recording escaped warnings and nibabel log lines."""
    logger = logging.getLogger("nibabel.global")
    records = _Records()
    logger.addHandler(records)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with guarded(case_id):
                result = run_cli(*args)
    finally:
        logger.removeHandler(records)
    shown = [f"{w.category.__name__}: {short(w.message, 200)}" for w in caught if issubclass(w.category, SHOWN)]
    return Outcome(result, shown, [short(r.getMessage(), 200) for r in records.records if r.levelno >= logging.WARNING])


def inputs_of(root: Path, out: Path) -> dict[str, bytes | None]:
    """Every input under ``root`` with its content: everything but the output folder and its lock file."""
    found = {}
    for directory, folders, names in os.walk(root):
        here = Path(directory)
        folders[:] = [name for name in folders if here / name != out and ".partial-" not in name]
        for name in names:
            path = here / name
            if name == f".{out.name}.lock" or not path.is_file():
                continue
            found[path.relative_to(root).as_posix()] = path.read_bytes()
    return found


def check_contract(
    case_id: str, outcome: Outcome, out: Path, names: tuple[str, ...], before: dict | None = None, root: Path | None = None,
    out_existed: bool = False,
) -> CliRun:
    """The contract of every case (see the module docstring); returns the run for further checks. ``out_existed``:
    OUT_DIR was there before (a file, an earlier export), so a refusal must leave it, not remove it."""
    result = outcome.result
    context = f"case {case_id}: exit status {result.code}\n--- stderr:\n{result.stderr[:3000]}"
    assert result.code in (0, 1), context
    assert "Traceback" not in result.stderr, context
    assert not outcome.warnings, f"{context}\nPython warnings reached the user: {outcome.warnings}"
    assert not outcome.log, f"{context}\nnibabel printed: {outcome.log}"
    lines = result.stderr.splitlines()
    first_error = next((i for i, line in enumerate(lines) if line.startswith("segalign: error: ")), None)
    stray, in_warning = [], False  # a warning's details follow it on indented lines
    for line in lines[:first_error]:
        in_warning = line.startswith("segalign: warning: ") or (in_warning and line.startswith("  "))
        if not line.startswith("segalign: ") and not in_warning:
            stray.append(line)
    assert not stray, f"{context}\nlines that are not SegAlign's: {stray}"
    if result.code == 1:
        assert first_error is not None, context
        message = lines[first_error]
        assert len(message) <= MAX_LINE, f"{context}\nthe error line has {len(message)} characters"
        assert any(name in message for name in names), f"{context}\nthe error names none of {names}"
        assert "memory" not in message.lower(), f"{context}\na case must never come down to memory"
        assert out_existed or not out.exists(), f"{context}\nOUT_DIR was left behind"
    else:
        assert (out / "manifest.csv").is_file(), context
    if out.parent.is_dir():
        assert leftovers(out.parent) == [], f"{context}\nleft behind: {leftovers(out.parent)}"
    if before is not None and root is not None:
        assert inputs_of(root, out) == before, f"{context}\nthe inputs changed"
    return result


def check_accounted(case_id: str, folder: Path, result: CliRun, out: Path) -> None:
    """After a successful export: every regular file under ``folder`` was exported or reported skipped."""
    scan = scan_folder(folder)
    skipped_paths = [*scan.not_dicom, *(path for path, _ in scan.unreadable), *(path for path, _ in scan.non_image)]
    skipped = {os.path.realpath(path) for path in skipped_paths} | {str(path) for path in skipped_paths}
    exported = {os.path.realpath(frame.source_file) for series in scan.series for frame in series.frames}
    seen: set[str] = set()
    for directory, folders, names in os.walk(folder, followlinks=True):  # each real folder once, as the scan does
        if os.path.realpath(directory) in seen:
            folders[:] = []
            continue
        seen.add(os.path.realpath(directory))
        folders[:] = [name for name in folders if not name.startswith(".")]
        for name in names:
            path = Path(directory) / name
            found = os.path.realpath(path) in exported or os.path.realpath(path) in skipped or str(path) in skipped
            assert found, f"case {case_id}: {path} was neither exported nor skipped"
    if skipped_paths and result.code == 0:
        assert "segalign: warning: skipped" in result.stderr, f"case {case_id}: skipped files were not reported"
    with (out / "manifest.csv").open(encoding="utf-8", errors="surrogateescape", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == sum(len(series.frames) for series in scan.series), f"case {case_id}: frames lost"


def campaign(case_id: str, case: Case, *extra: object, names: tuple[str, ...]) -> CliRun:
    """One DICOM case: export, the contract, and the accounting of every file when it succeeds."""
    before = inputs_of(case.root, case.out)
    outcome = hostile_run(case_id, "export", case.dicom, case.seg, "-o", case.out, *extra)
    result = check_contract(case_id, outcome, case.out, names, before, case.root)
    if result.code == 0:
        check_accounted(case_id, case.dicom, result, case.out)
    return result


# --- the campaign: hostile values of every geometry tag ----------------------------------------------------------


def _raw(dataset: pydicom.Dataset, keyword: str, vr: str, value: bytes | None) -> None:
    """Put ``value`` into ``dataset`` exactly as bytes (pydicom writes a raw element as it is), or remove it."""
    tag = Tag(keyword)
    if value is None:
        if tag in dataset:
            del dataset[tag]
        return
    dataset._dict[tag] = RawDataElement(tag, vr, len(value), value, 0, False, True)


def _one_component(rng: random.Random, text: str) -> Callable[[list[str]], list[str]]:
    def change(values: list[str]) -> list[str]:
        changed = list(values)
        changed[rng.randrange(len(changed))] = text
        return changed

    return change


def _text_values(rng: random.Random) -> dict[str, Callable[[list[str]], bytes | None]]:
    """Hostile values of a DS or IS attribute, as functions of its good values."""
    def joined(function):
        return lambda values: "\\".join(function(values)).encode("latin-1")

    garbled = bytes(rng.randrange(128, 256) for _ in range(8))
    return {
        "missing": lambda values: None,
        "empty": lambda values: b"",
        "garbled": lambda values: garbled,
        "nan": joined(_one_component(rng, "NaN")),
        "infinite": joined(_one_component(rng, "inf")),
        "minus-infinite": joined(_one_component(rng, "-inf")),
        "1e308": joined(_one_component(rng, "1e308")),
        "1e30": joined(_one_component(rng, "1e30")),
        "zero": joined(lambda values: ["0"] * len(values)),
        "negative": joined(_one_component(rng, "-5")),
        "fraction": joined(_one_component(rng, "2.5")),
        "string": joined(_one_component(rng, "abc")),
        "10k-digits": joined(_one_component(rng, "9" * 10000)),
        "too-few": joined(lambda values: values[:-1] or ["1", "2"]),
        "too-many": joined(lambda values: values + ["1", "2"]),
    }


US_VALUES: dict[str, bytes | None] = {
    "missing": None,
    "empty": b"",
    "zero": b"\x00\x00",
    "65535": b"\xff\xff",  # Rows = 65535 in a 12 x 16 file: the pixel data says otherwise
    "one": b"\x01\x00",
    "two-values": b"\x0c\x00\x10\x00",
    "odd-length": b"\x0c\x00\x01",
    "text": b"ab",
}

TEXT_TAGS = {  # keyword: (VR, where in an enhanced file: a functional group macro, or None for the top level)
    "ImagePositionPatient": ("DS", "PlanePositionSequence"),
    "ImageOrientationPatient": ("DS", "PlaneOrientationSequence"),
    "PixelSpacing": ("DS", "PixelMeasuresSequence"),
    "NumberOfFrames": ("IS", None),
    "InstanceNumber": ("IS", None),
}


def _geometry_cases() -> list[tuple[str, str, str]]:
    cases = []
    for keyword in TEXT_TAGS:
        for name in _text_values(random.Random(SEED)):
            for kind in ("single", "enhanced"):
                cases.append((keyword, name, kind))
    for keyword in ("Rows", "Columns"):
        for name in US_VALUES:
            for kind in ("single", "enhanced"):
                cases.append((keyword, name, kind))
    return cases


def _good_values(dataset: pydicom.Dataset, keyword: str, macro: str | None, item: pydicom.Dataset | None) -> list[str]:
    source = dataset
    if item is not None and macro is not None:
        groups = [item, dataset.SharedFunctionalGroupsSequence[0]]
        source = next(group[macro][0] for group in groups if macro in group)
    value = source.get(keyword)
    if value is None:
        return ["1"]
    values = value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
    return [str(v) for v in values]


@pytest.mark.parametrize("keyword, value_name, kind", _geometry_cases(), ids=str)
def test_campaign_hostile_tag_values(template, tmp_path, keyword, value_name, kind):
    """Every hostile value of every geometry tag, in a single-frame file and in an enhanced file's functional
    groups (a per-frame item for position, orientation and spacing; the top level for the others)."""
    case_id = f"{keyword}={value_name} in {kind}"
    rng = random.Random(f"{SEED}:{case_id}")
    case = new_case(template, tmp_path, kind)
    dataset = pydicom.dcmread(case.target)
    if keyword in ("Rows", "Columns"):
        _raw(dataset, keyword, "US", US_VALUES[value_name])
    else:
        vr, macro = TEXT_TAGS[keyword]
        target = dataset
        item = None
        if kind == "enhanced" and macro is not None:
            item = dataset.PerFrameFunctionalGroupsSequence[rng.randrange(SLICES)]
            good = _good_values(dataset, keyword, macro, item)
            if macro not in item:  # orientation and spacing are shared: give this frame its own macro
                item[macro] = pydicom.DataElement(Tag(macro), "SQ", pydicom.Sequence([pydicom.Dataset()]))
            target = item[macro].value[0]
        else:
            good = _good_values(dataset, keyword, None, None)
        _raw(target, keyword, vr, _text_values(rng)[value_name](good))
    dataset.save_as(case.target)
    campaign(case_id, case, names=(case.target.name, keyword))


SEQUENCE_CASES = {  # name: how to break the enhanced file, and what the error must name
    "PerFrameFunctionalGroupsSequence-is-a-number": (
        lambda ds, rng: _raw(ds, "PerFrameFunctionalGroupsSequence", "US", b"\x01\x00"),
        "PerFrameFunctionalGroupsSequence",
    ),
    "PerFrameFunctionalGroupsSequence-is-text": (
        lambda ds, rng: _raw(ds, "PerFrameFunctionalGroupsSequence", "LO", b"frames"),
        "PerFrameFunctionalGroupsSequence",
    ),
    "PerFrameFunctionalGroupsSequence-is-empty": (
        lambda ds, rng: _raw(ds, "PerFrameFunctionalGroupsSequence", "SQ", b""),
        "PerFrameFunctionalGroupsSequence",
    ),
    "PerFrameFunctionalGroupsSequence-lacks-an-item": (
        lambda ds, rng: ds.PerFrameFunctionalGroupsSequence.pop(rng.randrange(SLICES)),
        "PerFrameFunctionalGroupsSequence",
    ),
    "SharedFunctionalGroupsSequence-is-a-number": (
        lambda ds, rng: _raw(ds, "SharedFunctionalGroupsSequence", "US", b"\x01\x00"),
        "SharedFunctionalGroupsSequence",
    ),
    "PlanePositionSequence-is-a-number": (
        lambda ds, rng: _raw(ds.PerFrameFunctionalGroupsSequence[rng.randrange(SLICES)], "PlanePositionSequence",
                             "US", b"\x01\x00"),
        "PlanePositionSequence",
    ),
    "PlanePositionSequence-is-text": (
        lambda ds, rng: _raw(ds.PerFrameFunctionalGroupsSequence[rng.randrange(SLICES)], "PlanePositionSequence",
                             "LO", b"here"),
        "PlanePositionSequence",
    ),
    "PlanePositionSequence-is-empty": (
        lambda ds, rng: _raw(ds.PerFrameFunctionalGroupsSequence[rng.randrange(SLICES)], "PlanePositionSequence",
                             "SQ", b""),
        "ImagePositionPatient",
    ),
    "PlaneOrientationSequence-is-a-number": (
        lambda ds, rng: _raw(ds.SharedFunctionalGroupsSequence[0], "PlaneOrientationSequence", "US", b"\x01\x00"),
        "PlaneOrientationSequence",
    ),
    "PixelMeasuresSequence-is-text": (
        lambda ds, rng: _raw(ds.SharedFunctionalGroupsSequence[0], "PixelMeasuresSequence", "LO", b"1mm"),
        "PixelMeasuresSequence",
    ),
    "PixelMeasuresSequence-holds-garbage": (
        lambda ds, rng: _raw(ds.SharedFunctionalGroupsSequence[0], "PixelMeasuresSequence", "SQ",
                             bytes(rng.randrange(256) for _ in range(40))),
        "PixelMeasuresSequence",
    ),
}


@pytest.mark.parametrize("name", sorted(SEQUENCE_CASES))
def test_campaign_non_sequences_where_sequences_are_expected(template, tmp_path, name):
    """A number or text where the functional groups need a sequence: once ``TypeError: argument of type 'int' is
    not iterable``, now a refusal naming the attribute (or a skipped, unreadable file)."""
    case = new_case(template, tmp_path, "enhanced")
    dataset = pydicom.dcmread(case.target)
    change, keyword = SEQUENCE_CASES[name]
    change(dataset, random.Random(f"{SEED}:{name}"))
    dataset.save_as(case.target)
    result = campaign(name, case, names=(keyword, case.target.name))
    assert result.code == 1, f"{name}: a broken enhanced file (the only one) cannot be exported"


PIXEL_TAGS = {  # keyword: (VR, the functional group macro that holds it in an enhanced file, or None)
    "RescaleSlope": ("DS", "PixelValueTransformationSequence"),
    "RescaleIntercept": ("DS", "PixelValueTransformationSequence"),
    "WindowCenter": ("DS", "FrameVOILUTSequence"),
    "WindowWidth": ("DS", "FrameVOILUTSequence"),
    "PhotometricInterpretation": ("CS", None),
    "SamplesPerPixel": ("US", None),
    "BitsAllocated": ("US", None),
    "BitsStored": ("US", None),
    "HighBit": ("US", None),
    "PixelRepresentation": ("US", None),
}
PIXEL_VALUES = {
    "DS": {"missing": None, "empty": b"", "garbled": b"\xfe\xff\x80\x81", "nan": b"NaN", "infinite": b"inf",
           "1e308": b"1e308", "zero": b"0", "negative": b"-5", "string": b"abc", "two-values": b"1\\2",
           "10k-digits": b"9" * 10000},
    "CS": {"missing": None, "empty": b"", "rgb": b"RGB", "palette": b"PALETTE COLOR", "monochrome1": b"MONOCHROME1",
           "garbled": b"\xfe\xff\x80\x81", "10k": b"M" * 10000},
    "US": {"missing": None, "empty": b"", "zero": b"\x00\x00", "65535": b"\xff\xff", "one": b"\x01\x00",
           "two-values": b"\x08\x00\x10\x00", "odd-length": b"\x10\x00\x01"},
}


def _pixel_cases() -> list[tuple[str, str, str]]:
    return [
        (keyword, name, kind)
        for keyword, (vr, _) in PIXEL_TAGS.items()
        for name in PIXEL_VALUES[vr]
        for kind in ("single", "enhanced")
    ]


@pytest.mark.parametrize("keyword, value_name, kind", _pixel_cases(), ids=str)
def test_campaign_hostile_pixel_tags_with_overlays_and_images(template, tmp_path, keyword, value_name, kind):
    """Every hostile value of the attributes that describe and rescale the pixels, with --overlays and --images
    (the pixels are decoded, one frame at a time, on two threads)."""
    case = new_case(template, tmp_path, kind)
    vr, macro = PIXEL_TAGS[keyword]
    value = PIXEL_VALUES[vr][value_name]
    dataset = pydicom.dcmread(case.target)
    target = dataset
    if kind == "enhanced" and macro is not None:
        item = dataset.PerFrameFunctionalGroupsSequence[random.Random(f"{SEED}:{keyword}").randrange(SLICES)]
        item[macro] = pydicom.DataElement(Tag(macro), "SQ", pydicom.Sequence([pydicom.Dataset()]))
        target = item[macro].value[0]
    _raw(target, keyword, vr, value)
    dataset.save_as(case.target)
    campaign(f"{keyword}={value_name} in {kind}", case, "--overlays", "--images", names=(case.target.name, keyword))


# --- the campaign: truncated, bit-flipped and random files --------------------------------------------------------


def _truncation_cases() -> list[tuple[str, int]]:
    rng = random.Random(SEED)
    return [(kind, rng.randrange(1, 4000)) for kind in ("single", "enhanced") for _ in range(14)]


@pytest.mark.parametrize("kind, offset", _truncation_cases(), ids=lambda v: str(v))
def test_campaign_truncated_files(template, tmp_path, kind, offset):
    """A file cut at a seeded offset: in its preamble, its header, its functional groups, its pixel data."""
    case = new_case(template, tmp_path, kind)
    data = case.target.read_bytes()
    case.target.write_bytes(data[: offset % len(data)])
    campaign(f"{kind} cut at {offset % len(data)}", case, names=(case.target.name,))


def _flip_cases() -> list[tuple[str, int]]:
    return [(kind, seed) for kind in ("single", "enhanced") for seed in range(16)]


@pytest.mark.parametrize("kind, seed", _flip_cases(), ids=lambda v: str(v))
def test_campaign_bit_flipped_headers(template, tmp_path, kind, seed):
    """A few seeded random bytes of the header overwritten (lengths, VRs, tags and values alike)."""
    rng = random.Random(f"{SEED}:flip:{kind}:{seed}")
    case = new_case(template, tmp_path, kind)
    data = bytearray(case.target.read_bytes())
    header_end = len(data) - ROWS * COLUMNS * 2 * (SLICES if kind == "enhanced" else 1)
    for _ in range(rng.randrange(1, 6)):
        data[rng.randrange(128, header_end)] = rng.randrange(256)
    case.target.write_bytes(bytes(data))
    campaign(f"{kind} flipped #{seed}", case, names=(case.target.name, "choose one with --series"))


def _random_file(rng: random.Random, style: str) -> bytes:
    noise = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 3000)))
    if style == "noise":
        return noise
    if style == "preamble":  # looks like DICOM for its first 132 bytes
        return bytes(128) + b"DICM" + noise
    if style == "elements":  # plausible group 0002 and 0008 elements with random lengths
        parts = [bytes(128), b"DICM"]
        for _ in range(rng.randrange(1, 12)):
            group = rng.choice([0x0002, 0x0008, 0x0020, 0x0028, 0x5200, 0x7FE0])
            parts.append(group.to_bytes(2, "little") + rng.randrange(0x10000).to_bytes(2, "little"))
            parts.append(rng.choice([b"UL", b"OB", b"SQ", b"DS", b"US", b"UN", b"ZZ"]))
            parts.append(rng.randrange(0x10000).to_bytes(2, "little") + noise[: rng.randrange(0, 40)])
        return b"".join(parts)
    raise AssertionError(style)


@pytest.mark.parametrize("style, seed", [(s, n) for s in ("noise", "preamble", "elements") for n in range(8)],
                         ids=lambda v: str(v))
def test_campaign_random_files_beside_a_good_series(template, tmp_path, style, seed):
    """A random file among the good ones: skipped and reported (or refused naming it), the series exported."""
    case = new_case(template, tmp_path)
    (case.dicom / "zz_random.dcm").write_bytes(_random_file(random.Random(f"{SEED}:{style}:{seed}"), style))
    campaign(f"random {style} #{seed}", case, names=("zz_random.dcm",))


# --- the campaign: the file system --------------------------------------------------------------------------------


def _fifo(case: Case) -> None:
    os.mkfifo(case.dicom / "fifo.dcm")


def _broken_link(case: Case) -> None:
    (case.dicom / "broken.dcm").symlink_to(case.root / "nowhere.dcm")


def _file_link_loop(case: Case) -> None:
    (case.dicom / "loop_a.dcm").symlink_to(case.dicom / "loop_b.dcm")
    (case.dicom / "loop_b.dcm").symlink_to(case.dicom / "loop_a.dcm")


def _folder_link_loop(case: Case) -> None:
    (case.dicom / "sub").mkdir()
    (case.dicom / "sub" / "back_up").symlink_to(case.dicom, target_is_directory=True)


def _folder_linked_twice(case: Case) -> None:
    elsewhere = case.root / "elsewhere"
    elsewhere.mkdir()
    shutil.move(case.dicom / "IM00003.dcm", elsewhere / "IM00003.dcm")
    (case.dicom / "link_1").symlink_to(elsewhere, target_is_directory=True)
    (case.dicom / "link_2").symlink_to(elsewhere, target_is_directory=True)


def _empty_file(case: Case) -> None:
    (case.dicom / "empty.dcm").write_bytes(b"")


def _hidden_folder(case: Case) -> None:
    (case.dicom / ".hidden").mkdir()
    shutil.copy(case.dicom / TARGET, case.dicom / ".hidden" / "copy.dcm")


FILE_SYSTEM_CASES = {
    "fifo": _fifo,  # reading it would block for ever
    "broken-link": _broken_link,
    "file-link-loop": _file_link_loop,
    "folder-link-loop": _folder_link_loop,
    "folder-linked-twice": _folder_linked_twice,
    "empty-file": _empty_file,
    "hidden-folder": _hidden_folder,
}


@pytest.mark.parametrize("name", sorted(FILE_SYSTEM_CASES))
def test_campaign_file_system(template, tmp_path, name):
    case = new_case(template, tmp_path)
    FILE_SYSTEM_CASES[name](case)
    result = campaign(name, case, names=(str(case.dicom),))
    assert result.code == 0, name


# --- the campaign: NIfTI files ------------------------------------------------------------------------------------

HEADER = nib.nifti1.header_dtype


def _patched(raw: bytes, **fields) -> bytes:
    block = bytearray(raw)
    header = np.frombuffer(bytes(block[:348]), dtype=HEADER, count=1).copy()
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, value in fields.items():
            header[name] = value
    block[:348] = header.tobytes()
    return bytes(block)


NIFTI_HEADER_CASES = {
    "dims-2000-cubed": dict(dim=[3, 2000, 2000, 2000, 1, 1, 1, 1]),
    "dims-32767-cubed": dict(dim=[3, 32767, 32767, 32767, 1, 1, 1, 1]),
    "dim-zero": dict(dim=[3, 0, 12, 4, 1, 1, 1, 1]),
    "dim-negative": dict(dim=[3, -5, 12, 4, 1, 1, 1, 1]),
    "dim0-is-9": dict(dim=[9, 16, 12, 4, 1, 1, 1, 1]),
    "dim0-is-0": dict(dim=[0, 16, 12, 4, 1, 1, 1, 1]),
    "true-4d": dict(dim=[4, 16, 12, 2, 2, 1, 1, 1]),
    "5d-with-trailing-ones": dict(dim=[5, 16, 12, 4, 1, 1, 1, 1]),
    "true-5d": dict(dim=[5, 16, 12, 1, 1, 4, 1, 1]),
    "sform-nan": dict(srow_x=[np.nan, 0, 0, 0]),
    "sform-infinite": dict(srow_y=[0, np.inf, 0, 0]),
    "sform-1e30": dict(srow_z=[0, 0, 1e30, 0]),
    "sform-singular": dict(srow_x=[0, 0, 0, 0]),
    "sform-nan-qform-good": dict(srow_x=[np.nan, 0, 0, 0], qform_code=1),
    "sform-good-qform-nan": dict(qform_code=1, quatern_b=np.nan),
    "qform-only-nan": dict(sform_code=0, qform_code=1, quatern_c=np.nan),
    "qform-only-infinite-offset": dict(sform_code=0, qform_code=1, qoffset_x=np.inf),
    "qform-only-pixdim-zero": dict(sform_code=0, qform_code=1, pixdim=[1, 0, 0, 0, 1, 1, 1, 1]),
    "qform-only-pixdim-negative": dict(sform_code=0, qform_code=1, pixdim=[1, -1, 1, 1, 1, 1, 1, 1]),
    "qform-only-pixdim-infinite": dict(sform_code=0, qform_code=1, pixdim=[1, np.inf, 1, 1, 1, 1, 1, 1]),
    "no-sform-no-qform": dict(sform_code=0, qform_code=0),
    "vox-offset-huge": dict(vox_offset=1e12),
    "vox-offset-nan": dict(vox_offset=np.nan),
    "vox-offset-negative": dict(vox_offset=-400),
    "datatype-unknown": dict(datatype=999),
    "datatype-complex": dict(datatype=32, bitpix=64),
    "datatype-rgb": dict(datatype=128, bitpix=24),
    "bitpix-wrong": dict(bitpix=64),
    "scl-slope-nan": dict(scl_slope=np.nan),
    "scl-slope-infinite": dict(scl_slope=np.inf),
    "scl-slope-half": dict(scl_slope=0.5),
    "sizeof-hdr-wrong": dict(sizeof_hdr=999),
    "magic-wrong": dict(magic=b"xx1\0"),
}


def _nifti_cases() -> list[tuple[str, str]]:
    return [(name, suffix) for name in NIFTI_HEADER_CASES for suffix in (".nii", ".nii.gz")]


@pytest.mark.parametrize("name, suffix", _nifti_cases(), ids=str)
def test_campaign_nifti_headers(template, tmp_path, name, suffix):
    """Impossible, absurd and inconsistent NIfTI headers, uncompressed and gzipped: refused naming the file
    before anything is allocated for them, or read correctly."""
    case = new_case(template, tmp_path)
    data = _patched((template / "seg.nii").read_bytes(), **NIFTI_HEADER_CASES[name])
    path = tmp_path / f"hostile{suffix}"
    path.write_bytes(gzip.compress(data) if suffix == ".nii.gz" else data)
    before = inputs_of(case.root, case.out)
    outcome = hostile_run(name, "export", case.dicom, path, "-o", case.out)
    check_contract(f"{name}{suffix}", outcome, case.out, (path.name,), before, case.root)


def _nifti_stream_cases() -> list[tuple[str, str, int]]:
    rng = random.Random(SEED)
    cases = [("truncated", suffix, rng.randrange(0, 2000)) for suffix in (".nii", ".nii.gz") for _ in range(10)]
    cases += [("flipped", suffix, rng.randrange(1 << 30)) for suffix in (".nii", ".nii.gz") for _ in range(10)]
    cases += [("random", suffix, rng.randrange(1 << 30)) for suffix in (".nii", ".nii.gz") for _ in range(4)]
    return cases


@pytest.mark.parametrize("how, suffix, number", _nifti_stream_cases(), ids=lambda v: str(v))
def test_campaign_nifti_streams(template, tmp_path, how, suffix, number):
    """Truncated, bit-flipped and random .nii and .nii.gz files (a flipped .nii.gz is a bad gzip stream)."""
    rng = random.Random(f"{SEED}:{how}:{suffix}:{number}")
    case = new_case(template, tmp_path)
    data = bytearray((template / f"seg{suffix}").read_bytes())
    if how == "truncated":
        data = data[: number % len(data)]
    elif how == "flipped":
        for _ in range(rng.randrange(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    else:
        data = bytearray(rng.randrange(256) for _ in range(rng.randrange(0, 4000)))
    path = tmp_path / f"hostile{suffix}"
    path.write_bytes(bytes(data))
    before = inputs_of(case.root, case.out)
    outcome = hostile_run(f"{how} {suffix} #{number}", "export", case.dicom, path, "-o", case.out)
    check_contract(f"{how}{suffix} #{number}", outcome, case.out, (path.name,), before, case.root)


def _table(entries: str) -> str:
    return f'<?xml version="1.0"?><CaretExtension><LabelTable>{entries}</LabelTable></CaretExtension>'


def _label(key: object, name: str = "liver", red: object = 1) -> str:
    return f'<Label Key="{key}" Red="{red}" Green="0.5" Blue="0"><![CDATA[{name}]]></Label>'


_LAUGHS = "".join(
    f'<!ENTITY lol{n} "{("&lol" + str(n - 1) + ";") * 10}">' for n in range(1, 10)
).replace("&lol0;", "lol")
XML_CASES = {
    "billion-laughs": f"<!DOCTYPE lolz [{_LAUGHS}]>" + _table(_label(1, "&lol9;")),
    "external-entity": '<!DOCTYPE x [<!ENTITY ext SYSTEM "file:///etc/passwd">]>' + _table(_label(1, "&ext;")),
    "parameter-entity": '<!DOCTYPE x [<!ENTITY % p SYSTEM "http://example.invalid/x.dtd"> %p;]>' + _table(_label(1)),
    "doctype-only": "<!DOCTYPE CaretExtension>" + _table(_label(1)),
    "undefined-entity": _table(_label(1, "&nope;")).replace("<![CDATA[&nope;]]>", "&nope;"),
    "malformed": '<CaretExtension><LabelTable><Label Key="1">x</Lab',
    "key-1e8": _table(_label(1) + _label(10**8, "huge")),
    "key-1e12": _table(_label(1) + _label(10**12, "huger")),
    "key-negative": _table(_label(1) + _label(-4, "negative")),
    "key-10k-digits": _table(_label("7" * 10000)),
    "key-float": _table(_label("1.5")),
    "key-missing": _table('<Label Red="1">x</Label>'),
    "colour-infinite": _table(_label(1, red="inf")),
    "colour-nan": _table(_label(1, red="nan")),
    "colour-1e308": _table(_label(1, red="1e308")),
    "colour-negative": _table(_label(1, red="-3")),
    "name-script": _table(_label(1, "</script><script>alert(1)</script>") + _label(2, "<!--<script>")),
    "name-newlines": _table(_label(1, "liver\nsegalign: error: fake\r\n\u2028x")),
    "name-control-characters": _table(_label(1, "liver\x85\x9b31m")),
    "name-100k": _table(_label(1, "n" * 100_000)),
    "many-labels": _table("".join(_label(n, f"label {n}") for n in range(1, 20001))),
    "huge-table": _table(_label(1, "x" * (17 << 20))),
    "not-a-label-table": "<CaretExtension><Other/></CaretExtension>",
}


@pytest.mark.parametrize("name", sorted(XML_CASES))
@pytest.mark.parametrize("overlays", [False, True], ids=["labels", "overlays"])
def test_campaign_embedded_label_tables(template, tmp_path, name, overlays):
    """Hostile XML label tables in the NIfTI header extension: entities are never expanded or fetched, label
    values beyond 65535 never size a colour lookup, names never break a line."""
    case = new_case(template, tmp_path)
    path = write_nifti(tmp_path / "labelled.nii.gz", label_volume(), AFFINE, label_table_xml=XML_CASES[name])
    before = inputs_of(case.root, case.out)
    extra = ["--overlays"] if overlays else []
    outcome = hostile_run(name, "export", case.dicom, path, "-o", case.out, *extra)
    result = check_contract(name, outcome, case.out, (path.name,), before, case.root)
    if result.code == 0:
        for line in result.stderr.splitlines():  # a warning's details follow it on indented lines
            assert line.startswith(("segalign: ", "  ")), f"{name}: {line!r}"
        json.loads((case.out / "labels.json").read_text(encoding="utf-8"))


LABEL_FILE_CASES = {
    "unterminated-quote": '1,liver\n2,"spleen\n3,kidney\n',
    "unterminated-quote-at-end": '1,liver\n2,"spleen\n',
    "quote-then-text": '1,"liver"x\n',
    "field-over-csv-limit": "1," + "n" * 200_000 + "\n",
    "name-too-long": "1," + "n" * 5000 + "\n",
    "value-10k-digits": "9" * 10000 + ",liver\n",
    "value-1e12": "1000000000000,liver\n",
    "value-float-exponent": "1e3,liver\n",
    "nul-bytes": "1,li\x00ver\n",
    "control-characters": "1,liver\x1b[31m\n",
    "colour-infinite": "1,liver,inf,0,0\n",
    "colour-huge": "1,liver,1e400,0,0\n",
    "binary-garbage": None,  # seeded random bytes
    "utf16": None,
    "empty": "",
    "only-comments": "# nothing\n# here\n",
    "many-rows": "".join(f"{n},label{n}\n" for n in [*range(0, 65536, 7), 65535]),
    "ctbl-garbage": "1 liver 300 x y 255\n",
}


@pytest.mark.parametrize("name", sorted(LABEL_FILE_CASES))
def test_campaign_label_table_files(template, tmp_path, name):
    case = new_case(template, tmp_path)
    table = tmp_path / ("labels.ctbl" if name.startswith("ctbl") else "labels.csv")
    text = LABEL_FILE_CASES[name]
    if name == "binary-garbage":
        rng = random.Random(f"{SEED}:{name}")
        table.write_bytes(bytes(rng.randrange(256) for _ in range(3000)))
    elif name == "utf16":
        table.write_bytes("1,liver\n2,spleen\n".encode("utf-16"))
    else:
        table.write_text(text, encoding="utf-8", newline="")
    before = inputs_of(case.root, case.out)
    outcome = hostile_run(name, "export", case.dicom, case.seg, "-o", case.out, "--labels", table)
    check_contract(name, outcome, case.out, (table.name,), before, case.root)


def _mask(folder: Path, name: str, box=np.s_[2:6, 3:8, :]) -> Path:
    mask = np.zeros((COLUMNS, ROWS, SLICES), dtype=np.uint8)
    mask[box] = 1
    return write_nifti(folder / name, mask, AFFINE)


MASK_CASES: dict[str, Callable[[Path, Path], None]] = {
    "broken-link": lambda folder, template: (folder / "spleen.nii.gz").symlink_to(folder / "gone.nii.gz"),
    "folder-named-like-a-mask": lambda folder, template: (folder / "spleen.nii.gz").mkdir(),
    "truncated-mask": lambda folder, template: (folder / "spleen.nii.gz").write_bytes(
        (folder / "liver.nii.gz").read_bytes()[:60]),
    "mask-claiming-2000-cubed": lambda folder, template: (folder / "spleen.nii").write_bytes(
        _patched((template / "seg.nii").read_bytes(), dim=[3, 2000, 2000, 2000, 1, 1, 1, 1])),
    "mask-with-nan-affine": lambda folder, template: (folder / "spleen.nii").write_bytes(
        _patched((template / "seg.nii").read_bytes(), srow_x=[np.nan, 0, 0, 0])),
    "hostile-mask-name": lambda folder, template: _mask(folder, "</script><!--.nii.gz", np.s_[9:14, 1:4, 1:3]),
    "fifo-named-like-a-mask": lambda folder, template: os.mkfifo(folder / "spleen.nii.gz"),
}


@pytest.mark.parametrize("name", sorted(MASK_CASES))
def test_campaign_mask_folders(template, tmp_path, name):
    """A folder of masks with one hostile entry: refused naming it (never left out quietly), or exported."""
    case = new_case(template, tmp_path)
    masks = tmp_path / "masks"
    masks.mkdir()
    _mask(masks, "liver.nii.gz")
    MASK_CASES[name](masks, template)
    before = inputs_of(case.root, case.out)
    outcome = hostile_run(name, "export", case.dicom, masks, "-o", case.out, "--overlays")
    result = check_contract(name, outcome, case.out, ("spleen.nii",), before, case.root)
    assert result.code == (0 if name == "hostile-mask-name" else 1), name


def test_label_table_file_too_large_is_refused_unread(template, tmp_path):
    table = tmp_path / "labels.csv"
    with table.open("wb") as stream:  # sparse: 65 MB that take no room
        stream.write(b"1,liver\n")
        stream.truncate(65 << 20)
    with guarded("huge table", seconds=5, memory=32 << 20):
        with pytest.raises(SegAlignError, match=r"labels.csv is 68157440 bytes, more than"):
            read_label_file(table)


# --- the campaign: outputs that cannot be written ----------------------------------------------------------------


def _full_disk_on(monkeypatch, module, function_name: str, after: int = 0) -> None:
    """Make ``module.function_name`` (a documented seam: the code calls it module-qualified) raise ENOSPC from its
    ``after``-th call on."""
    original = getattr(module, function_name)
    calls = {"n": 0}

    def full(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > after:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(args[0]) if args else None)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, function_name, full)


OUTPUT_CASES = ["is-a-file", "parent-is-a-file", "disk-full-labels", "disk-full-late-label", "disk-full-json",
                "disk-full-manifest", "disk-full-overlay", "read-only-parent", "read-only-system-folder"]


@pytest.mark.parametrize("name", OUTPUT_CASES)
def test_campaign_outputs(template, tmp_path, monkeypatch, name):
    """Outputs that are files, or that cannot be written (a full disk and a read-only folder are simulated: the
    tests run as root, for whom permissions do not deny). Nothing is left behind."""
    import segalign.files as files_module
    from segalign.writers.images import manifest as manifest_module
    from segalign.writers.images import png as png_module
    from segalign.writers.images import preview as preview_module

    case = new_case(template, tmp_path)
    out = case.out
    extra: list[str] = []
    if name == "is-a-file":
        out.write_text("a file\n")
    elif name == "parent-is-a-file":
        (tmp_path / "blocker").write_text("a file\n")
        out = tmp_path / "blocker" / "out"
    elif name == "disk-full-labels":
        _full_disk_on(monkeypatch, png_module, "write_gray")
    elif name == "disk-full-late-label":
        _full_disk_on(monkeypatch, png_module, "write_gray", after=SLICES - 1)
    elif name == "disk-full-json":  # the second JSON file fails (the temporary folder's marker is the first)
        _full_disk_on(monkeypatch, files_module, "write_json", after=1)
    elif name == "disk-full-manifest":
        _full_disk_on(monkeypatch, manifest_module, "write_manifest")
    elif name == "disk-full-overlay":
        _full_disk_on(monkeypatch, preview_module, "write_preview")
        extra = ["--overlays"]
    elif name == "read-only-parent":
        out = tmp_path / "locked" / "out"
        (tmp_path / "locked").mkdir()
        real_mkdir = Path.mkdir

        def denied(self, *args, **kwargs):
            if self.parent == tmp_path / "locked" or self == out:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
            return real_mkdir(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", denied)
    elif name == "read-only-system-folder":  # a folder where even root cannot create anything
        if not os.path.isdir("/sys") or os.access("/sys", os.W_OK) and _can_create("/sys"):
            pytest.skip("no read-only /sys here")
        out = Path("/sys") / f"segalign-hostile-{os.getpid()}"
    before = inputs_of(case.root, out)
    existed = out.exists()
    outcome = hostile_run(name, "export", case.dicom, case.seg, "-o", out, *extra)
    names = (out.name, "space", "Permission", "not permitted", "not a folder", str(out.parent))
    result = check_contract(name, outcome, out, names, before, case.root, out_existed=existed)
    assert result.code == 1, name
    if name == "is-a-file":
        assert out.read_text() == "a file\n"


def _can_create(folder: str) -> bool:
    probe = Path(folder) / f".segalign-probe-{os.getpid()}"
    try:
        probe.mkdir()
    except OSError:
        return False
    probe.rmdir()
    return True


# --- named tests: one per finding ---------------------------------------------------------------------------------


def _edit(path: Path, change: Callable[[pydicom.Dataset], None]) -> None:
    dataset = pydicom.dcmread(path)
    change(dataset)
    dataset.save_as(path)


@pytest.mark.parametrize("keyword, value", [
    ("ImagePositionPatient", b"100\\inf\\20"),
    ("ImagePositionPatient", b"100\\1e308\\20"),
    ("ImageOrientationPatient", b"1\\0\\0\\0\\1e308\\0"),
    ("PixelSpacing", b"1e308\\1"),
    ("PixelSpacing", b"1\\inf"),
    ("InstanceNumber", b"inf"),
    ("NumberOfFrames", b"1e308"),
])
def test_infinite_and_huge_geometry_values_are_refused_by_name(template, tmp_path, keyword, value):
    """Once an OverflowError traceback (``cannot convert float infinity to integer``)."""
    case = new_case(template, tmp_path)
    _edit(case.target, lambda ds: _raw(ds, keyword, "IS" if keyword.endswith("Number") or keyword.startswith("Number")
                                       else "DS", value))
    result = campaign(keyword, case, names=(keyword,))
    if keyword != "InstanceNumber":
        assert result.code == 1 and keyword in result.stderr and TARGET in result.stderr
    else:  # an unusable InstanceNumber orders the file as one without; said in a warning
        assert result.code == 0 and "InstanceNumber that is not an integer" in result.stderr


def test_non_sequence_functional_group_names_the_attribute(template, tmp_path):
    case = new_case(template, tmp_path, "enhanced")
    _edit(case.target, lambda ds: _raw(ds.SharedFunctionalGroupsSequence[0], "PixelMeasuresSequence", "US", b"\x01\x00"))
    result = campaign("PixelMeasuresSequence=1", case, names=("PixelMeasuresSequence",))
    assert result.code == 1
    assert "PixelMeasuresSequence is not a sequence of items" in result.stderr
    assert "not iterable" not in result.stderr


def test_file_names_that_are_not_utf8(template, tmp_path):
    """A file name with bytes that are not UTF-8 (a surrogate escape in Python): exported, messages about it can
    be built (str of the error) and the manifest names the file as it is on disk."""
    case = new_case(template, tmp_path)
    hostile = os.fsdecode(os.fsencode(str(case.dicom)) + b"/\xff\xfe odd.dcm")
    os.rename(case.dicom / "IM00002.dcm", hostile)
    result = campaign("surrogates", case, "--overlays", names=())
    assert result.code == 0
    with (case.out / "manifest.csv").open(encoding="utf-8", newline="") as stream:  # valid UTF-8 (pandas, csv)
        names = [row["source_file"] for row in csv.DictReader(stream)]
    escaped = [name for name in names if "\\xff\\xfe odd.dcm" in name]
    assert len(escaped) == 1, names
    assert codecs.escape_decode(escaped[0].encode())[0].endswith(b"\xff\xfe odd.dcm"), "names the file"
    # an error about that file is a str that can be built and cut short, surrogates and all
    _edit(Path(hostile), lambda ds: delattr(ds, "ImagePositionPatient"))
    problem = scan_folder(case.dicom).series[0].problems[0]
    assert "\udcff" in problem and "ImagePositionPatient is missing" in short(problem, 300)
    shutil.rmtree(case.out)
    result = campaign("surrogates refused", case, names=("ImagePositionPatient",))
    assert result.code == 1


def test_label_table_field_over_the_csv_limit_is_refused_with_its_line(tmp_path):
    table = tmp_path / "labels.csv"
    table.write_text("1,liver\n2," + "s" * 200_000 + "\n", encoding="utf-8")
    with pytest.raises(SegAlignError, match=r"labels.csv line 2: a field is longer than"):
        read_label_file(table)


def test_unterminated_quote_is_refused_with_the_line_number(tmp_path):
    """Once silently merged the rows after the quote into one label name."""
    table = tmp_path / "labels.csv"
    table.write_text('1,liver\n2,"spleen\n3,kidney_left\n4,kidney_right\n', encoding="utf-8")
    with pytest.raises(SegAlignError, match=r"labels.csv line 2: a quote opened on this line is never closed"):
        read_label_file(table)
    table.write_text('1,liver\n2,"spleen\n3,kidney_left"\n4,kidney_right\n', encoding="utf-8")
    with pytest.raises(SegAlignError, match=r"labels.csv line 2: a quote opened on this line is not closed on it "
                                            r"\(the field runs on to line 3\)"):
        read_label_file(table)
    table.write_text('value,name\n1,"liver, left lobe"\n\n2,spleen\n', encoding="utf-8")  # quotes that close
    assert {v: label.name for v, label in read_label_file(table).items()} == {1: "liver, left lobe", 2: "spleen"}


def test_keyboard_interrupt_during_the_scan_is_not_swallowed(template, tmp_path, monkeypatch):
    """Ctrl-C while headers are read stops the scan (the CLI then exits 130 and writes nothing)."""
    case = new_case(template, tmp_path)
    calls = {"n": 0}
    real = pydicom.dcmread

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", interrupted)
    with pytest.raises(KeyboardInterrupt):
        scan_folder(case.dicom)
    calls["n"] = 0
    result = run_cli("export", case.dicom, case.seg, "-o", case.out)
    assert result.code == 130 and "Traceback" not in result.stderr
    assert not case.out.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("key", [10**8, 10**12])
def test_huge_label_value_in_the_embedded_table_is_ignored_with_a_warning(template, tmp_path, key):
    """Once a hang (10**8: a Python loop over every value) or a 2.7 TiB allocation (10**12) for the colour lookup
    of --overlays. Table entries beyond 65535 name nothing a label volume can hold: ignored, with a warning."""
    case = new_case(template, tmp_path)
    path = write_nifti(tmp_path / "t.nii.gz", label_volume(), AFFINE,
                       label_table_xml=_table(_label(1, "liver") + _label(2, "spleen") + _label(key, "beyond")))
    result = check_contract(
        str(key), hostile_run(str(key), "export", case.dicom, path, "-o", case.out, "--overlays"), case.out, ()
    )
    assert result.code == 0
    assert "values outside 0..65535" in result.stderr
    entries = json.loads((case.out / "labels.json").read_text(encoding="utf-8"))
    assert [entry["value"] for entry in entries] == [1, 2]
    segmentation = load_segmentation(path)
    assert max(segmentation.label_table) == 2
    assert color_lookup({key: Label(key, "x", (1, 2, 3))}, key).shape == (MAX_LABEL + 1, 3)


def test_rows_and_columns_of_65535_in_a_small_file_are_refused_before_allocating(template, tmp_path):
    """Rows = Columns = 65535 in a 12 x 16 file once sampled 4 GiB frames; the pixel data's length says no."""
    case = new_case(template, tmp_path)
    _edit(case.target, lambda ds: (setattr(ds, "Rows", 65535), setattr(ds, "Columns", 65535)))
    outcome = hostile_run("65535", "export", case.dicom, case.seg, "-o", case.out)
    result = check_contract("65535", outcome, case.out, (TARGET,))
    assert result.code == 1
    assert "PixelData holds 384 bytes, but Rows 65535 x Columns 65535 x 2 bytes" in result.stderr


def test_nifti_claiming_2000_cubed_is_refused_before_allocating(template, tmp_path):
    """A 1 kB .nii claiming 2000^3 voxels (8 GB), and one claiming 32767^3 (35 TB, once a bare ``MemoryError``)."""
    for dims, claim in (([3, 2000, 2000, 2000, 1, 1, 1, 1], "8 GB"), ([3, 32767, 32767, 32767, 1, 1, 1, 1], "35.2 TB")):
        path = tmp_path / "claims.nii"
        path.write_bytes(_patched((template / "seg.nii").read_bytes(), dim=dims))
        with guarded("2000^3", seconds=5, memory=256 << 20):
            with pytest.raises(SegAlignError) as refused:
                load_segmentation(path)
        assert f"({claim})" in str(refused.value) and "the file holds 768 bytes" in str(refused.value)


@pytest.mark.parametrize("change, words", [
    (lambda ds: setattr(ds, "Rows", ROWS - 2), "Rows 10 x Columns 16"),
    (lambda ds: setattr(ds, "Columns", COLUMNS * 2), "Rows 12 x Columns 32"),
    (lambda ds: setattr(ds, "BitsAllocated", 8), "x 1 bytes (BitsAllocated 8)"),
    (lambda ds: setattr(ds, "SamplesPerPixel", 3), "x SamplesPerPixel 3"),
    (lambda ds: setattr(ds, "PixelData", ds.PixelData + bytes(64)), "PixelData holds 448 bytes"),
])
def test_rows_or_columns_that_disagree_with_the_pixel_data_are_refused(template, tmp_path, change, words):
    """Once exported silently: a label image laid out by Rows x Columns that cannot line up with pixel_array."""
    case = new_case(template, tmp_path)
    _edit(case.target, change)
    result = campaign(words, case, names=(TARGET,))
    assert result.code == 1 and words in result.stderr and "disagrees with its pixel data" in result.stderr


def test_truncated_pixel_data_is_refused(template, tmp_path):
    case = new_case(template, tmp_path)
    data = case.target.read_bytes()
    case.target.write_bytes(data[:-100])
    result = campaign("pixels cut", case, names=(TARGET,))
    assert result.code == 1 and "the file ends 284 bytes into its PixelData" in result.stderr
    enhanced = new_case(template, tmp_path / "enhanced", "enhanced")
    enhanced.target.write_bytes(enhanced.target.read_bytes()[:-1000])
    result = campaign("enhanced pixels cut", enhanced, names=(ENHANCED,))
    assert result.code == 1 and "truncated" in result.stderr


def test_compressed_pixel_data_is_only_required_to_be_there(template, tmp_path):
    """Encapsulated pixel data: its size says nothing about Rows and Columns, but an image without any is refused."""
    case = new_case(template, tmp_path)
    dataset = pydicom.dcmread(case.target)
    header = read_header(case.target)
    assert header.pixel_data.length == ROWS * COLUMNS * 2
    del dataset.PixelData
    dataset.save_as(case.target)
    result = campaign("no pixels", case, names=(TARGET,))
    assert result.code == 1 and "has no pixel data" in result.stderr


@pytest.mark.parametrize("value", [b"-5", b"0", b"abc"])
def test_number_of_frames_that_would_make_frames_vanish_is_refused(template, tmp_path, value):
    """NumberOfFrames -5 once gave ``range(-5)``: a file with no frames, exported as if it were not there."""
    case = new_case(template, tmp_path)
    _edit(case.target, lambda ds: _raw(ds, "NumberOfFrames", "IS", value))
    result = campaign("NumberOfFrames", case, names=("NumberOfFrames",))
    assert result.code == 1 and f"NumberOfFrames must be a positive integer, got '{value.decode()}'" in result.stderr


def test_slices_behind_a_folder_link_are_exported(template, tmp_path):
    """Symbolic links to folders are followed (each real folder once, so a loop ends)."""
    case = new_case(template, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.move(case.dicom / "IM00003.dcm", elsewhere / "IM00003.dcm")
    (case.dicom / "more").symlink_to(elsewhere, target_is_directory=True)
    (elsewhere / "loop").symlink_to(case.dicom, target_is_directory=True)
    result = campaign("linked folder", case, names=())
    assert result.code == 0
    rows = read_manifest(case.out)
    assert len(rows) == SLICES and any(row["source_file"] == "more/IM00003.dcm" for row in rows)
    assert "did not enter 1 linked folders a second time" in result.stderr


@pytest.mark.skipif(not IS_ROOT, reason="runs as an ordinary user: see the chmod test below")
def test_unreadable_subfolder_is_reported_not_lost_simulated(template, tmp_path, monkeypatch):
    """As root chmod 000 does not deny reading, so the folder's listing is made to fail as it would."""
    case = new_case(template, tmp_path)
    locked = case.dicom / "locked"
    locked.mkdir()
    shutil.move(case.dicom / "IM00003.dcm", locked / "IM00003.dcm")
    real = os.scandir

    def scandir(path="."):
        if os.fspath(path) == os.fspath(locked):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    scan = scan_folder(case.dicom)
    assert (locked, "folder cannot be listed: Permission denied") in scan.unreadable
    assert any("cannot be read" in warning and "Permission denied" in warning for warning in scan.warnings)
    result = run_cli("export", case.dicom, case.seg, "-o", case.out)
    assert result.code == 0 and "Permission denied" in result.stderr
    assert len(read_manifest(case.out)) == SLICES - 1


@pytest.mark.skipif(IS_ROOT, reason="tests run as root, where chmod 000 does not deny reading (simulated above)")
def test_unreadable_subfolder_is_reported_not_lost_chmod(template, tmp_path):
    case = new_case(template, tmp_path)
    locked = case.dicom / "locked"
    locked.mkdir()
    shutil.move(case.dicom / "IM00003.dcm", locked / "IM00003.dcm")
    locked.chmod(0)
    try:
        scan = scan_folder(case.dicom)
    finally:
        locked.chmod(0o755)
    assert any(path == locked and "Permission denied" in reason for path, reason in scan.unreadable)


def test_unreadable_dicom_folder_says_so(template, tmp_path, monkeypatch):
    """Once "no DICOM image series found": the folder could not even be listed."""
    case = new_case(template, tmp_path)
    real = os.scandir

    def scandir(path="."):
        if os.fspath(path) == os.fspath(case.dicom):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    result = run_cli("export", case.dicom, case.seg, "-o", case.out)
    assert result.code == 1
    assert result.stderr.splitlines()[0] == f"segalign: error: DICOM folder {case.dicom} cannot be read: Permission denied"


def _page(out: Path) -> "_PageParser":
    parser = _PageParser()
    parser.feed((out / "index.html").read_text(encoding="utf-8"))
    parser.close()
    return parser


class _PageParser(html.parser.HTMLParser):
    """The elements and text of a page, as a browser's tokenizer sees them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.scripts: list[tuple[dict, str]] = []
        self.title = ""
        self._in: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self._in.append(tag)
        if tag == "script":
            self.scripts.append((dict(attrs), ""))

    def handle_endtag(self, tag):
        if self._in and self._in[-1] == tag:
            self._in.pop()

    def handle_data(self, data):
        if self._in and self._in[-1] == "script":
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)
        if self._in and self._in[-1] == "title":
            self.title += data


HOSTILE_NAMES = {
    1: "</script><script>window.pwned = 1</script>",
    2: "<!--<script>",
    3: "a & b \u2028 c \u2029 d <img src=x onerror=window.pwned=2>",
}
HOSTILE_DESCRIPTION = "</title><script>window.pwned = 3</script>"


@pytest.fixture
def hostile_export(tmp_path) -> Path:
    """An --overlays export whose label names, series description and folder names are hostile."""
    specs = stack(ORIGIN_LPS, SLICES, (0, 0, STEP), rows=ROWS, columns=COLUMNS)
    dicom = tmp_path / "<img src=x onerror=window.pwned=4>"
    write_series(dicom, specs, pixel_function=_pixels, identity=SeriesIdentity(description=HOSTILE_DESCRIPTION))
    volume = label_volume()
    volume[0:2, 0:2, :] = 3
    volume[14:16, 10:12, 0] = 9  # a label on a frame... and 9 is named in no table: Segment_9
    volume[14:16, 10:12, 3] = 0
    entries = "".join(_label(value, name) for value, name in HOSTILE_NAMES.items())
    entries = entries.replace("<![CDATA[<!--<script>]]>", "&lt;!--&lt;script&gt;")  # also as escaped XML text
    seg = write_nifti(tmp_path / "seg.nii.gz", volume, AFFINE, label_table_xml=_table(entries))
    out = tmp_path / "out"
    result = run_cli("export", dicom, seg, "-o", out, "--overlays", "-q")
    assert result.code == 0, result.stderr
    return out


def test_preview_page_text_from_input_is_inert(hostile_export):
    """Once, a label named ``<!--<script>`` or ``</script>...`` ended the page's data and killed its script."""
    page = _page(hostile_export)
    assert [attrs.get("type") for attrs, _ in page.scripts] == ["application/json", None], page.tags
    assert page.tags.count("img") == 0 and page.tags.count("canvas") == 1  # the viewer's own canvas; no element from input text
    data = json.loads(page.scripts[0][1])
    names = {entry["value"]: entry["name"] for entry in data["legend"]}
    assert {v: names[v] for v in HOSTILE_NAMES} == {v: " ".join(n.split()) for v, n in HOSTILE_NAMES.items()}
    raw = (hostile_export / "index.html").read_text(encoding="utf-8")
    payload = raw.split('<script id="segalign-data" type="application/json">', 1)[1].split("</script>", 1)[0]
    assert not any(character in payload for character in "<>&\u2028\u2029")
    assert page.title == f"SegAlign: {HOSTILE_DESCRIPTION}"
    strict = json.loads((hostile_export / "export.json").read_text(encoding="utf-8"), parse_constant=_not_json)
    assert strict["series_description"] == HOSTILE_DESCRIPTION


def test_script_json_escapes_what_could_end_a_script():
    text = script_json({"n": "</script><!-- & \u2028\u2029 \udcff"})
    assert not any(character in text for character in "<>&\u2028\u2029")
    assert json.loads(text) == {"n": "</script><!-- & \u2028\u2029 \udcff"}
    with pytest.raises(ValueError):
        script_json({"x": float("inf")})


CHROMIUM = "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else shutil.which("chromium")


@pytest.mark.skipif(not CHROMIUM, reason="no chromium browser (/usr/bin/chromium or chromium on PATH)")
def test_preview_page_with_hostile_names_in_a_browser(hostile_export):
    """The page's script runs, every hostile name shows as text, and none of them ran as script."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="the python playwright package is not installed")
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto((hostile_export / "index.html").as_uri())
            page.wait_for_function("() => document.querySelectorAll('#legend-rows tr').length > 0", timeout=5000)
            shown = page.evaluate(
                "() => ({names: Object.fromEntries([...document.querySelectorAll('#legend-rows tr')].map("
                "r => [r.dataset.value, r.querySelector('.name').textContent])), pwned: window.pwned === undefined ? "
                "null : window.pwned, title: document.title, status: document.getElementById('status').textContent,"
                " heading: document.querySelector('h1').textContent})"
            )
        finally:
            browser.close()
    assert not errors, errors
    assert shown["pwned"] is None, "text from the input ran as script"
    assert {int(v): n for v, n in shown["names"].items() if int(v) in HOSTILE_NAMES} == {
        v: " ".join(n.split()) for v, n in HOSTILE_NAMES.items()
    }
    assert shown["title"] == shown["heading"] == f"SegAlign: {HOSTILE_DESCRIPTION}"
    assert shown["status"].startswith("Frame 1 of 4")


def _not_json(constant: str):
    raise AssertionError(f"{constant} is not JSON")


def test_infinite_affine_is_refused_at_load_and_json_is_strict(template, tmp_path):
    """Once ``Infinity`` in export.json (not JSON). The affine is refused where it is read, and from a caller."""
    path = tmp_path / "inf.nii"
    path.write_bytes(_patched((template / "seg.nii").read_bytes(), srow_y=[0, np.inf, 0, 0]))
    with pytest.raises(SegAlignError, match=r"inf.nii \(sform\): the affine holds non-finite values"):
        load_segmentation(path)
    affine = AFFINE.copy()
    affine[0, 3] = np.inf
    with pytest.raises(SegAlignError, match="non-finite"):
        Segmentation(label_volume(), affine, {}, None)
    affine[0, 3] = np.nan
    with pytest.raises(SegAlignError, match="non-finite"):
        Segmentation(label_volume(), affine, {}, None)
    case = new_case(template, tmp_path / "ok")
    assert run_cli("export", case.dicom, case.seg, "-o", case.out, "-q").code == 0
    for name in ("export.json", "labels.json"):
        json.loads((case.out / name).read_text(encoding="utf-8"), parse_constant=_not_json)


def test_long_values_and_paths_make_short_lines(template, tmp_path):
    """A 10,000-digit tag value was quoted whole (a 10,000-character line), and so could a 5,000-character path."""
    case = new_case(template, tmp_path)
    _edit(case.target, lambda ds: _raw(ds, "ImagePositionPatient", "DS", b"9" * 10000 + b"\\0\\0"))
    result = campaign("10k", case, names=("ImagePositionPatient",))
    assert result.code == 1 and "characters)'" in result.stderr and "9" * 100 not in result.stderr
    deep = tmp_path / ("d" * 200) / ("e" * 200)
    long_path = Path(str(deep) + "/" + "/".join(["x" * 250] * 20))
    assert len(str(long_path)) > 5000
    outcome = hostile_run("long path", "export", long_path, case.seg, "-o", case.out)
    # (the command line may meet the path first, in an OSError: then the line names the path, cut short)
    result = check_contract("long path", outcome, case.out, ("DICOM folder", "too long", str(tmp_path)))
    assert result.code == 1 and len(result.stderr.splitlines()[0]) < 350
    with pytest.raises(SegAlignError) as refused:  # the library's own message is short at its source
        scan_folder(long_path)
    assert len(str(refused.value)) < 250 and str(refused.value).startswith("DICOM folder …")
    assert "File name too long" in str(refused.value)
    assert short("x" * 100, 20) == "xxxxxxxxxxxxxxxxxxx… (100 characters)"
    assert short_path("/a/" + "b" * 300, 40).startswith("…") and len(short_path("/a/" + "b" * 300, 40)) == 40


def test_pydicom_and_nibabel_warnings_never_reach_stderr(template, tmp_path):
    """In a real process (where nothing captures warnings): values pydicom calls invalid, a NIfTI header nibabel
    'fixes' with a log line, numpy's overflow warnings. Every line on stderr is SegAlign's own."""
    case = new_case(template, tmp_path)
    for path in sorted(case.dicom.iterdir()):
        _edit(path, lambda ds: (_raw(ds, "SliceThickness", "DS", b"thick"), _raw(ds, "SeriesNumber", "IS", b"1.5x"),
                                _raw(ds, "InstanceNumber", "IS", b"2.5")))
    seg = tmp_path / "odd.nii"
    seg.write_bytes(_patched((template / "seg.nii").read_bytes(), sizeof_hdr=999))
    runs = [
        ["export", case.dicom, seg, "-o", case.out, "--overlays"],
        ["info", case.dicom],
        ["export", case.dicom, tmp_path / "missing.nii.gz", "-o", tmp_path / "out2"],
    ]
    for args in runs:
        completed = subprocess.run(
            [sys.executable, "-W", "default", "-m", "segalign", *map(str, args)],
            capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONWARNINGS": "default"},
        )
        assert completed.returncode in (0, 1), completed
        stray = [line for line in completed.stderr.splitlines() if not line.startswith("segalign: ")]
        assert not stray, f"{args[0]}: stderr lines that are not SegAlign's: {stray}"
    assert (case.out / "manifest.csv").is_file()


@pytest.mark.parametrize("what", ["file", "dev-null", "missing"])
def test_dicom_folder_that_is_not_a_folder_says_what_it_is(template, tmp_path, what):
    """Once "DICOM folder not found" for a path that exists, but is a file or /dev/null."""
    case = new_case(template, tmp_path)
    path = {"file": case.target, "dev-null": Path("/dev/null"), "missing": tmp_path / "absent"}[what]
    if what == "dev-null" and not path.exists():
        pytest.skip("no /dev/null")
    result = run_cli("export", path, case.seg, "-o", case.out)
    expected = {
        "file": f"DICOM folder {path} is a file, not a folder",
        "dev-null": "DICOM folder /dev/null is a character device, not a folder",
        "missing": f"DICOM folder not found: {path}",
    }[what]
    assert result.code == 1 and result.stderr.splitlines()[0] == f"segalign: error: {expected}"


def test_label_table_that_is_not_a_file_says_what_it_is(template, tmp_path):
    case = new_case(template, tmp_path)
    assert "is a folder, not a file" in run_cli("export", case.dicom, case.seg, "-o", case.out, "--labels",
                                                 tmp_path).stderr
    if os.path.exists("/dev/null"):
        assert "is not a regular file" in run_cli("export", case.dicom, case.seg, "-o", case.out, "--labels",
                                                   "/dev/null").stderr


def test_samples_per_pixel_3_is_reported_as_such(template, tmp_path):
    """Once reported as a PhotometricInterpretation problem although the file said MONOCHROME2."""
    case = new_case(template, tmp_path)
    for path in case.dicom.iterdir():
        _edit(path, lambda ds: (setattr(ds, "SamplesPerPixel", 3), setattr(ds, "PlanarConfiguration", 0),
                                setattr(ds, "PixelData", ds.PixelData * 3)))
    result = campaign("rgb", case, "--overlays", names=("SamplesPerPixel",))
    assert result.code == 1 and "SamplesPerPixel is 3 (PhotometricInterpretation MONOCHROME2)" in result.stderr


@pytest.mark.parametrize("build, words", [
    (lambda p, t: p.write_bytes(b"not gzip " * 20), "not a valid gzip file"),
    (lambda p, t: p.write_bytes(gzip.compress(_patched(gzip.decompress(t.read_bytes()), datatype=999))), "datatype 999"),
    (lambda p, t: p.write_bytes(gzip.compress(_patched(gzip.decompress(t.read_bytes()), dim=[9, 1, 1, 1, 1, 1, 1, 1]))),
     "dim[0] is 9"),
])
def test_messages_say_what_is_wrong_in_words(template, tmp_path, build, words):
    """No exception class names (``HeaderDataError``, ``ImageFileError``, ``BadGzipFile``) in user messages."""
    path = tmp_path / "broken.nii.gz"
    build(path, template / "seg.nii.gz")
    with pytest.raises(SegAlignError) as refused:
        load_segmentation(path)
    message = str(refused.value)
    assert words in message and "broken.nii.gz" in message
    assert not any(word in message for word in ("Error:", "HeaderDataError", "ImageFileError", "BadGzipFile"))


def test_vectorised_default_palette_is_default_color():
    """color_lookup computes the default palette for 65536 values at once; it must be default_color's, exactly."""
    from segalign.segmentation import default_color
    from segalign.writers.images.render import default_colors

    values = np.arange(MAX_LABEL + 1)
    assert np.array_equal(default_colors(values), np.array([default_color(int(v)) for v in values], dtype=np.uint8))
    lookup = color_lookup({5: Label(5, "five", (1, 2, 3))}, 10**12)
    assert lookup.shape == (MAX_LABEL + 1, 3) and tuple(lookup[5]) == (1, 2, 3) and not lookup[0].any()


def test_describe_and_short_helpers():
    assert describe(PermissionError(errno.EACCES, "Permission denied", "/x")) == "Permission denied"
    assert describe(MemoryError()) == "not enough memory"
    assert describe(type("UnexpectedEndOfFileError", (Exception,), {})()) == "unexpected end of file"
    assert short("a\nb\tc") == "a b c"


def test_scan_of_headers_reads_no_pixels(template, tmp_path, monkeypatch):
    """Label export stays fast: the scan reads each file's header and the length of its pixel data, never the
    pixel data itself (a 64 MB pixel data element costs no more than a small one)."""
    case = new_case(template, tmp_path)
    dataset = pydicom.dcmread(case.target)
    dataset.Rows, dataset.Columns = 4096, 8192
    dataset.PixelData = bytes(4096 * 8192 * 2)
    dataset.save_as(case.target)
    read = []
    real_open = open

    class Counting:
        def __init__(self, stream):
            self.stream = stream

        def __getattr__(self, name):
            return getattr(self.stream, name)

        def read(self, size=-1):
            data = self.stream.read(size)
            read.append(len(data))
            return data

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.stream.close()

    monkeypatch.setattr(headers, "open_file", lambda path: Counting(real_open(path, "rb")))
    header = read_header(case.target)
    assert read, "the header was not read through headers.open_file"
    assert sum(read) < 1 << 16, "the header read read the pixels"
    assert header.pixel_data.length == 4096 * 8192 * 2
