"""Digit measures against synthetic strokes whose slant, width and thickness are known."""

import math

import numpy as np
import pytest
import torch

from labkit.measures import INK_FLOOR, digit_measures, ink_mass, ink_perimeter, slant, thickness, width

SIZE = 28
SUPERSAMPLE = 8  # sub-pixel samples per pixel side: shapes are anti-aliased like MNIST


def _coordinates() -> tuple[torch.Tensor, torch.Tensor]:
    """Sub-pixel sample positions (u to the right, v upwards) in pixel units, pixel centres at integers."""
    c = (torch.arange(SIZE * SUPERSAMPLE, dtype=torch.float64) + 0.5) / SUPERSAMPLE - 0.5
    n = len(c)
    return c[None, :].expand(n, n), -c[:, None].expand(n, n)


def _render(inside: torch.Tensor) -> torch.Tensor:
    """Area coverage of each pixel by the shape, as a (1, 1, 28, 28) image in [-1, 1]."""
    coverage = inside.double().reshape(SIZE, SUPERSAMPLE, SIZE, SUPERSAMPLE).mean(dim=(1, 3))
    return (2 * coverage - 1)[None, None].float()


def parallelogram(shear: float, horizontal_width: float, height: float = 18.0, centre=(13.3, -13.6)) -> torch.Tensor:
    """Ink where |(u − cu) − shear (v − cv)| ≤ W/2 and |v − cv| ≤ H/2: an upright bar sheared by `shear`.

    Its true slant is `shear`, its deslanted width `horizontal_width`, its ink mass W·H.
    """
    u, v = _coordinates()
    du, dv = u - centre[0], v - centre[1]
    return _render(((du - shear * dv).abs() <= horizontal_width / 2) & (dv.abs() <= height / 2))


def stroke(angle_deg: float, thickness_px: float, length: float = 16.0, centre=(13.3, -13.6)) -> torch.Tensor:
    """A pen stroke: points within thickness/2 of a segment of `length`, tilted `angle_deg` from vertical."""
    u, v = _coordinates()
    a = math.radians(angle_deg)
    du, dv = u - centre[0], v - centre[1]
    along = (du * math.sin(a) + dv * math.cos(a)).clamp(-length / 2, length / 2)
    distance = ((du - along * math.sin(a)) ** 2 + (dv - along * math.cos(a)) ** 2).sqrt()
    return _render(distance <= thickness_px / 2)


def _explicit_ink(image: torch.Tensor) -> np.ndarray:
    """The ink density of one (1, 1, H, W) image, pixel by pixel as the module docstring defines it."""
    f = INK_FLOOR
    out = np.zeros((SIZE, SIZE))
    for r in range(SIZE):
        for c in range(SIZE):
            g = min(max((image[0, 0, r, c].item() + 1) / 2, 0.0), 1.0)
            out[r, c] = 0.0 if g <= f else (2 * (g - f) if g < 2 * f else g)
    return out


def test_ink_density_floor():
    # Grey levels 0.05 (haze), 0.15 (on the ramp), 0.5 and 1: ink 0, 0.1, 0.5, 1.
    image = -torch.ones(1, 1, SIZE, SIZE)
    image[0, 0, 0, :4] = torch.tensor([0.05, 0.15, 0.5, 1.0]) * 2 - 1
    assert ink_mass(image).item() == pytest.approx(1.6, abs=1e-5)


def test_faint_haze_does_not_change_the_measures():
    image = stroke(15.0, 3.0)
    hazy = image.clamp(min=-0.9)  # grey level 0.05 everywhere the stroke is not
    for name, value in digit_measures(image).items():
        assert digit_measures(hazy)[name].item() == pytest.approx(value.item(), rel=1e-6), name


SHEARS = [-0.5, -0.3, -0.1, 0.0, 0.1, 0.3, 0.5]


def test_slant_recovers_the_shear_and_is_monotone():
    measured = slant(torch.cat([parallelogram(s, 4.0) for s in SHEARS]))
    assert torch.allclose(measured.double(), torch.tensor(SHEARS, dtype=torch.float64), atol=0.01)
    assert (measured.diff() > 0).all()


def test_slant_sign_top_to_the_right_is_positive():
    image = -torch.ones(1, 1, SIZE, SIZE)
    for row in range(4, 24):
        image[0, 0, row, 8 + (27 - row) // 2] = 1.0  # one pixel right per two rows up
    assert slant(image).item() == pytest.approx(0.5, abs=0.03)
    assert slant(image.flip(-1)).item() == pytest.approx(-0.5, abs=0.03)


def test_slant_equals_the_weighted_least_squares_slope():
    torch.manual_seed(0)
    image = torch.rand(1, 1, SIZE, SIZE) * 2 - 1
    w = _explicit_ink(image).ravel()
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    u, v = cols.ravel().astype(float), -rows.ravel().astype(float)
    cov = np.cov(np.stack([u, v]), aweights=w, bias=True)
    assert slant(image).item() == pytest.approx(cov[0, 1] / cov[1, 1], rel=1e-5)
    expected_width = math.sqrt(12 * (cov[0, 0] - cov[0, 1] ** 2 / cov[1, 1]))
    assert width(image).item() == pytest.approx(expected_width, rel=1e-5)


@pytest.mark.parametrize("shear", [0.0, 0.4])
def test_width_recovers_the_deslanted_width_and_is_monotone(shear):
    widths = [4.0, 6.0, 8.0, 10.0, 12.0]
    measured = width(torch.cat([parallelogram(shear, w) for w in widths]))
    # Anti-aliased edges on the pixel grid: within 0.3 px of the true width.
    assert torch.allclose(measured.double(), torch.tensor(widths, dtype=torch.float64), atol=0.3)
    assert (measured.diff() > 1.5).all()


def test_width_does_not_change_with_shear():
    measured = width(torch.cat([parallelogram(s, 8.0) for s in SHEARS]))
    assert (measured - 8.0).abs().max() < 0.3


def test_ink_mass_is_the_area():
    for s, w, h in [(0.0, 4.0, 18.0), (0.3, 6.0, 12.0)]:
        # Within 2%: the ink floor drops edge pixels covered less than 10%.
        assert ink_mass(parallelogram(s, w, h)).item() == pytest.approx(w * h, rel=0.02)


def test_perimeter_of_a_bar():
    # A 4 × 18 upright bar: perimeter 2·(4 + 18) = 44 (the corners' gradients cost a little).
    assert ink_perimeter(parallelogram(0.0, 4.0, 18.0)).item() == pytest.approx(44.0, rel=0.05)


def test_perimeter_equals_the_explicit_total_variation():
    torch.manual_seed(1)
    image = torch.rand(1, 1, SIZE, SIZE) * 2 - 1
    w = np.pad(_explicit_ink(image), 1)
    total = 0.0
    for r in range(SIZE + 1):
        for c in range(SIZE + 1):
            a, b, d, e = w[r, c], w[r, c + 1], w[r + 1, c], w[r + 1, c + 1]  # here, right, below, diagonal
            total += math.hypot((b + e - a - d) / 2, (d + e - a - b) / 2)
    assert ink_perimeter(image).item() == pytest.approx(total, rel=1e-5)


@pytest.mark.parametrize("angle", [0.0, 20.0, 45.0, -30.0, -45.0, 70.0])
def test_thickness_recovers_the_stroke_width_and_is_monotone(angle):
    widths = [2.0, 2.5, 3.0, 3.5, 4.0, 5.0]
    measured = thickness(torch.cat([stroke(angle, w) for w in widths])).double()
    truth = torch.tensor(widths, dtype=torch.float64)
    # Exact for a stadium in the continuum; the pixel grid costs up to 4% from 2.5 px on,
    # up to 10% at 2 px.
    assert torch.allclose(measured[1:], truth[1:], rtol=0.04)
    assert measured[0].item() == pytest.approx(2.0, rel=0.10)
    assert (measured.diff() > 0.3).all()


def test_measures_are_invariant_to_translation():
    image = stroke(25.0, 3.0, length=14.0)
    shifted = torch.roll(image, shifts=(3, -4), dims=(2, 3))  # whole pixels, the stroke stays inside
    for name, value in digit_measures(image).items():
        assert digit_measures(shifted)[name].item() == pytest.approx(value.item(), rel=1e-5), name
    # Sub-pixel moves re-sample the anti-aliasing: nearly invariant.
    moved = stroke(25.0, 3.0, length=14.0, centre=(11.65, -15.2))
    for name, value in digit_measures(image).items():
        assert digit_measures(moved)[name].item() == pytest.approx(value.item(), rel=0.03), name


def test_digit_measures_on_mnist_tell_ones_from_zeros():
    from labkit.data import load_digits

    ones, _ = load_digits(digits=[1], limit=100)
    zeros, _ = load_digits(digits=[0], limit=100)
    m1, m0 = digit_measures(ones), digit_measures(zeros)
    assert set(m1) == {"ink_mass", "slant", "thickness", "width"}
    assert all(v.shape == (100,) and v.dtype == torch.float32 for v in m1.values())
    assert m1["width"].median() < 6 < 12 < m0["width"].median()
    assert m1["ink_mass"].median() < m0["ink_mass"].median()
    assert 1.5 < m1["thickness"].median() < 4 and 1.5 < m0["thickness"].median() < 4


def test_blank_image_gives_zero_ink_and_nan_shape():
    m = digit_measures(-torch.ones(2, 1, SIZE, SIZE))
    assert (m["ink_mass"] == 0).all()
    for name in ("slant", "thickness", "width"):
        assert torch.isnan(m[name]).all(), name


@pytest.mark.parametrize(
    "bad, error",
    [
        (np.zeros((1, 1, SIZE, SIZE)), TypeError),  # not a tensor
        (torch.zeros(SIZE, SIZE), ValueError),  # no batch/channel axes
        (torch.zeros(1, 3, SIZE, SIZE), ValueError),  # colour
        (torch.zeros(1, 1, SIZE, SIZE, dtype=torch.uint8), TypeError),  # integers
        (torch.full((1, 1, SIZE, SIZE), 255.0), ValueError),  # grey levels, not [-1, 1]
        (torch.full((1, 1, SIZE, SIZE), float("nan")), ValueError),
        (torch.zeros(0, 1, SIZE, SIZE), ValueError),
    ],
)
def test_bad_input_raises(bad, error):
    for measure in (ink_mass, slant, thickness, width, digit_measures):
        with pytest.raises(error):
            measure(bad)
