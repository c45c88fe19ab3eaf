"""The live explorers (book/_static/live/) in headless Chromium: the same images as labkit, nothing loaded
before a reader opens an explorer, nothing fetched from outside the book, the static player kept where
WebAssembly is missing, a message (not a blank box) when something fails; and in the built web book,
the student edition and the single page, every explorer opens and every control changes the image.

Needs the generated files (`make live`; `make book` runs it) and Chromium. The book tests need the
built editions (`make book`, `make student`, `make singlehtml`) and skip an edition that is not built;
under `make test` all three are there: this file's name sorts after test_single_page.py and
test_student_edition.py, which build the single page and the student edition.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from browser_support import REPO, chromium, screenshot_path, static_server, waiting_for
from live_support import MANIFEST, edit_config, harness, interpolation_config, manifest

pytestmark = [pytest.mark.slow, pytest.mark.browser]

WAIT_S = 180  # any one wait (a model loaded, an image computed) on a busy 2-core machine
TOLERANCE = 1e-3  # max |browser − labkit| per pixel, images in [-1, 1]; measured: 1.3e-5
def shapes_config() -> dict:
    """Chapter 08's shapes explorer (read when a test runs: the manifest exists only after `make live`)."""
    return edit_config("embedded:shapes", num_steps=20, seeds=(1, 2), t_fractions=(0.6, 0.8), k=3,
                       strengths=torch.linspace(-1.5, 1.5, 7))
BOOK = Path(os.environ.get("CURVED_LATENTS_BOOK", REPO))
EDITIONS = {"web book": BOOK / "_build" / "html", "student edition": BOOK / "_build" / "student" / "_build" / "html",
            "single page": BOOK / "_build" / "single" / "_build" / "singlehtml"}
# chapters whose pages must have live explorers (those in the toc)
CHAPTERS = ["05_editing", "06_interpolation", "07_semantic", "08_known_factors"]


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def bare_url(tmp_path_factory):
    if not MANIFEST.is_file():
        pytest.fail(f"no {MANIFEST}: run `make live` first")
    folder = tmp_path_factory.mktemp("live")
    # the edit explorers compute only what is asked (no background fill): the comparison takes less time
    harness(folder, [{**edit_config(), "prefetch": False}, interpolation_config(seed_a=2, seed_b=5),
                     {**shapes_config(), "prefetch": False}, {**interpolation_config(), "model": "not-shipped"},
                     edit_config()])
    with static_server(folder) as url:
        yield url


def watch(page, local: str) -> list[str]:
    """Console errors, uncaught exceptions, failed requests, and any request that leaves the book."""
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(f"console error: {msg.text}")
            if msg.type == "error" and "favicon.ico" not in msg.location.get("url", "") else None)
    page.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))
    page.on("request", lambda request: problems.append(f"request outside the book: {request.url}")
            if not request.url.startswith((local, "data:", "blob:")) else None)
    page.on("requestfailed", lambda request: problems.append(f"failed: {request.url}"))
    return problems


def open_live(page, root) -> None:
    root.scroll_into_view_if_needed()
    root.locator(".labkit-live-run").click()
    with waiting_for("the live explorer's first image", WAIT_S):
        page.wait_for_function("el => ['ready', 'error'].includes(el.dataset.liveState)", arg=root.element_handle(),
                               timeout=WAIT_S * 1000)
    assert root.get_attribute("data-live-state") == "ready", root.inner_text()


def shown(page, root) -> None:
    """Wait until the image the controls select is on screen."""
    key = root.evaluate("el => el.labkitLive.key()")
    with waiting_for(f"the live explorer to show {key}", WAIT_S):
        page.wait_for_function("([el, key]) => el.dataset.liveShown === key", arg=[root.element_handle(), key],
                               timeout=WAIT_S * 1000)


def select(page, root, values: list, slider: int) -> np.ndarray:
    """Set the explorer's selects (in order) and its slider as a reader would; return the image shown."""
    for control, value in zip(root.locator(".labkit-live select").all(), values, strict=False):
        control.select_option(str(value))
    slider_control = root.locator(".labkit-live input[type=range]")
    slider_control.focus()
    page.keyboard.press("Home")
    for _ in range(slider):
        page.keyboard.press("ArrowRight")
    shown(page, root)
    return np.array(root.evaluate("el => el.labkitLive.image()"), dtype=np.float32)


def shipped_basis(model: str, num_steps: int, seed: int, t: int, k: int) -> torch.Tensor:
    entry = manifest()["models"][model]
    found = next(e for e in entry["bases"]["entries"]
                 if (e["num_steps"], e["seed"], e["t"], e["k"]) == (num_steps, seed, t, k))
    size, file = int(np.prod(entry["sample_shape"])), MANIFEST.parent / entry["bases"]["file"]
    half = np.fromfile(file, dtype="<f2", count=k * size, offset=2 * found["offset"])
    return torch.from_numpy(half.astype(np.float32)).reshape(k, 1, *entry["sample_shape"])


def test_nothing_is_loaded_before_an_explorer_is_opened(browser, bare_url):
    page = browser.new_page()
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(bare_url + "/index.html", wait_until="load")
    with waiting_for("the Run live buttons", WAIT_S):
        page.wait_for_selector(".labkit-live-run")
    page.wait_for_load_state("networkidle")
    assert not page.workers, "a network worker started before any explorer was opened"
    assert page.locator(".labkit-live-run").count() == 5
    loaded = [url for url in requests if url.endswith((".onnx", ".wasm", ".f16", ".f32", "explorer.js", ".mjs",
                                                       "network-worker.js"))]
    assert not loaded, f"loaded before any explorer was opened: {loaded}"
    page.close()


def test_the_browser_computes_what_labkit_computes(browser, bare_url):
    from labkit.diffusion import sample_at, timestep_at
    from labkit.editing import edit, interpolate
    from labkit.models import load_model
    from labkit.readout import read_factors

    page = browser.new_page()
    problems = watch(page, bare_url)
    page.goto(bare_url + "/index.html")
    roots = page.locator("[data-labkit-live]")
    mnist, config = load_model(), edit_config()
    open_live(page, roots.nth(0))
    for seed, fraction, direction, method, strength in [(1, 0.6, 1, "naive", 6), (1, 0.6, 1, "guidance", 6),
                                                          (2, 1.0, 0, "guidance", 0)]:
        t = timestep_at(mnist, fraction, 25)
        image = select(page, roots.nth(0), [seed, t, direction, method], strength)
        v = shipped_basis("embedded", 25, seed, t, 4)[direction]
        expected = edit(mnist, sample_at(mnist, seed, t, 25), v, [config["strengths"][strength]], method=method)[0]
        difference = np.abs(image - expected.numpy().ravel()).max()
        assert difference < TOLERANCE, f"{method} edit, seed {seed}, t {t}, v{direction + 1}: differs by {difference}"

    open_live(page, roots.nth(1))
    t = timestep_at(mnist, 1.0, 20)
    a, b = sample_at(mnist, 2, t, 20), sample_at(mnist, 5, t, 20)
    for method in ("lerp", "slerp"):
        expected = interpolate(mnist, a, b, n=9, method=method)
        for point in (2, 4, 8):
            image = select(page, roots.nth(1), [2, 5, method], point)
            difference = np.abs(image - expected.images[point].numpy().ravel()).max()
            assert difference < TOLERANCE, f"{method}, point {point}: differs by {difference}"
        with waiting_for("the path's length in H (every point computed)", WAIT_S):
            page.wait_for_function("el => /in H [0-9]/.test(el.innerText)", arg=roots.nth(1).element_handle(),
                                   timeout=WAIT_S * 1000)
        text = roots.nth(1).locator(".labkit-live").inner_text()
        assert f"length in X {expected.x_length:.4g}, in H {expected.h_length:.4g}" in text

    shapes = load_model("shapes")
    open_live(page, roots.nth(2))
    t = timestep_at(shapes, 0.8, 20)
    image = select(page, roots.nth(2), [2, t, 1, "guidance"], 6)
    expected = edit(shapes, sample_at(shapes, 2, t, 20), shipped_basis("embedded:shapes", 20, 2, t, 3)[1],
                    [shapes_config()["strengths"][6]])
    assert np.abs(image - expected[0].numpy().ravel()).max() < TOLERANCE
    factors = roots.nth(2).evaluate("el => el.labkitLive.factors()")[1]
    read = read_factors(expected.clamp(-1, 1))
    for name, value in read.items():
        if name == "shape":
            assert factors[name] == ("square", "triangle", "ellipse")[int(value)]
            continue
        difference = factors[name] - float(value)
        if "hue" in name:  # hues near 0 ≡ 1 compare round the circle
            difference = (difference + 0.5) % 1 - 0.5
        assert abs(difference) < 1e-3, f"{name}: read {factors[name]} in the browser, {float(value)} by labkit"
    assert not problems, "\n".join(problems)
    page.close()


def test_without_webassembly_the_static_player_stays(browser, bare_url):
    page = browser.new_page()
    page.add_init_script("delete window.WebAssembly")
    problems = watch(page, bare_url)
    page.goto(bare_url + "/index.html", wait_until="load")
    with waiting_for("the note that the explorer cannot run live", WAIT_S):
        page.wait_for_selector(".labkit-live-note")
    assert page.locator(".labkit-live-run").count() == 0
    assert page.locator(".labkit-frames").first.is_visible()
    assert "no WebAssembly" in page.locator(".labkit-live-note").first.inner_text()
    assert not problems, "\n".join(problems)
    page.close()


def test_a_failure_shows_a_message_and_the_static_player(browser, bare_url):
    page = browser.new_page()
    problems = watch(page, bare_url)
    page.goto(bare_url + "/index.html")
    root = page.locator("[data-labkit-live]").nth(3)  # its model is not shipped
    root.locator(".labkit-live-run").click()
    with waiting_for("the error message", WAIT_S):
        root.locator(".labkit-live-error").wait_for()
    assert "not-shipped is not shipped" in root.locator(".labkit-live-error").inner_text()
    assert root.locator(".labkit-frames").is_visible()
    assert not problems, "\n".join(problems)
    page.close()


def test_networks_run_in_workers_and_fill_the_slider_two_at_once(browser, bare_url):
    """Chapter 05's explorer as the book has it (background fill on): the networks run in dedicated workers
    (two on a machine with two cores or more), the fill's guided images are labkit's, every control works."""
    from labkit.diffusion import sample_at, timestep_at
    from labkit.editing import edit
    from labkit.models import load_model

    page = browser.new_page()
    problems = watch(page, bare_url)
    page.goto(bare_url + "/index.html")
    root = page.locator("[data-labkit-live]").nth(4)
    open_live(page, root)
    with waiting_for("the background fill of every strength", WAIT_S):
        page.wait_for_function("el => el.labkitLive.filled() === 7", arg=root.element_handle(), timeout=WAIT_S * 1000)
    cores = page.evaluate("navigator.hardwareConcurrency")
    workers = [w.url for w in page.workers]
    assert len(workers) == root.evaluate("el => el.labkitLive.workers()") == max(1, min(2, cores)), workers
    assert all(url.startswith(bare_url) and url.endswith("/_static/live/network-worker.js") for url in workers)
    # strengths 6 and 0, filled in the background (two at once, guidance's first step shared): labkit's images
    mnist, config = load_model(), edit_config()
    t = timestep_at(mnist, 0.6, 25)
    v = shipped_basis("embedded", 25, 0, t, 4)[0]
    expected = edit(mnist, sample_at(mnist, 0, t, 25), v, [config["strengths"][6], config["strengths"][0]])
    for strength, image in zip((6, 0), expected, strict=True):  # ends at 0: the slider's End then changes the image
        assert root.evaluate("el => el.labkitLive.filled()") == 7
        shown_image = select(page, root, [], strength)
        assert root.evaluate("el => el.labkitLive.timings.latencies.at(-1).cached"), "the fill had computed it"
        difference = np.abs(shown_image - image.numpy().ravel()).max()
        assert difference < TOLERANCE, f"strength {strength}, filled in the background: differs by {difference}"
    every_control_changes_the_image(page, root, "bare-edit-background-fill")
    assert not problems, "\n".join(problems)
    page.close()


def every_control_changes_the_image(page, root, name: str) -> None:
    """Move the slider off its start, then each select to another option: each time, a new image."""
    def picture() -> str:
        return root.locator(".labkit-live canvas").evaluate("canvas => canvas.toDataURL()")

    slider = root.locator(".labkit-live input[type=range]")
    slider.focus()
    before = picture()
    # the middle of a path (its ends are the same for lerp and slerp), or the strongest edit
    page.keyboard.press("End")
    if root.evaluate("el => JSON.parse(el.dataset.labkitLive).explorer") == "interpolation":
        for _ in range(int(slider.get_attribute("max")) // 2):
            page.keyboard.press("ArrowLeft")
    shown(page, root)
    assert picture() != before, f"{name}: moving the slider did not change the image"
    controls = root.locator(".labkit-live select").all()
    for control in controls:
        before, current = picture(), control.input_value()
        values = [option.get_attribute("value") for option in control.locator("option").all()]
        others = [value for value in values if value != current]
        if not others:  # a control with one choice (chapter 07 offers one t)
            continue
        # not a value another control holds: sample A = sample B would make lerp and slerp the same
        taken = {other.input_value() for other in controls}
        control.select_option(next((value for value in others if value not in taken), others[0]))
        shown(page, root)
        assert picture() != before, f"{name}: changing {control.get_attribute('aria-label')} did not change the image"
    root.screenshot(path=screenshot_path("live", f"{name}.png"))


@pytest.mark.parametrize("edition", list(EDITIONS))
def test_every_explorer_of_the_book_runs_live(browser, edition):
    folder = EDITIONS[edition]
    pages = sorted(folder.rglob("*.html")) if folder.is_dir() else []
    pages = [p for p in pages if "data-labkit-live" in p.read_text(encoding="utf-8")]
    if not pages:
        pytest.skip(f"the {edition} is not built at {folder}")
    with static_server(folder) as url:
        for html in pages:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            problems = watch(page, url)
            page.goto(f"{url}/{html.relative_to(folder).as_posix()}", wait_until="load")
            roots = page.locator("[data-labkit-live]")
            with waiting_for(f"{html.name}: the Run live buttons", WAIT_S):
                page.wait_for_selector(".labkit-live-run", timeout=WAIT_S * 1000)
            for i in range(roots.count()):
                name = f"{edition.replace(' ', '-')}-{html.stem}-{i}"
                open_live(page, roots.nth(i))
                every_control_changes_the_image(page, roots.nth(i), name)
            assert not problems, f"{edition}, {html.name}: " + "\n".join(problems)
            page.close()
    if edition != "single page":  # checked last, so that a missing chapter does not hide a broken explorer
        names = [p.stem for p in pages]
        missing = [chapter for chapter in CHAPTERS if chapter not in names
                   and (BOOK / "book" / "part2-diffusion" / f"{chapter}.ipynb").exists()]
        assert not missing, f"{edition}: these chapters have no live explorer: {missing}"
