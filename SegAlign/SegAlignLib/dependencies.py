"""What each of the module's operations needs in Slicer's Python, and getting it there.

The versions come from the one requirements list, ``Resources/requirements.txt`` (the library's dependencies in
pyproject.toml are read from the same file). 3D Slicer 5.12 bundles numpy, pydicom, Pillow, SimpleITK and
highdicom; nibabel, pynrrd and slicerio are installed on first use, after the user agrees, with
``slicer.packaging.pip_ensure`` (which also checks the versions of what is already there).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .segalign.errors import SegAlignError

#: The requirements list beside the module file (``Resources/`` of the module, in the source tree and installed).
REQUIREMENTS_FILE = Path(__file__).resolve().parent.parent / "Resources" / "requirements.txt"

#: The distributions of REQUIREMENTS_FILE each operation needs, besides numpy and pydicom (every operation).
#: Reading an ITK MetaImage needs SimpleITK and a DICOM SEG highdicom: Slicer bundles both.
OPERATIONS: dict[str, tuple[str, ...]] = {
    "nifti": ("nibabel",),  # NIfTI files and folders of NIfTI masks
    "nrrd": ("pynrrd", "slicerio"),  # NRRD label maps and .seg.nrrd
    "metaimage": (),
    "dicom": (),
    "rtstruct": (),  # pydicom only
    "export": ("Pillow",),
}
EVERY_OPERATION = ("numpy", "pydicom")


class DependencyError(SegAlignError):
    """What an operation needs is not installed, and was not installed now (declined, failed, or testing mode)."""


def requirements_for(operation: str) -> list:
    """The requirements (``packaging.requirements.Requirement``, as ``slicer.packaging.load_requirements`` reads
    them from :data:`REQUIREMENTS_FILE`) that ``operation`` (a key of :data:`OPERATIONS`) needs."""
    import slicer.packaging

    wanted = {name.lower() for name in EVERY_OPERATION + OPERATIONS[operation]}
    return [r for r in slicer.packaging.load_requirements(REQUIREMENTS_FILE) if r.name.lower() in wanted]


def operation_for(path: str | os.PathLike[str]) -> str:
    """The operation reading the segmentation at ``path`` is (a folder is a folder of NIfTI masks; a file is
    recognised by its content). A file SegAlign cannot read is refused here, saying why, before anything is
    offered for installation."""
    from .segalign.readers import sniff

    path = Path(path)
    if path.is_dir():
        return "nifti"
    if not path.is_file():
        raise SegAlignError(f"segmentation not found: {path}")
    return sniff(path).NAME  # sniff raises, with the reason, for a file no reader takes


def ensure(operation: str, requester: str = "SegAlign") -> None:
    """Have what ``operation`` needs installed in Slicer's Python, installing what is missing or too old after the
    user agrees. Raises :class:`DependencyError` (one sentence naming the packages) when the user declines, when
    pip fails, and when Slicer runs in testing mode (where ``pip_ensure`` installs nothing) and something is missing.
    """
    import slicer.packaging

    requirements = requirements_for(operation)
    missing = [str(r) for r in requirements if not slicer.packaging.pip_check(r)]
    if not missing:
        return
    names = ", ".join(missing)
    try:
        slicer.packaging.pip_ensure(requirements, requester=requester)
    except subprocess.CalledProcessError as error:  # packaging.py: a failed install
        raise DependencyError(
            f"installing {names} into Slicer's Python failed (pip exited with {error.returncode}); the Python "
            "console shows pip's output"
        ) from None
    except RuntimeError:  # packaging.py: the user declined
        raise DependencyError(f"SegAlign needs {names}, which were not installed") from None
    missing = [str(r) for r in requirements if not slicer.packaging.pip_check(r)]
    if missing:  # testing mode: pip_ensure skips installs and returns
        raise DependencyError(f"SegAlign needs {', '.join(missing)}, which are not installed in Slicer's Python")
