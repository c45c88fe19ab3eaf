"""labkit.plot.image_grid: what each axis draws is the image mapped as value_range says."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from labkit.plot import image_grid  # noqa: E402


def drawn(ax) -> tuple[np.ndarray, tuple[float, float]]:
    image = ax.get_images()[0]
    return np.asarray(image.get_array()), image.get_clim()


def test_grey_rows_fixed_range_labels_and_titles():
    g = torch.Generator().manual_seed(0)
    rows = [torch.randn(3, 1, 4, 5, generator=g), torch.randn(2, 1, 4, 5, generator=g)]  # ragged rows
    fig = image_grid(rows, row_labels=["a", "b"], col_titles=["x", "y", "z"])
    axes = np.asarray(fig.axes).reshape(2, 3)
    pixels, clim = drawn(axes[1, 1])
    assert np.array_equal(pixels, rows[1][1, 0].double().numpy()) and clim == (-1.0, 1.0)
    assert [ax.get_title() for ax in axes[0]] == ["x", "y", "z"] and axes[1, 0].get_title() == ""
    assert axes[0, 0].get_ylabel() == "a" and axes[1, 0].get_ylabel() == "b"
    assert not axes[1, 2].get_images() and not axes[1, 2].axison  # the short row leaves its last cell empty
    plt.close(fig)


def test_own_and_symmetric_ranges():
    image = torch.tensor([[[-3.0, 1.0], [0.0, 2.0]]])
    fig = image_grid(image[None], value_range="own")
    assert drawn(fig.axes[0])[1] == (-3.0, 2.0)
    fig2 = image_grid(image[None], value_range="symmetric", cmap="RdBu_r")
    assert drawn(fig2.axes[0])[1] == (-3.0, 3.0)
    plt.close("all")


def test_colour_images_are_mapped_to_unit_range_channels_last():
    image = torch.tensor([-1.0, 0.0, 1.0, 3.0]).reshape(1, 1, 2, 2).expand(1, 3, 2, 2)  # (1, 3, 2, 2)
    fig = image_grid(image)
    pixels, _ = drawn(fig.axes[0])
    expected = ((image[0] + 1) / 2).clamp(0, 1).permute(1, 2, 0).double().numpy()
    assert pixels.shape == (2, 2, 3) and np.allclose(pixels, expected)
    plt.close(fig)


def test_composes_into_given_axes():
    fig, axes = plt.subplots(2, 3)
    returned = image_grid(torch.zeros(2, 2, 1, 3, 3), titles=[["p", "q"], ["r", "s"]], axes=axes[:, 1:])
    assert returned is fig and axes[1, 2].get_title() == "s" and not axes[0, 0].get_images()
    plt.close(fig)


@pytest.mark.parametrize("kwargs, message", [
    (dict(images=torch.zeros(2, 1, 3)), r"images must have shape"),
    (dict(images=torch.zeros(1, 2, 3, 3)), r"each image must have shape \(1, H, W\) or \(3, H, W\)"),
    (dict(images=[]), "non-empty list"),
    (dict(images=torch.zeros(2, 1, 3, 3), col_titles=["one"]), r"col_titles must have one entry per col \(2\)"),
    (dict(images=torch.zeros(2, 1, 3, 3), row_labels=["a", "b"]), r"row_labels must have one entry per row \(1\)"),
    (dict(images=torch.zeros(2, 1, 3, 3), titles=[["a"]]), "one title per image"),
])
def test_bad_input_names_the_parameter(kwargs, message):
    with pytest.raises(ValueError, match=message):
        image_grid(**kwargs)
    plt.close("all")
