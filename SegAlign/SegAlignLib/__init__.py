"""The SegAlign 3D Slicer module's own package: what the module file (SegAlign.py) names but does not hold.

- :mod:`.widget`: ``SegAlignWidget``, the panel (Resources/UI/SegAlign.ui)
- :mod:`.parameters`: the panel's parameter node, saved with the scene, and its translation into export options
- :mod:`.logic`: ``SegAlignLogic``, the GUI-free logic the panel and the Python console use
- :mod:`.dependencies`: what each operation needs in Slicer's Python (Resources/requirements.txt), and installing it
- :mod:`.selftest`: ``SegAlignTest``, the self-test (ctest ``py_SegAlign``, "Reload and Test")
- :mod:`.segalign`: the engine, the same code pip installs as the ``segalign`` package; shipped inside this package
  so that it can never collide with a ``segalign`` installed in Slicer's Python, and reloaded with the module.

Nothing here is imported by the engine: it runs without Slicer, and only this package knows the panel's names.
"""
