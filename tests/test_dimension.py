"""labkit.dimension on a known answer: data on a d-dimensional linear subspace, whose exact score is known."""

import math

import pytest
import torch

from labkit.dimension import drops, estimate_dimension, normal_space_spectrum, score_matrix, singular_values
from labkit.models import from_unet

SHAPE = (3, 4, 4)  # D = 48
D = math.prod(SHAPE)


def subspace(d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A random orthonormal basis U (D, d) of a d-dimensional subspace, and a centre μ (D,)."""
    g = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(D, d, generator=g, dtype=torch.float64))[0]
    return U, torch.randn(D, generator=g, dtype=torch.float64)


def exact_eps(U: torch.Tensor, mu: torch.Tensor, tau: float, alpha_bar: float):
    """The exact ε of data x₀ ~ N(μ, τ² U Uᵀ), a Gaussian on the subspace μ + span U.

    x_t = a x₀ + s z ~ N(a μ, a²τ² UUᵀ + s² I), so the score is −[(I − P)/s² + P/(a²τ² + s²)](x − aμ)
    with P = UUᵀ, and ε = −s · score.
    """
    a, s = math.sqrt(alpha_bar), math.sqrt(1 - alpha_bar)
    P = U @ U.T

    def eps(x: torch.Tensor) -> torch.Tensor:
        y = x.flatten(1) - a * mu
        score = -(y - y @ P) / s**2 - (y @ P) / (a * a * tau * tau + s * s)
        return (-s * score).reshape(x.shape)

    return eps


def point_on(U: torch.Tensor, mu: torch.Tensor, seed: int = 5) -> torch.Tensor:
    """A generic point of the subspace (not its centre): the exact score there has a tangential part."""
    coords = torch.randn(U.shape[1], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (mu + U @ coords).reshape(1, *SHAPE)


@pytest.mark.parametrize("d", [1, 3, 6, 10])
@pytest.mark.parametrize("alpha_bar", [0.9999, 0.999, 0.99])
def test_the_dimension_of_a_subspace_is_found_from_its_exact_score(d, alpha_bar):
    U, mu = subspace(d)
    scores = score_matrix(exact_eps(U, mu, 1.0, alpha_bar), point_on(U, mu), alpha_bar, n=4 * D)
    spectrum = singular_values(scores)
    assert spectrum.shape == (D,) and spectrum.dtype == torch.float64
    for gap in ("linear", "log"):
        assert estimate_dimension(spectrum, gap=gap) == d
    # the paper's uncentred matrix, with its rule, finds it too
    assert estimate_dimension(singular_values(scores, centred=False), gap="linear") == d


def test_uncentred_the_tangential_drift_is_one_more_normal_direction_in_log():
    # Away from the centre the exact score has a part along the subspace, the same for every draw:
    # a rank-one term between the normal and the tangent singular values. In decades it makes the
    # larger drop, so the uncentred log rule says d − 1: why singular_values centres by default.
    d, alpha_bar = 5, 0.999
    U, mu = subspace(d)
    scores = score_matrix(exact_eps(U, mu, 1.0, alpha_bar), point_on(U, mu), alpha_bar, n=4 * D)
    raw = singular_values(scores, centred=False)
    assert estimate_dimension(raw, gap="log") == d - 1
    assert estimate_dimension(singular_values(scores), gap="log") == d


def test_the_score_matrix_is_the_explicit_one():
    """Rows −ε(√ᾱ x₀ + √(1−ᾱ) z_i)/√(1−ᾱ), with z_i from the seeded generator, whatever the batch size."""
    U, mu = subspace(4)
    x0, alpha_bar, n = point_on(U, mu), 0.998, 70
    eps = exact_eps(U, mu, 0.5, alpha_bar)
    z = torch.randn((n, *SHAPE), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    a, s = math.sqrt(alpha_bar), math.sqrt(1 - alpha_bar)
    expected = (-eps(a * x0 + s * z) / s).flatten(1)
    for batch_size in (1, 16, 256):
        torch.testing.assert_close(score_matrix(eps, x0, alpha_bar, n, seed=3, batch_size=batch_size), expected,
                                   rtol=1e-12, atol=1e-12)
    centred = expected - expected.mean(0)
    torch.testing.assert_close(singular_values(expected), torch.linalg.svdvals(centred))
    torch.testing.assert_close(singular_values(expected, centred=False), torch.linalg.svdvals(expected))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_normal_space_spectrum_uses_the_predicted_noise(tiny64, prediction_type):
    """On a U-Net: the scores are −ε/√(1−ᾱ) with ε the noise (for a v-model, ε = √ᾱ v + √(1−ᾱ) x_t)."""
    model = from_unet(tiny64.unet, {**tiny64.schedule, "prediction_type": prediction_type})
    t, n = 7, 20
    x0 = torch.rand(1, *model.sample_shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    abar = float(model.alphas_cumprod[t])
    a, s = math.sqrt(abar), math.sqrt(1 - abar)
    x_t = a * x0 + s * torch.randn((n, *model.sample_shape), generator=torch.Generator().manual_seed(1),
                                   dtype=torch.float64)
    with torch.no_grad():
        out = model.unet(x_t, t).sample
    noise = out if prediction_type == "epsilon" else a * out + s * x_t
    expected = torch.linalg.svdvals((-noise / s).flatten(1))
    got = normal_space_spectrum(model, x0, t, n, seed=1, batch_size=8, centred=False)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_estimate_dimension_reads_the_largest_drop():
    spectrum = torch.tensor([10.0, 9.5, 9.0, 1.0, 0.9, 0.8], dtype=torch.float64)  # drop after σ_3: k = 3
    assert estimate_dimension(spectrum) == 6 - 3
    assert estimate_dimension(spectrum, dim=10) == 10 - 3  # n < D draws: D given
    torch.testing.assert_close(drops(spectrum, gap="linear"), torch.tensor([0.5, 0.5, 8.0, 0.1, 0.1],
                                                                       dtype=torch.float64))
    # linear and log disagree where a large value drops by little and a small one by much
    spectrum = torch.tensor([100.0, 50.0, 49.0, 0.5], dtype=torch.float64)
    assert estimate_dimension(spectrum, gap="linear") == 4 - 1 and estimate_dimension(spectrum, gap="log") == 4 - 3
    # exact zeros: in log they sit at the floor σ_1·2⁻⁵², the drop to them is the largest
    zeros = torch.tensor([3.0, 2.0, 0.0, 0.0], dtype=torch.float64)
    assert estimate_dimension(zeros, gap="log") == 2
    assert drops(zeros, gap="log")[1] == pytest.approx(math.log10(2.0 / (3.0 * 2.0**-52)))


@pytest.mark.parametrize("spectrum, words", [
    (torch.tensor([1.0]), "at least two"),
    (torch.tensor([1.0, 2.0]), "descending"),
    (torch.tensor([1.0, -0.5]), "non-negative"),
    (torch.zeros(3), "σ_1 > 0"),
    (torch.ones(2, 2), "must have 1 dim"),
    (torch.tensor([1.0, float("nan")]), "NaN"),
])
def test_bad_spectra_are_refused(spectrum, words):
    with pytest.raises(ValueError, match=words):
        estimate_dimension(spectrum)


def test_bad_arguments_are_refused(tiny):
    eps, x0 = (lambda x: x), torch.zeros(1, *SHAPE, dtype=torch.float64)
    spectrum = torch.tensor([2.0, 1.0, 0.5])
    with pytest.raises(ValueError, match="gap must be one of"):
        estimate_dimension(spectrum, gap="ratio")
    with pytest.raises(ValueError, match="dim must be in 3..inf"):
        estimate_dimension(spectrum, dim=2)
    with pytest.raises(ValueError, match="leading batch dimension of 1"):
        score_matrix(eps, x0[0], 0.99, 8)
    with pytest.raises(ValueError, match="alpha_bar must be in"):
        score_matrix(eps, x0, 1.0, 8)
    with pytest.raises(ValueError, match="n must be in 2.."):
        score_matrix(eps, x0, 0.99, 1)
    with pytest.raises(ValueError, match="eps must return a tensor shaped like its input"):
        score_matrix(lambda x: x.flatten(1), x0, 0.99, 8)
    with pytest.raises(TypeError, match="eps must be a function"):
        score_matrix(None, x0, 0.99, 8)
    with pytest.raises(TypeError, match="centred must be True or False"):
        singular_values(torch.ones(4, 3), centred=1)
    x = torch.zeros(1, *tiny.sample_shape)
    with pytest.raises(ValueError, match="t must be in 0..999"):
        normal_space_spectrum(tiny, x, 1000, 8)
    with pytest.raises(ValueError, match="x0 must have shape"):
        normal_space_spectrum(tiny, x[:, :, :4], 5, 8)
