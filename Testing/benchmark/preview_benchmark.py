"""The preview page (``index.html`` of an ``--overlays`` export) in headless Chromium: how fast it opens and pages.

    python Testing/benchmark/preview_benchmark.py                   # 1000 frames of 512 x 512, and the real CT
    python Testing/benchmark/preview_benchmark.py --slices 200 1000

Cases: benchmark.py's synthetic CT (512 x 512 x N with noise, 117 labels, cached under --work) for each N, and the
real TotalSegmentator CT of ../shared/testdata when it is there. Each is exported with ``--overlays`` and opened from
the file system in Debian's chromium (through playwright). The table gives:

  open       navigation start to the first frame drawn (the page's performance mark ``segalign-first-frame``)
  next       showing the next frame, as arrow keys do (its data prefetched while the reader looks at the frame)
  jump       showing a frame whose data is not loaded (a click in the legend, End, the slider)
  redraw     drawing the shown frame again, as o, l, [ ], a swatch or a window change do
  viewer/    the page's per-frame data files; overlays/ the RGB overlay PNGs beside them

``next`` and ``jump`` run ``show(i)`` in the page and time it to the frame drawn (script load, base64 and inflate,
render, draw at the window size); they are medians and maxima over up to 60 frames, with 150 ms between frames.
A jump drops the page's own copy of the frame, not the browser's cache of its file: on a series of fewer than 60
frames, every jump goes to a file loaded before, as when a reader returns to a frame.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark import prepare_case  # noqa: E402 (the single-export benchmark's synthetic CT)

REAL_CT = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "totalsegmentator_example"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run"]
MEASURE = """async () => {
  const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));
  const next = [], jump = [], redraw = [], count = Math.min(frames.length - 1, 60);
  for (let i = 1; i <= count; i++) {
    await sleep(150); const t = performance.now(); await show(i); next.push(performance.now() - t);
  }
  for (let i = 0; i < count; i++) {
    const j = (i * 7919 + 11) % frames.length; cache.delete(j);
    await sleep(150); const t = performance.now(); await show(j); jump.push(performance.now() - t);
  }
  for (let i = 0; i < 20; i++) { const t = performance.now(); render(); redraw.push(performance.now() - t); }
  return {next, jump, redraw, open: performance.getEntriesByName("segalign-first-frame")[0].startTime};
}"""


def folder_size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def measure(page_path: Path, chromium: str) -> dict:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=LAUNCH_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(page_path.as_uri())
            page.wait_for_function("() => document.getElementById('view').dataset.drawn")
            return page.evaluate(MEASURE)
        finally:
            browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, nargs="+", default=[1000])
    parser.add_argument("--work", type=Path, default=Path("benchmark-results"))
    args = parser.parse_args()
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        sys.exit("preview_benchmark: needs Debian's chromium (apt-get install chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        sys.exit("preview_benchmark: needs the python playwright package (pip install -e '.[test]')")
    args.work.mkdir(parents=True, exist_ok=True)
    cases = [(f"synthetic 512x512x{n}", prepare_case(args.work, n), "dicom", "segmentation.nii.gz")
             for n in args.slices]
    if REAL_CT.is_dir():
        cases.append(("TotalSegmentator CT (real)", REAL_CT, "ct_dicom", "segmentation_ml.nii.gz"))
    rows = []
    for name, case, dicom, segmentation in cases:
        out = args.work / f"preview-{case.name}"
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "segalign", "export", str(case / dicom), str(case / segmentation),
                        "-o", str(out), "--overlays", "--overwrite", "-q"], check=True)
        exported = time.monotonic() - started
        result = measure((out / "index.html").resolve(), chromium)
        frames = len(list((out / "viewer").glob("*.js")))
        rows.append((name, frames, exported, result, folder_size(out / "viewer"), folder_size(out / "overlays")))

    print(f"\nChromium {subprocess.run([chromium, '--version'], capture_output=True, text=True).stdout.strip()}, "
          f"{platform.processor() or platform.machine()}, 1400 x 900 window\n")
    header = ("case", "frames", "export s", "open ms", "next ms (median/max)", "jump ms (median/max)", "redraw ms",
              "viewer/ MB", "overlays/ MB")
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for name, frames, exported, r, viewer, overlays in rows:
        pair = lambda values: f"{statistics.median(values):.1f} / {max(values):.1f}"  # noqa: E731
        print(" | ".join([name, str(frames), f"{exported:.1f}", f"{r['open']:.0f}", pair(r["next"]), pair(r["jump"]),
                          f"{statistics.median(r['redraw']):.1f}", f"{viewer / 1e6:.1f}", f"{overlays / 1e6:.1f}"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
