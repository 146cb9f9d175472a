"""What a new user met, each as a test: the command line says what it can do, errors go to standard error, and what
it tells the user to run can be run as written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import run_cli


def run(*args: object, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "segalign", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env, cwd=cwd)


def test_bare_segalign_lists_every_command_with_its_line() -> None:
    result = run()
    assert result.returncode == 2 and result.stdout == ""
    for command in ("export", "batch", "jobs", "info", "demo"):
        line = next((line for line in result.stderr.splitlines() if line.strip().startswith(command + " ")), None)
        assert line is not None and len(line.split()) > 2, (command, result.stderr)


def test_info_without_a_series_says_why_on_standard_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no DICOM here\n")
    text = run_cli("info", tmp_path)
    assert text.code == 1
    assert "no DICOM image series" in text.stderr and "no DICOM image series" not in text.stdout
    as_json = run_cli("info", tmp_path, "--json")
    assert as_json.code == 1 and json.loads(as_json.stdout)["series"] == []
    assert as_json.stderr.startswith("segalign: error: no DICOM image series")


def test_the_demos_same_as_line_runs_as_written(tmp_path: Path) -> None:
    """With the virtual environment not activated (segalign not on the PATH), the line names this Python."""
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    result = run("demo", "--output", tmp_path / "demo", "--slices", "6", env=env)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if "same as:" in line)
    command = line.split("same as:", 1)[1].strip()
    assert command.startswith(f"{sys.executable} -m segalign export ")
    again = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0, again.stderr


def _demo(tmp_path: Path) -> Path:
    from segalign.demo import run_demo

    return run_demo(tmp_path / "demo", slices=6).dicom_dir.parent


def test_jobs_names_a_study_with_its_segmentation_beside_it_and_says_what_it_passed_over(tmp_path: Path) -> None:
    import shutil

    demo = _demo(tmp_path)
    one = tmp_path / "one"
    shutil.copytree(demo / "ct_dicom", one / "p1" / "dicom")
    shutil.copy(demo / "segmentation.nii.gz", one / "p1.nii.gz")
    listed = run_cli("jobs", one)
    assert listed.code == 0 and listed.stdout.splitlines()[1].endswith(",p1"), listed.stdout  # named after p1
    two = tmp_path / "two"
    for study in ("p1", "p2"):
        shutil.copytree(demo / "ct_dicom", two / study / "dicom")
    shutil.copy(demo / "segmentation.nii.gz", two / "p1.seg.nii.gz")  # not STUDY.<suffix>: passed over, and said
    shutil.copy(demo / "segmentation.nii.gz", two / "p2.nii.gz")
    listed = run_cli("jobs", two)
    assert [line.split(",")[-1] for line in listed.stdout.splitlines()[1:]] == ["p2"]
    assert "passed over p1.seg.nii.gz beside it" in listed.stderr


def test_the_batch_summary_says_which_jobs_had_warnings(tmp_path: Path) -> None:
    import shutil

    import nibabel as nib

    demo = _demo(tmp_path)
    studies = tmp_path / "studies"
    for study in ("clean", "warned"):
        shutil.copytree(demo / "ct_dicom", studies / study / "dicom")
    shutil.copy(demo / "segmentation.nii.gz", studies / "clean.nii.gz")
    image = nib.load(demo / "segmentation.nii.gz")
    shifted = image.affine.copy()
    shifted[2, 3] += 5.0
    warned = nib.Nifti1Image(image.get_fdata().astype("uint8"), image.affine)
    warned.set_sform(image.affine, code=2)
    warned.set_qform(shifted, code=1)  # sform and qform disagree: a warning
    nib.save(warned, studies / "warned.nii.gz")
    result = run_cli("batch", studies, "-o", tmp_path / "out")
    assert result.code == 0, result.stderr
    summary = next(line for line in result.stdout.splitlines() if line.startswith("batch:"))
    assert "2 exported (1 with warnings: see the warnings column)" in summary


# --- an output folder inside an input folder is refused, in one line -----------------------------------------------

def _small_study(root: Path, masks: bool = False) -> tuple[Path, Path]:
    """A four-frame series in ``root/dicom`` and its segmentation beside it (``root/seg.nii.gz``, or with ``masks``
    a folder of two masks, ``root/masks``)."""
    import numpy as np

    from segalign.synthetic import grid_affine, stack, write_nifti, write_series

    write_series(root / "dicom", stack((0.0, 0.0, 0.0), 4, (0, 0, 2.0), rows=12, columns=16))
    affine = grid_affine((0.0, 0.0, 0.0), (1.0, 1.0, 2.0))
    labels = np.zeros((16, 12, 4), np.uint8)
    labels[2:6, 3:8, :] = 1
    labels[9:14, 1:4, 1:3] = 2
    if not masks:
        return root / "dicom", write_nifti(root / "seg.nii.gz", labels, affine)
    for value, name in ((1, "liver"), (2, "spleen")):
        write_nifti(root / "masks" / f"{name}.nii.gz", (labels == value).astype(np.uint8), affine)
    return root / "dicom", root / "masks"


def _one_line_refusal(result, *words: str) -> str:
    assert result.code == 1 and result.stdout == "", (result.code, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("segalign: error: "), result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def test_an_output_inside_the_dicom_folder_is_refused_in_one_line(tmp_path: Path) -> None:
    dicom, seg = _small_study(tmp_path)
    before = sorted(path.name for path in dicom.iterdir())
    line = _one_line_refusal(run_cli("export", dicom, seg, "-o", dicom / "out"),
                             f"output folder {dicom / 'out'} is inside the DICOM folder {dicom}",
                             "scanned as DICOM", "choose an output outside it")
    assert "--overwrite" not in line
    (tmp_path / "link").symlink_to(dicom, target_is_directory=True)  # the same folder by another name
    for spelled in (tmp_path / "link" / "out", tmp_path / "elsewhere" / ".." / "dicom" / "deeper" / "out"):
        _one_line_refusal(run_cli("export", dicom, seg, "-o", spelled, "--overwrite"), "is inside the DICOM folder")
    assert sorted(path.name for path in dicom.iterdir()) == before  # nothing was made in it
    # The segmentation file's folder is no input: DICOM folder, segmentation and output side by side is normal.
    assert run_cli("export", dicom, seg, "-o", tmp_path / "out", "-q").code == 0


def test_an_output_inside_a_folder_of_masks_is_refused(tmp_path: Path) -> None:
    dicom, masks = _small_study(tmp_path, masks=True)
    _one_line_refusal(run_cli("export", dicom, masks, "-o", masks / "out"),
                      f"is inside the folder of masks {masks}", "read as masks")
    _one_line_refusal(run_cli("export", dicom, masks, "-o", tmp_path, "--overwrite"), "would contain")
    assert run_cli("export", dicom, masks, "-o", tmp_path / "out", "-q").code == 0


def test_export_segmentation_refuses_an_output_inside_the_dicom_folder(tmp_path: Path) -> None:
    import pytest

    from segalign.dicom import scan_folder
    from segalign.errors import SegAlignError
    from segalign.export import export_segmentation
    from segalign.readers import load_segmentation

    dicom, seg = _small_study(tmp_path)
    series, segmentation = scan_folder(dicom).select(), load_segmentation(seg)
    for root in (dicom, None):  # given, or found from the series' files
        with pytest.raises(SegAlignError, match="is inside the DICOM folder .* choose an output outside it"):
            export_segmentation(series, segmentation, dicom / "sub" / "out", dicom_root=root)
    assert not (dicom / "sub").exists()
    label_table = tmp_path / "tables"
    label_table.mkdir()
    with pytest.raises(SegAlignError, match="is inside the input"):  # any input folder given
        export_segmentation(series, segmentation, label_table / "out", other_inputs=[label_table])


def test_export_all_series_refuses_an_output_inside_the_dicom_folder_up_front(tmp_path: Path) -> None:
    dicom, seg = _small_study(tmp_path)
    _one_line_refusal(run_cli("export", "--all-series", dicom, seg, "-o", dicom / "all"), "is inside the DICOM folder")
    assert not (dicom / "all").exists()


def test_a_batch_into_its_folder_of_studies_is_refused_up_front(tmp_path: Path) -> None:
    studies = tmp_path / "studies"
    for study in ("p1", "p2"):
        _small_study(studies / study)
    out = studies / "exports"
    _one_line_refusal(run_cli("batch", studies, "-o", out, "--workers", "1"),
                      f"output folder {out} is inside the folder of studies {studies}", "searched for studies")
    assert not out.exists()
    inside = studies / "p1" / "dicom" / "exports"  # a jobs table: the job's DICOM folder
    table = tmp_path / "jobs.csv"
    table.write_text(f"dicom_dir,segmentation\n{studies / 'p1' / 'dicom'},{studies / 'p1' / 'seg.nii.gz'}\n")
    _one_line_refusal(run_cli("batch", table, "-o", inside, "--workers", "1"),
                      "is inside the DICOM folder", "of job")
    assert not inside.exists()
    result = run_cli("batch", studies, "-o", tmp_path / "exports", "--workers", "1", "-q")
    assert result.code == 0, result.stderr


# --- one export invents one set of UIDs, shared by its SEG and its RTSTRUCT ----------------------------------------

def _valid_uid(uid: object) -> bool:
    import re

    text = str(uid)
    return len(text) <= 64 and re.fullmatch(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*", text) is not None


def test_the_seg_and_the_rtstruct_of_one_export_share_the_uids_it_invents(tmp_path: Path) -> None:
    """A source without StudyInstanceUID and SeriesInstanceUID: the SEG and the RTSTRUCT are in the same new study
    and reference the source series by the same new UID, its frame of reference and its instances alike."""
    import pydicom

    dicom, seg = _small_study(tmp_path)
    instances = set()
    for path in sorted(dicom.iterdir()):
        dataset = pydicom.dcmread(path)
        del dataset.StudyInstanceUID, dataset.SeriesInstanceUID  # as some anonymisers leave them
        dataset.save_as(path)
        instances.add(str(dataset.SOPInstanceUID))
        frame_of_reference = str(dataset.FrameOfReferenceUID)
    result = run_cli("export", dicom, seg, "-o", tmp_path / "out", "--dicom-seg", "--rtstruct", "-q")
    assert result.code == 0, result.stderr
    seg_dataset = pydicom.dcmread(tmp_path / "out" / "seg.dcm", stop_before_pixels=True)
    rt = pydicom.dcmread(tmp_path / "out" / "rtstruct.dcm")

    rt_frame = rt.ReferencedFrameOfReferenceSequence[0]
    rt_study = rt_frame.RTReferencedStudySequence[0]
    rt_series = rt_study.RTReferencedSeriesSequence[0]
    seg_series = seg_dataset.ReferencedSeriesSequence[0]
    study = str(seg_dataset.StudyInstanceUID)
    assert _valid_uid(study) and str(rt.StudyInstanceUID) == study == str(rt_study.ReferencedSOPInstanceUID)
    source_series = str(seg_series.SeriesInstanceUID)
    assert _valid_uid(source_series) and str(rt_series.SeriesInstanceUID) == source_series
    assert source_series not in (str(seg_dataset.SeriesInstanceUID), str(rt.SeriesInstanceUID), study)
    assert seg_dataset.FrameOfReferenceUID == rt.FrameOfReferenceUID == rt_frame.FrameOfReferenceUID \
        == frame_of_reference
    assert {str(item.ReferencedSOPInstanceUID) for item in seg_series.ReferencedInstanceSequence} == instances
    assert {str(item.ReferencedSOPInstanceUID) for item in rt_series.ContourImageSequence} == instances
    warnings = json.loads((tmp_path / "out" / "export.json").read_text())["warnings"]
    assert sum(study in warning for warning in warnings) == 2  # said for each object, with the same UID
    assert sum(source_series in warning for warning in warnings) == 2


# --- the colour warning: one short line naming the fix, the labels below it ---------------------------------------

def _caret_table(labels: dict[int, tuple[str, tuple[int, int, int]]]) -> str:
    """A TotalSegmentator-style embedded label table (colours in 0..1)."""
    entries = "".join(f'<Label Key="{value}" Red="{rgb[0] / 255}" Green="{rgb[1] / 255}" Blue="{rgb[2] / 255}" '
                      f'Alpha="1"><![CDATA[{name}]]></Label>' for value, (name, rgb) in labels.items())
    return f"<CaretExtension><VolumeInformation Index=\"0\"><LabelTable>{entries}</LabelTable></VolumeInformation>" \
           "</CaretExtension>"


def test_the_colour_warning_is_one_short_line_naming_the_fix_then_the_labels(tmp_path: Path) -> None:
    """TotalSegmentator's own embedded table cycles through a few colours: the warning's first line names
    --labels totalsegmentator (whose colours tell them apart), the labels sharing a colour follow, one colour a
    line; export.json keeps the whole warning, in the library's words."""
    import numpy as np

    from segalign.synthetic import grid_affine, stack, write_nifti, write_series

    dicom = tmp_path / "dicom"
    write_series(dicom, stack((0.0, 0.0, 0.0), 4, (0, 0, 2.0), rows=12, columns=16))
    labels = np.zeros((16, 12, 4), np.uint8)
    for index, value in enumerate((1, 2, 3, 5, 6, 7)):  # TotalSegmentator's values and names, two colours
        labels[index * 2:index * 2 + 2, 2:10, :] = value
    names = {1: "spleen", 2: "kidney_right", 3: "kidney_left", 5: "liver", 6: "stomach", 7: "pancreas"}
    cycle = [(0, 255, 0), (255, 0, 255)]
    table = {value: (name, cycle[index % 2]) for index, (value, name) in enumerate(names.items())}
    seg = write_nifti(tmp_path / "seg.nii.gz", labels, grid_affine((0.0, 0.0, 0.0), (1.0, 1.0, 2.0)),
                      label_table_xml=_caret_table(table))
    result = run_cli("export", dicom, seg, "-o", tmp_path / "out")
    assert result.code == 0, result.stderr
    lines = result.stderr.splitlines()
    first = next(index for index, line in enumerate(lines) if "share a colour" in line)
    assert lines[first].startswith("segalign: warning: 6 labels") and len(lines[first]) < 120, lines[first]
    assert "--labels totalsegmentator" in lines[first] and "label_table" not in result.stderr
    assert lines[first + 1:first + 3] == ["  rgb(0, 255, 0): 1 spleen, 3 kidney_left, 6 stomach",
                                          "  rgb(255, 0, 255): 2 kidney_right, 5 liver, 7 pancreas"], lines
    warnings = json.loads((tmp_path / "out" / "export.json").read_text())["warnings"]
    kept = next(warning for warning in warnings if "share a colour" in warning)
    assert 'label_table="totalsegmentator"' in kept.splitlines()[0] and "1 spleen, 3 kidney_left" in kept
    # The fix it names is the fix: with the built-in table, no label shares a colour.
    again = run_cli("export", dicom, seg, "-o", tmp_path / "again", "--labels", "totalsegmentator")
    assert again.code == 0 and "share a colour" not in again.stderr, again.stderr
