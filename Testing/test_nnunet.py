"""``segalign batch --nnunet DatasetNNN_Name``: an nnU-Net v2 raw dataset made of a cohort's volumes.

Truth, read independently with nibabel and json: every case's imagesTr/<case>_0000.nii.gz holds the voxels and
affine of its job's image.nii.gz (the volume writer's own tests compare that with dcm2niix), its labelsTr/<case>.nii.gz
the job's labels.nii.gz renumbered through the job's labels.json names and dataset.json's "labels"; dataset.json has
exactly the fields nnU-Net v2's documentation/dataset_format.md lists (channel_names, labels with background 0 and
consecutive values, numTraining, file_ending) plus its optional name and description. On the phantoms, each label
voxel is also the phantom's own label at the voxel centre the NIfTI affine gives, through dataset.json's mapping.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import run_cli
from segalign.batch import Job, run_batch, run_job
from segalign.batch import run as batch_run
from segalign.errors import SegAlignError
from segalign.options import ExportOptions, ReadOptions
from segalign.synthetic import write_nifti
from test_batch import PHANTOM, _mask_study, _phantom_study

DATASET = "Dataset042_Phantom"


def _rows(out: Path) -> dict[str, dict[str, str]]:
    with (out / "batch.csv").open(newline="", encoding="utf-8") as stream:
        return {row["name"]: row for row in csv.DictReader(stream)}


def _renamed_masks(root: Path, name: str, renames: dict[str, str]) -> None:
    study = _mask_study(root, name)
    for old, new in renames.items():
        (study.segmentation / f"{old}.nii.gz").rename(study.segmentation / f"{new}.nii.gz")


def _overlapping_masks(root: Path, name: str) -> None:
    """A folder of masks where 'core' lies inside 'big'."""
    study = _mask_study(root, name)
    image = nib.load(study.segmentation / "big.nii.gz")
    big = np.asarray(image.dataobj)
    core = np.zeros_like(big)
    inside = np.argwhere(big)
    centre = inside[len(inside) // 2]
    core[tuple(slice(c - 2, c + 3) for c in centre)] = 1
    core &= big
    assert core.any()
    write_nifti(study.segmentation / "core.nii.gz", core, image.affine)


def assert_dataset(out: Path, cases: list[str]) -> dict:
    """The dataset in out/DATASET holds exactly ``cases``, each equal to its job's volumes, renumbered."""
    folder = out / DATASET
    description = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    assert set(description) == {"channel_names", "labels", "numTraining", "file_ending", "name", "description"}
    assert description["channel_names"] == {"0": "CT"}
    assert description["file_ending"] == ".nii.gz"
    assert description["numTraining"] == len(cases)
    assert description["name"] == "Phantom"
    labels = description["labels"]
    assert labels["background"] == 0
    assert sorted(labels.values()) == list(range(len(labels)))  # consecutive from 0
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == sorted(f"{c}_0000.nii.gz" for c in cases)
    assert sorted(p.name for p in (folder / "labelsTr").iterdir()) == sorted(f"{c}.nii.gz" for c in cases)
    for case in cases:
        export = out / case
        image, job_image = nib.load(folder / "imagesTr" / f"{case}_0000.nii.gz"), nib.load(export / "image.nii.gz")
        np.testing.assert_array_equal(np.asarray(image.dataobj), np.asarray(job_image.dataobj))
        np.testing.assert_array_equal(image.affine, job_image.affine)
        label, job_label = nib.load(folder / "labelsTr" / f"{case}.nii.gz"), nib.load(export / "labels.nii.gz")
        np.testing.assert_array_equal(label.affine, job_label.affine)
        assert label.shape == image.shape
        entries = json.loads((export / "labels.json").read_text(encoding="utf-8"))
        truth = np.zeros(job_label.shape, dtype=np.int64)
        values = np.asarray(job_label.dataobj)
        for entry in entries:
            truth[values == entry["value"]] = labels[entry["name"]]
        assert set(np.unique(values)) <= {0} | {entry["value"] for entry in entries}
        got = np.asarray(label.dataobj)
        assert np.issubdtype(got.dtype, np.integer)
        np.testing.assert_array_equal(got, truth, err_msg=case)
        assert (got > 0).any()
    return description


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("studies")
    _phantom_study(root, "axial", "axial")
    _phantom_study(root, "sagittal", "sagittal")
    _mask_study(root, "masks")
    return root


def test_cli_writes_the_dataset_of_a_cohort(studies: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = run_cli("batch", studies, "-o", out, "--nnunet", DATASET, "--workers", "1", "-q")
    assert run.code == 0, run.stderr
    assert {row["status"] for row in _rows(out).values()} == {"ok"}
    description = assert_dataset(out, ["axial", "masks", "sagittal"])
    # the mapping by name, in job order then labels.json order: the NIfTI phantoms' default names, then the masks'
    assert description["labels"] == {"background": 0, "Segment_1": 1, "Segment_2": 2, "Segment_7": 3, "big": 4,
                                     "left_blob": 5, "tilted_rod": 6}
    # the labels are the phantoms' own, at every voxel centre the affine gives, through the cohort's mapping
    names = {"axial": {1: "Segment_1", 2: "Segment_2", 7: "Segment_7"},
             "sagittal": {1: "Segment_1", 2: "Segment_2", 7: "Segment_7"},
             "masks": {1: "big", 2: "left_blob", 7: "tilted_rod"}}
    for case, by_value in names.items():
        label = nib.load(out / DATASET / "labelsTr" / f"{case}.nii.gz")
        ijk = np.stack(np.meshgrid(*map(np.arange, label.shape), indexing="ij"), axis=-1).astype(float)
        ras = ijk @ label.affine[:3, :3].T + label.affine[:3, 3]
        lps = ras * np.array([-1.0, -1.0, 1.0])
        lookup = np.zeros(256, dtype=np.int64)
        for value, name in by_value.items():
            lookup[value] = description["labels"][name]
        np.testing.assert_array_equal(np.asarray(label.dataobj), lookup[PHANTOM.labels_at(lps)], err_msg=case)
    # the job's export stays the record: imagesTr is its image (a hard link here)
    linked = out / DATASET / "imagesTr" / "axial_0000.nii.gz"
    assert linked.stat().st_ino == (out / "axial" / "image.nii.gz").stat().st_ino
    # a rerun skips every job and leaves the same dataset
    again = run_cli("batch", studies, "-o", out, "--nnunet", DATASET, "--workers", "1", "-q")
    assert again.code == 0, again.stderr
    assert {row["status"] for row in _rows(out).values()} == {"skipped"}
    assert assert_dataset(out, ["axial", "masks", "sagittal"]) == description


def test_conflicting_names_leave_one_job_out_with_one_line(tmp_path: Path) -> None:
    root = tmp_path / "studies"
    _mask_study(root, "a_masks")
    _phantom_study(root, "b_axial", "axial")
    _renamed_masks(root, "c_masks", {"big": "Big"})  # 'Big' is 'big' of a_masks spelled differently
    _mask_study(root, "d_masks")
    twice = _mask_study(root, "e_masks")  # 'left_blob' and 'Left Blob' in one job: one structure named twice
    (twice.segmentation / "big.nii.gz").rename(twice.segmentation / "Left Blob.nii.gz")  # disjoint from left_blob
    out = tmp_path / "out"
    run = run_cli("batch", root, "-o", out, "--nnunet", DATASET, "--workers", "1")
    assert run.code == 1
    rows = _rows(out)
    assert rows["c_masks"]["status"] == "failed"
    assert rows["c_masks"]["error"] == ("nnU-Net dataset: its names conflict with the cohort's mapping: 'Big' is "
                                        "'big' elsewhere")
    assert {rows[n]["status"] for n in ("a_masks", "b_axial", "d_masks")} == {"ok"}
    assert rows["e_masks"]["error"] == ("nnU-Net dataset: its names conflict with the cohort's mapping: "
                                        "'Left Blob' is 'left_blob' elsewhere; 'Left Blob' and 'left_blob' name "
                                        "one structure twice"), rows["e_masks"]
    lines = [line for line in run.stderr.splitlines() if "c_masks" in line]
    assert len(lines) == 1 and "'Big' is 'big' elsewhere" in lines[0], run.stderr
    assert_dataset(out, ["a_masks", "b_axial", "d_masks"])
    assert (out / "c_masks" / "labels.nii.gz").is_file()  # its export is there; only the dataset leaves it out
    # named as the others, the job is taken in by the rerun (its segmentation changed: exported again)
    (root / "c_masks" / "segmentations" / "Big.nii.gz").rename(root / "c_masks" / "segmentations" / "big.nii.gz")
    run = run_cli("batch", root, "-o", out, "--nnunet", DATASET, "--workers", "1", "-q")
    assert run.code == 1  # e_masks still names one structure twice
    assert _rows(out)["c_masks"]["status"] == "ok"
    assert_dataset(out, ["a_masks", "b_axial", "c_masks", "d_masks"])
    # and left out again when its names conflict once more: its case leaves imagesTr and labelsTr
    (root / "c_masks" / "segmentations" / "big.nii.gz").rename(root / "c_masks" / "segmentations" / "BIG.nii.gz")
    run = run_cli("batch", root, "-o", out, "--nnunet", DATASET, "--workers", "1", "-q")
    assert run.code == 1
    assert_dataset(out, ["a_masks", "b_axial", "d_masks"])


def test_label_table_gives_the_mapping_and_refuses_other_names(tmp_path: Path) -> None:
    root = tmp_path / "studies"
    _mask_study(root, "a_masks")
    _phantom_study(root, "b_axial", "axial")
    other = _phantom_study(root, "c_axial", "axial")  # its value 7 is 8: a value the table does not name
    image = nib.load(other.segmentation)
    values = np.asarray(image.dataobj).copy()
    values[values == 7] = 8
    write_nifti(other.segmentation, values, image.affine)
    table = tmp_path / "labels.csv"
    table.write_text("value,name\n1,tilted_rod\n2,left_blob\n7,big\n9,spare\n", encoding="utf-8")
    out = tmp_path / "out"
    run = run_cli("batch", root, "-o", out, "--nnunet", DATASET, "--labels", table, "--workers", "1", "-q")
    assert run.code == 1
    rows = _rows(out)
    assert rows["a_masks"]["status"] == rows["b_axial"]["status"] == "ok"
    assert rows["c_axial"]["error"] == ("nnU-Net dataset: its names conflict with the cohort's mapping: "
                                        "'Segment_8' is not in the label table")
    description = assert_dataset(out, ["a_masks", "b_axial"])
    # the table's names in value order, renumbered from 1 (a name no job has keeps its label)
    assert description["labels"] == {"background": 0, "tilted_rod": 1, "left_blob": 2, "big": 3, "spare": 4}


def test_overlapping_segments_are_refused_unless_flattened(tmp_path: Path) -> None:
    root = tmp_path / "studies"
    _mask_study(root, "a_masks")
    _overlapping_masks(root, "b_overlap")
    out = tmp_path / "out"
    run = run_cli("batch", root, "-o", out, "--nnunet", DATASET, "--workers", "1", "-q")
    assert run.code == 1
    rows = _rows(out)
    assert rows["b_overlap"]["status"] == "failed"
    assert "segments overlap" in rows["b_overlap"]["error"] and "--overlap later-wins" in rows["b_overlap"]["error"]
    assert_dataset(out, ["a_masks"])
    flat = tmp_path / "flat"
    run = run_cli("batch", root, "-o", flat, "--nnunet", DATASET, "--overlap", "later-wins", "--workers", "1", "-q")
    assert run.code == 0, run.stderr
    description = assert_dataset(flat, ["a_masks", "b_overlap"])
    assert "core" in description["labels"]


def test_an_interrupted_run_is_completed_by_the_rerun(studies: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from segalign.batch import find_jobs

    jobs, _ = find_jobs(studies)
    out = tmp_path / "out"
    calls = []

    def interrupted(job: Job, *args, **kwargs):
        calls.append(job.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return run_job(job, *args, **kwargs)

    monkeypatch.setattr(batch_run, "run_job", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_batch(jobs, out, ExportOptions(), ReadOptions(), workers=1, nnunet=DATASET)
    assert not (out / DATASET / "dataset.json").exists()
    monkeypatch.undo()
    result = run_batch(jobs, out, ExportOptions(), ReadOptions(), workers=1, nnunet=DATASET)
    assert [r.status for r in result.results] == ["skipped", "ok", "ok"]
    assert_dataset(out, ["axial", "masks", "sagittal"])
    # a job exported again (--redo) gets its image linked anew and the dataset stays equal to the exports
    run_batch(jobs, out, ExportOptions(), ReadOptions(), workers=1, nnunet=DATASET, redo=True)
    assert_dataset(out, ["axial", "masks", "sagittal"])


@pytest.mark.parametrize("name", ["Dataset42_Phantom", "Task042_Phantom", "Dataset042_", "Dataset042 Phantom"])
def test_dataset_names_must_follow_nnunet(name: str, studies: Path, tmp_path: Path) -> None:
    from segalign.batch import find_jobs

    jobs, _ = find_jobs(studies)
    with pytest.raises(SegAlignError, match="DatasetNNN_Name"):
        run_batch(jobs, tmp_path / "out", nnunet=name)
    assert not (tmp_path / "out").exists()


def test_a_dataset_folder_segalign_did_not_write_is_refused_and_left_alone(studies: Path, tmp_path: Path) -> None:
    """Someone's own nnU-Net dataset of that name is never built over: refused before any job runs."""
    out = tmp_path / "out"
    foreign = out / DATASET / "imagesTr"
    foreign.mkdir(parents=True)
    (foreign / "theirs_0000.nii.gz").write_bytes(b"their image")
    run = run_cli("batch", studies, "-o", out, "--nnunet", DATASET, "--workers", "1", "-q")
    assert run.code == 1 and len(run.stderr.splitlines()) == 1 and "did not write" in run.stderr, run.stderr
    assert (foreign / "theirs_0000.nii.gz").read_bytes() == b"their image"
    assert sorted(p.name for p in out.iterdir()) == [DATASET], "no job ran"
