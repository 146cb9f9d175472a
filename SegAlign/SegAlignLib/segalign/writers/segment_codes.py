"""What a DICOM segment says about itself: SNOMED CT codes for its category and type, and its colour in CIELab.

The codes of TotalSegmentator's classes come from TotalSegmentator's own mapping (Apache-2.0), carried as
``segalign/segmentation/data/totalsegmentator_snomed.csv`` (its first lines name the source, the commit and the
licence). A label whose name is not in it gets the generic "Tissue" codes that dcmqi and highdicom's examples use.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..segmentation import shipped_text


@dataclass(frozen=True)
class Code:
    """A coded concept (DICOM's Code Sequence Macro): value, scheme designator, meaning."""

    value: str
    scheme: str
    meaning: str


@dataclass(frozen=True)
class SegmentCodes:
    """SegmentedPropertyCategory, SegmentedPropertyType and its modifier (laterality), if any."""

    category: Code
    type: Code
    modifier: Code | None = None


TISSUE = Code("85756007", "SCT", "Tissue")
#: For labels the mapping does not name: "Tissue", as dcmqi's and highdicom's examples describe a generic segment.
GENERIC = SegmentCodes(TISSUE, TISSUE)


@functools.lru_cache(maxsize=1)
def totalsegmentator_codes() -> dict[str, SegmentCodes]:
    """TotalSegmentator class name -> its codes, from the packaged mapping."""
    text = shipped_text("totalsegmentator_snomed.csv")
    rows = csv.DictReader(line for line in text.splitlines() if line and not line.startswith("#"))
    table = {}
    for row in rows:
        modifier = None
        if row["modifier_value"]:
            modifier = Code(row["modifier_value"], row["modifier_scheme"], row["modifier_meaning"])
        table[row["name"]] = SegmentCodes(
            Code(row["category_value"], row["category_scheme"], row["category_meaning"]),
            Code(row["type_value"], row["type_scheme"], row["type_meaning"]),
            modifier,
        )
    return table


def codes_for(name: str) -> SegmentCodes:
    """The codes of a label named ``name``: TotalSegmentator's for its class names, else the generic ones."""
    return totalsegmentator_codes().get(name, GENERIC)


def rgb_to_dicom_lab(rgb: Sequence[int]) -> tuple[int, int, int]:
    """An sRGB colour (0..255 each) as DICOM's RecommendedDisplayCIELabValue: CIELab (D65 white point) with L* in
    0..100 scaled to 0..65535 and a*, b* in -128..127 scaled to 0..65535 (PS3.3 C.10.7.1.1)."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = np.array([
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]) @ linear
    t = xyz / np.array([0.95047, 1.0, 1.08883])
    delta = 6.0 / 29.0
    f = np.where(t > delta**3, np.cbrt(t), t / (3 * delta**2) + 4.0 / 29.0)
    lightness = 116.0 * f[1] - 16.0
    a = 500.0 * (f[0] - f[1])
    b = 200.0 * (f[1] - f[2])
    scaled = (
        lightness * 65535.0 / 100.0,
        (a + 128.0) * 65535.0 / 255.0,
        (b + 128.0) * 65535.0 / 255.0,
    )
    return tuple(int(min(max(round(v), 0), 65535)) for v in scaled)  # type: ignore[return-value]
