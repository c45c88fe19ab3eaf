"""labkit.widgets.InterpolationExplorer, headless, on a tiny random U-Net: the method and the
point slider drive the image and the labels, paths are computed once per method, rapid method
changes coalesce, the static page carries every point of every method."""

import html
import json
import re
import threading
import time

import pytest
import torch

import labkit.widgets.interpolation
from labkit.cache import weights_fingerprint
from labkit.diffusion import sample_at, timestep_at
from labkit.editing import interpolate
from labkit.widgets import InterpolationExplorer, to_png

STEPS = 10  # a short DDIM schedule keeps each path at a few milliseconds
N = 5


@pytest.fixture
def explorer(tiny) -> InterpolationExplorer:
    explorer = InterpolationExplorer(tiny, seed_a=0, seed_b=1, t_fraction=1.0, n=N, num_steps=STEPS,
                                      geodesic_steps=5)
    explorer.wait(30)
    return explorer


def test_opens_on_the_first_method_at_the_first_endpoint(explorer, tiny):
    assert explorer.method.value == "lerp" and explorer.slider.value == 0
    assert explorer.computed == ["lerp"]
    expected = interpolate(tiny, explorer.a, explorer.b, n=N, method="lerp")
    assert bytes(explorer.image.value) == to_png(expected.images[0], value_range=(-1, 1))
    assert f"{expected.h_length:.4g}" in explorer.lengths.value and f"{expected.x_length:.4g}" in explorer.lengths.value
    assert explorer.frame_label.value.startswith(f"point 1 of {N}")
    assert "labkit-explorer" in explorer.widget._dom_classes
    assert "labkit-frame-slider" in explorer.slider._dom_classes


def test_slider_shows_cached_points_at_once(explorer):
    explorer.slider.value = N - 1
    assert bytes(explorer.image.value) == explorer._frames["lerp"][N - 1]  # no wait(): nothing to compute
    assert explorer.frame_label.value.startswith(f"point {N} of {N}")
    # the last point is sample b's latent, so its norm is b's
    assert f"{float(explorer.b.x_t.norm()):.3g}" in explorer.frame_label.value
    assert explorer.computed == ["lerp"]


def test_method_change_computes_once_and_going_back_is_instant(explorer):
    explorer.slider.value = N // 2
    lerp_middle = bytes(explorer.image.value)
    explorer.method.value = "slerp"
    explorer.wait(30)
    assert explorer.computed == ["lerp", "slerp"]
    assert explorer.lengths.value.startswith("slerp:")
    slerp = explorer.interpolation("slerp")
    # slerp keeps the norm between the endpoints' norms; lerp's midpoint falls below both
    ends = sorted(float(x.norm()) for x in (explorer.a.x_t, explorer.b.x_t))
    assert ends[0] - 1e-4 <= float(slerp.path[N // 2].norm()) <= ends[1] + 1e-4
    assert float(explorer.interpolation("lerp").path[N // 2].norm()) < ends[0]
    explorer.method.value = "lerp"  # cached: shown at once, not recomputed
    assert bytes(explorer.image.value) == lerp_middle
    assert explorer.computed == ["lerp", "slerp"]


def test_rapid_method_changes_coalesce(tiny, monkeypatch):
    calls = []
    started = threading.Event()

    def slow_interpolate(*args, method, **kwargs):
        calls.append(method)
        started.set()
        time.sleep(0.3)  # slow enough that both clicks arrive while it runs
        return interpolate(*args, method=method, **kwargs)

    monkeypatch.setattr(labkit.widgets.interpolation, "interpolate", slow_interpolate)
    explorer = InterpolationExplorer(tiny, n=N, num_steps=STEPS, geodesic_steps=5)
    assert started.wait(5)
    explorer.method.value = "slerp"
    explorer.method.value = "geodesic"
    explorer.wait(30)
    assert calls == ["lerp", "geodesic"]  # the first (already running) and the latest, nothing between
    assert explorer.lengths.value.startswith("geodesic:")
    assert bytes(explorer.image.value) == explorer._frames["geodesic"][0]


def test_given_paths_are_shown_without_recomputing(tiny):
    t = timestep_at(tiny, 1.0, STEPS)
    a, b = sample_at(tiny, 0, t, STEPS), sample_at(tiny, 1, t, STEPS)
    given = {"slerp": interpolate(tiny, a, b, n=N, method="slerp")}
    explorer = InterpolationExplorer(tiny, n=N, num_steps=STEPS, methods=("slerp", "lerp"), interpolations=given)
    explorer.wait(30)
    assert explorer.computed == [] and explorer.interpolation("slerp") is given["slerp"]
    assert bytes(explorer.image.value) == to_png(given["slerp"].images[0], value_range=(-1, 1))


def test_static_page_has_every_point_of_every_method(explorer):
    page = explorer.to_html()
    assert set(explorer.computed) == {"lerp", "slerp", "geodesic"}
    assert len(re.findall(r"data:image/png;base64,", page)) == 3 * N + 3  # each player: N frames + the shown one
    for method in ("lerp", "slerp", "geodesic"):
        assert f"{method}: length in X {explorer.interpolation(method).x_length:.4g}" in page
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page)
    bundle = explorer._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == explorer.widget.model_id
    assert bundle["text/plain"].startswith("InterpolationExplorer(samples 0 → 1")


def test_geodesic_is_no_longer_in_h_than_slerp(explorer):
    # it starts from slerp and only lowers the energy E ≥ L², so with few points it cannot end
    # much longer; on this tiny model it is shorter
    assert explorer.interpolation("geodesic").h_length <= explorer.interpolation("slerp").h_length * (1 + 1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n=1), "n must be in 2..200 .*the number of path points"),
        (dict(methods=()), "non-empty"),
        (dict(methods=("lerp", "bezier")), "drawn from"),
        (dict(t_fraction=1.5), "t_fraction"),
        (dict(interpolations={"geodesic": None}, methods=("lerp",)), "not among methods"),
    ],
)
def test_bad_input_fails_early_and_says_what_to_do(tiny, kwargs, message):
    with pytest.raises(ValueError, match=message):
        InterpolationExplorer(tiny, num_steps=STEPS, **kwargs)


def test_a_given_path_between_other_samples_is_refused(tiny):
    t = timestep_at(tiny, 1.0, STEPS)
    other = interpolate(tiny, sample_at(tiny, 2, t, STEPS), sample_at(tiny, 3, t, STEPS), n=N, method="lerp")
    with pytest.raises(ValueError, match="does not join samples 0 and 1"):
        InterpolationExplorer(tiny, n=N, num_steps=STEPS, methods=("lerp",), interpolations={"lerp": other})
    with pytest.raises(TypeError, match="interpolations\\['lerp'\\] must be an Interpolation"):
        InterpolationExplorer(tiny, n=N, num_steps=STEPS, methods=("lerp",), interpolations={"lerp": other.path})


def test_given_paths_must_have_n_points(tiny):
    t = timestep_at(tiny, 1.0, STEPS)
    a, b = sample_at(tiny, 0, t, STEPS), sample_at(tiny, 1, t, STEPS)
    with pytest.raises(ValueError, match="same n"):
        InterpolationExplorer(tiny, n=N + 1, num_steps=STEPS,
                               interpolations={"lerp": interpolate(tiny, a, b, n=N, method="lerp")})
    explorer = InterpolationExplorer(tiny, n=N, num_steps=STEPS, methods=("lerp",))
    with pytest.raises(ValueError, match="one of"):
        explorer.interpolation("slerp")
    # Its worker is computing the lerp path: let it finish, or it may still be inside torch when
    # the interpreter exits, which aborts the test process.
    explorer.wait(30)


def test_frames_are_the_finished_images(explorer):
    lerp = explorer.interpolation("lerp")
    assert lerp.images.shape == (N, *explorer.model.sample_shape)
    assert torch.equal(lerp.path[0], explorer.a.x_t) and torch.equal(lerp.path[-1], explorer.b.x_t)
    assert explorer._frames["lerp"] == [to_png(image, value_range=(-1, 1)) for image in lerp.images]


def test_static_page_carries_the_live_settings(explorer, tiny):
    # what the web book's live explorer reads (book/_static/live/explorer.js); it runs lerp and slerp
    (attribute,) = re.findall(r'data-labkit-live="([^"]*)"', explorer.to_html())
    config = json.loads(html.unescape(attribute))
    assert config == explorer.live_config() == {
        "explorer": "interpolation", "model": tiny.name, "weights": weights_fingerprint(tiny.unet)[:16],
        "num_steps": STEPS, "t_fraction": 1.0, "seed_a": 0, "seed_b": 1, "n": N, "methods": ["lerp", "slerp"]}
