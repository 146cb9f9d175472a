"""SegAlignTest: the module's self-test, run by ctest ``py_SegAlign`` where the Extensions Index builds the extension
and by "Reload and Test" in the panel.

It needs only what 3D Slicer bundles (numpy, pydicom, Pillow, SimpleITK): Slicer runs tests in testing mode,
where ``slicer.packaging.pip_ensure`` installs nothing, so the phantom segmentation is written as an ITK MetaImage
with SimpleITK rather than as NIfTI (nibabel is not bundled). Its files live in a folder under Slicer's temporary
path, removed at the end as far as the platform allows (the DICOM database's files cannot always be deleted:
DICOMUtils.py:393), and the DICOM series goes into a temporary DICOM database, never the user's.

Every check compares with truth the test computes itself: the analytic phantom at each frame's pixel centres,
the DICOM SEG's frames read back through their references, and the command line's engine on the same files.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from pathlib import Path

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest


class SegAlignTest(ScriptedLoadableModuleTest):
    """Exports a synthetic series (InstanceNumber counting down, shuffled file names) and phantom segmentation
    through the logic and through the panel, and checks every frame."""

    def setUp(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="SegAlignTest-", dir=slicer.app.temporaryPath))

    def tearDown(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def runTest(self) -> None:
        self.setUp()
        try:
            self.test_export_matches_phantom()
            self.test_closed_surfaces_keep_label_values()
            self.test_panel_exports()
        finally:
            self.tearDown()

    # ------------------------------------------------------------------------------------------------ cases

    def _case(self):
        """The synthetic series and segmentation, imported into an emptied scene: (logic, volume, segmentation
        node, phantom, specs)."""
        from .logic import SegAlignLogic
        from .segalign import synthetic

        self.delayDisplay("Writing a synthetic series with InstanceNumber counting down, and a MetaImage phantom")
        slicer.mrmlScene.Clear()
        root = Path(tempfile.mkdtemp(dir=self.folder))
        phantom = synthetic.abdomen_phantom()
        specs = synthetic.stack((-120.0, -90.0, -30.0), 16, (0.0, 0.0, 4.0), spacing=(2.0, 2.0), rows=96,
                                columns=120, instance_numbers=range(16, 0, -1))
        dicomFolder = root / "dicom"
        synthetic.write_series(dicomFolder, specs, phantom, file_names=synthetic.shuffled_names(len(specs)))
        affine, shape = synthetic.las_affine((-121.0, -91.0, -31.0), (121.0, 103.0, 31.0), (1.5, 1.5, 1.5))
        segmentationPath = synthetic.write_metaimage(root / "segmentation.mha",
                                                     synthetic.rasterize(phantom, shape, affine), affine)
        labelTable = root / "labels.csv"
        labelTable.write_text("".join(f"{s.value},{s.name}\n" for s in phantom.shapes), encoding="utf-8")
        logic = SegAlignLogic()
        volume = logic.loadDicomFolder(dicomFolder)  # a temporary DICOM database: the user's is not touched
        segmentation = logic.importSegmentation(segmentationPath, volume, labelTable)
        self.root = root
        return logic, volume, segmentation, phantom, specs

    def _rows(self, outputFolder: Path) -> list[dict[str, str]]:
        with open(outputFolder / "manifest.csv", newline="", encoding="utf-8") as stream:
            return list(csv.DictReader(stream))

    def _labels(self, path: Path):
        import numpy as np
        from PIL import Image

        with Image.open(path) as image:
            return np.array(image)

    def _segment(self, outputFolder: Path, row: dict[str, str], value: int):
        """A segment's pixels on a frame: its value in any of the frame's label images (``label_png``, and a
        ``label_png_<n>`` for each further layer where segments overlap; a value is in one layer only)."""
        import numpy as np

        images = [self._labels(outputFolder / path) for column, path in row.items()
                  if column.startswith("label_png") and path]
        return np.any([image == value for image in images], axis=0)

    def _assert_matches_phantom(self, outputFolder: Path, phantom, specs) -> None:
        import numpy as np

        from .segalign import synthetic

        rows = self._rows(outputFolder)
        self.assertEqual([int(row["instance_number"]) for row in rows], list(range(1, len(specs) + 1)))
        byPosition = {tuple(np.round(spec.position, 3)): spec for spec in specs}
        agreeing = total = 0
        for row in rows:
            spec = byPosition[tuple(np.round([float(v) for v in row["image_position_patient"].split()], 3))]
            labels = self._labels(outputFolder / row["label_png"])
            expected = synthetic.expected_labels(spec, phantom)
            self.assertEqual(labels.shape, expected.shape)
            agreeing += int((labels == expected).sum())
            total += labels.size
        # The segmentation is on a 1.5 mm grid, so only boundary pixels may differ from the analytic shapes
        # (about 99 % agree; a mirrored or shifted export agrees far less).
        self.assertGreater(agreeing / total, 0.98)

    # ------------------------------------------------------------------------------------------------ tests

    def test_export_matches_phantom(self) -> None:
        import numpy as np
        import pydicom

        from .segalign import export_segmentation, load_segmentation, scan_folder
        from .segalign.options import DicomSegOptions, ExportOptions

        logic, volume, segmentation, phantom, specs = self._case()
        names = {segmentation.GetSegmentation().GetNthSegment(i).GetName()
                 for i in range(segmentation.GetSegmentation().GetNumberOfSegments())}
        self.assertIn("liver", names)
        outputFolder = self.folder / "export"
        result = logic.exportSegmentation(segmentation, volume, outputFolder, ExportOptions(dicom_seg=DicomSegOptions()))
        self.assertEqual(result.frames, len(specs))
        self.assertEqual(result.outputs, {"dicom_seg": "seg.dcm"})
        self._assert_matches_phantom(outputFolder, phantom, specs)

        self.delayDisplay("Reading the DICOM SEG back through its references")
        rows = self._rows(outputFolder)
        seg = pydicom.dcmread(outputFolder / "seg.dcm")
        valueOf = {entry["name"]: entry["value"] for entry in json.loads((outputFolder / "labels.json").read_text())}
        segmentValue = {int(item.SegmentNumber): valueOf[item.SegmentLabel] for item in seg.SegmentSequence}
        frames = seg.pixel_array.reshape(int(seg.NumberOfFrames), seg.Rows, seg.Columns)
        rebuilt = {}
        for frame, groups in zip(frames, seg.PerFrameFunctionalGroupsSequence):
            uid = groups.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
            number = int(groups.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
            rebuilt.setdefault(uid, np.zeros((seg.Rows, seg.Columns), np.uint16))[frame.astype(bool)] = segmentValue[number]
        for row in rows:
            labels = self._labels(outputFolder / row["label_png"])
            fromSeg = rebuilt.get(row["sop_instance_uid"], np.zeros(labels.shape, np.uint16))
            self.assertTrue(np.array_equal(fromSeg, labels), msg=row["label_png"])

        self.delayDisplay("Loading the DICOM SEG back (Slicer's own DICOM SEG plugin where there is one)")
        loaded = logic.loadDicomSeg(outputFolder / "seg.dcm", volume)
        again = logic.exportSegmentation(loaded, volume, self.folder / "again")
        byName = {entry["name"]: entry["value"] for entry in json.loads((self.folder / "again" / "labels.json").read_text())}
        lookup = np.zeros(65536, dtype=np.uint16)
        for name, value in byName.items():
            lookup[value] = valueOf[name]
        self.assertEqual(sorted(lookup[v] for v in again.labels_found), result.labels_found)
        for row in rows:
            mine = self._labels(outputFolder / row["label_png"])
            back = lookup[self._labels(self.folder / "again" / row["label_png"])]
            self.assertTrue(np.array_equal(mine, back), msg=row["label_png"])

        self.delayDisplay("Comparing with the command line's engine")
        engineFolder = self.folder / "engine"
        export_segmentation(scan_folder(self.root / "dicom").select(), load_segmentation(
            self.root / "segmentation.mha", label_table=self.root / "labels.csv"), engineFolder)
        for row in rows:
            self.assertTrue(np.array_equal(self._labels(outputFolder / row["label_png"]),
                                           self._labels(engineFolder / row["label_png"])), msg=row["label_png"])
        self.delayDisplay("Test passed")

    def test_closed_surfaces_keep_label_values(self) -> None:
        """Closed surfaces as the source representation and a renamed segment: Slicer merges the segments, with the
        values they were imported with (its label-map export would renumber them)."""
        import numpy as np

        logic, volume, segmentation, phantom, specs = self._case()
        before = self.folder / "before"
        first = logic.exportSegmentation(segmentation, volume, before)
        segments = segmentation.GetSegmentation()
        self.assertTrue(segments.CreateRepresentation("Closed surface"))
        segments.SetSourceRepresentationName("Closed surface")
        segments.GetNthSegment(0).SetName("renamed in Slicer")
        nodes = slicer.mrmlScene.GetNumberOfNodes()
        after = self.folder / "after"
        second = logic.exportSegmentation(segmentation, volume, after)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodes, "the merge leaves no nodes in the scene")
        self.assertEqual(second.labels_found, first.labels_found)
        names = {entry["value"]: entry["name"] for entry in json.loads((after / "labels.json").read_text())}
        self.assertIn("renamed in Slicer", names.values())
        for value in first.labels_found:  # surfaces converted one by one may share voxels: each segment is kept whole
            mine = np.concatenate([self._segment(after, row, value).ravel() for row in self._rows(after)])
            truth = np.concatenate([self._segment(before, row, value).ravel() for row in self._rows(before)])
            self.assertTrue(0 < truth.sum() < truth.size // 2, value)  # an organ: some pixels, not most
            self.assertGreater(2 * (mine & truth).sum() / (mine.sum() + truth.sum()), 0.8, value)

    def test_panel_exports(self) -> None:
        """The panel itself (real PythonQt in Slicer): parameters set, Export clicked, the summary and files."""
        logic, volume, segmentation, phantom, specs = self._case()
        slicer.util.selectModule("SegAlign")  # makes the panel (slicer.modules.SegAlignWidget) and enters it
        widget = slicer.modules.SegAlignWidget
        parameters = widget.logic.getParameterNode()
        parameters.referenceVolume = volume
        parameters.segmentation = segmentation
        parameters.outputFolder = self.folder / "panel"
        parameters.writeOverlays = False
        self.assertTrue(widget.ui.applyButton.enabled)
        widget.ui.applyButton.click()
        summary = widget.ui.summaryTextEdit.plainText
        self.assertIn(f"Wrote {len(specs)} frames", summary)
        self._assert_matches_phantom(self.folder / "panel", phantom, specs)
        self.assertFalse(os.path.exists(self.folder / "panel" / "index.html"))
