"""How fast the web book's live explorers answer, in headless Chromium (onnxruntime-web in two workers).

    python benchmarks/live_explorers.py        # after `make live`; prints a table
    -> benchmarks/results/live_explorers.json
    python benchmarks/live_explorers.py --only "MNIST edit (ch. 05)" --out /tmp   # one explorer
    python benchmarks/live_explorers.py --live OTHER/book/_static/live --out /tmp # another version's live folder

On a bare page holding the chapters' explorers (tests/live_support.py), each in a fresh browser
context (nothing cached), it measures in the page (performance.now):

- first image: from pressing "Run live" to the first image on screen (loading explorer.js,
  onnxruntime-web, the model, noise and bases, then computing the image);
- a slider move to a strength (point) not computed yet, with the background fill turned off, so
  that the image is computed after the move; naive and guidance (after another strength of the same
  direction, so guidance's first step, the same for every strength, is already computed);
- a slider move to a strength computed by the background fill (the usual case once the explorer
  has been open a few seconds);
- a control change (direction) that needs a new image.

Every move is repeated ``--repeats`` times; the table gives the median and the range.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from browser_support import chromium, find_chromium, static_server  # noqa: E402
from live_support import LIVE, edit_config, harness, interpolation_config  # noqa: E402

from labkit.checks import int_arg, out_dir_arg  # noqa: E402
from labkit.files import write_json  # noqa: E402

WAIT_MS = 300_000
EXPLORER_NAMES = ("MNIST edit (ch. 05)", "MNIST interpolation (ch. 06)", "shapes edit (ch. 08)")

def live_dir(value: str) -> Path:
    """--live: a folder with the live explorers' JavaScript and a generated/manifest.json."""
    path = Path(value)
    if not (path / "generated" / "manifest.json").is_file():
        raise argparse.ArgumentTypeError(f"{value} has no generated/manifest.json: give a live folder after "
                                         "`make live` (book/_static/live)")
    return path


def shown_path(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def explorers() -> dict[str, dict]:
    """name -> the chapter's explorer settings (num_steps: the chapter's DDIM step count); reads the
    generated manifest, so it is called when the benchmark runs, not on import."""
    return {EXPLORER_NAMES[0]: edit_config(), EXPLORER_NAMES[1]: interpolation_config(),
            EXPLORER_NAMES[2]: edit_config("embedded:shapes", num_steps=20, seeds=(1, 2), t_fractions=(0.6, 0.8),
                                                k=3, strengths=torch.linspace(-1.5, 1.5, 7))}


def open_explorer(page, root) -> float:
    root.locator(".labkit-live-run").click()
    page.wait_for_function("el => ['ready', 'error'].includes(el.dataset.liveState)", arg=root.element_handle(),
                           timeout=WAIT_MS)
    if root.get_attribute("data-live-state") != "ready":
        raise RuntimeError(root.inner_text())
    return root.evaluate("el => el.labkitLive.timings.firstImage")


def latency(page, root, action) -> tuple[float, bool]:
    """Do ``action`` (moves a control), wait for the selected image; (ms from the move to the image, cached)."""
    count = len(root.evaluate("el => el.labkitLive.timings.latencies"))
    action()
    page.wait_for_function("([el, n]) => el.labkitLive.timings.latencies.length > n",
                           arg=[root.element_handle(), count], timeout=WAIT_MS)
    last = root.evaluate("el => el.labkitLive.timings.latencies.at(-1)")
    return last["ms"], last["cached"]


def step_slider(page, root, key: str) -> None:
    root.locator(".labkit-live input[type=range]").focus()
    page.keyboard.press(key)


def measure(browser, url: str, index: int, count: int, name: str, repeats: int, workers: dict) -> dict:
    """Timings of explorer ``index`` of ``count`` (the page holds them, then each again without background fill);
    workers[name]: how many network workers the page ran."""
    edit = "edit" in name
    rows: dict[str, list[float]] = {}

    def page_with(root_index: int):
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{url}/index.html")
        return context, page, page.locator("[data-labkit-live]").nth(root_index)

    # first image, cold, and uncached slider moves (background fill off: explorer index + count)
    methods = ("naive", "guidance") if edit else ("lerp",)
    for _ in range(repeats):
        context, page, root = page_with(index + count)
        rows.setdefault("first image after Run live", []).append(open_explorer(page, root))
        workers[name] = root.evaluate("el => el.labkitLive.workers?.() ?? 0")  # 0: a version on the page's thread
        for method in methods:
            # switch at the last strength, go to the first, then step right twice: two strengths never computed
            for key in ("End", "method", "Home"):
                if key != "method":
                    step_slider(page, root, key)
                elif edit:
                    root.locator(".labkit-live select").nth(3).select_option(method)
                page.wait_for_function("el => el.dataset.liveShown === el.labkitLive.key()",
                                       arg=root.element_handle(), timeout=WAIT_MS)
            for key in ("ArrowRight", "ArrowRight"):
                ms, cached = latency(page, root, lambda key=key: step_slider(page, root, key))
                assert not cached, "a move meant to need a new image found it computed"
                rows.setdefault(f"slider move, not yet computed ({method})", []).append(ms)
        if edit:
            ms, _ = latency(page, root, lambda: root.locator(".labkit-live select").nth(2).select_option("1"))
            rows.setdefault(f"direction change ({methods[-1]})", []).append(ms)
        context.close()
    # cached moves: background fill on, wait until the whole strip (path) is computed
    context, page, root = page_with(index)
    open_explorer(page, root)
    size = int(root.locator(".labkit-live input[type=range]").get_attribute("max")) + 1
    started = time.monotonic()
    page.wait_for_function("([el, n]) => el.labkitLive.filled() >= n", arg=[root.element_handle(), size],
                           timeout=WAIT_MS)
    rows["background fill of the whole slider (s)"] = [time.monotonic() - started]
    step_slider(page, root, "End")
    page.wait_for_function("el => el.dataset.liveShown === el.labkitLive.key()", arg=root.element_handle())
    for _ in range(repeats):
        for key in ("ArrowLeft", "ArrowRight"):
            ms, cached = latency(page, root, lambda key=key: step_slider(page, root, key))
            assert cached
            rows.setdefault("slider move, computed in the background", []).append(ms)
    context.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int_arg(1, 20), default=3, help="repeats of each measurement (default 3)")
    parser.add_argument("--only", action="append", choices=EXPLORER_NAMES, metavar="EXPLORER",
                        help="measure only this explorer (repeatable): " + ", ".join(f'"{n}"' for n in EXPLORER_NAMES))
    parser.add_argument("--live", type=live_dir, default=LIVE,
                        help="the live folder to measure, with its generated/ (default: the book's)")
    parser.add_argument("--out", type=out_dir_arg, default=REPO / "benchmarks" / "results",
                        help="folder for live_explorers.json")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    results, workers = {}, {}
    settings = {name: config for name, config in explorers().items() if not args.only or name in args.only}
    with tempfile.TemporaryDirectory() as folder, chromium() as browser:
        configs = list(settings.values())
        harness(Path(folder), configs + [{**config, "prefetch": False} for config in configs], live=args.live)
        with static_server(Path(folder)) as url:
            for index, name in enumerate(settings):
                results[name] = measure(browser, url, index, len(settings), name, args.repeats, workers)
    load_after = os.getloadavg()
    version = subprocess.run([find_chromium(), "--version"], capture_output=True, text=True).stdout.strip()
    steps = {name: config["num_steps"] for name, config in settings.items()}
    print(f"{version}; load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min); "
          f"{os.cpu_count()} CPUs; network workers per page: {workers}")
    print("| explorer (DDIM steps) | what | median | range | n |")
    print("|---|---|---|---|---|")
    for name, rows in results.items():
        for what, values in rows.items():
            unit, digits = (" s", 1) if what.endswith("(s)") else (" ms", 0)
            median = f"{statistics.median(values):,.{digits}f}{unit}"
            print(f"| {name} ({steps[name]}) | {what.replace(' (s)', '')} | {median} "
                  f"| {min(values):,.{digits}f}–{max(values):,.{digits}f} | {len(values)} |")
    record = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "browser": version,
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "loadavg_before": load_before,
              "loadavg_after": load_after, "live": shown_path(args.live), "num_steps": steps,
              "network_workers": workers, "repeats": args.repeats,
              "results": {name: {what: values for what, values in rows.items()} for name, rows in results.items()}}
    print(f"written: {write_json(args.out / 'live_explorers.json', record)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
