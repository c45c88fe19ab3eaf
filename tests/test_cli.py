"""python -m labkit directions: writes a loadable basis and an image strip."""

import matplotlib.image
import numpy as np
import pytest
import torch

from labkit.__main__ import main
from labkit.data import read_image
from labkit.editing import load_basis


def test_directions_writes_basis_and_strip(tiny_dir, tmp_path, capsys):
    main(["directions", "--model", str(tiny_dir), "--k", "2", "--columns", "3", "--steps", "10",
          "--fraction", "0.6", "--out", str(tmp_path)])
    basis = load_basis(tmp_path / "basis.safetensors")
    assert basis.v.shape == (2, 1, 1, 8, 8) and basis.sigma[0] >= basis.sigma[1]
    assert (tmp_path / "strip.png").stat().st_size > 1000
    assert "singular values" in capsys.readouterr().out


def test_directions_rejects_bad_arguments(tmp_path):
    with pytest.raises(SystemExit):
        main(["directions", "--k", "0", "--out", str(tmp_path)])


def _write_grey_png(path, size):
    pixels = np.linspace(0, 1, size * size).reshape(size, size)
    matplotlib.image.imsave(path, pixels, cmap="gray", vmin=0, vmax=1)  # writes RGBA
    return pixels


def test_read_image_gives_the_model_range_and_shape(tmp_path):
    pixels = _write_grey_png(tmp_path / "ramp.png", 8)
    grey = read_image(str(tmp_path / "ramp.png"), (1, 8, 8))
    assert grey.shape == (1, 1, 8, 8)
    assert torch.allclose(grey[0, 0], torch.from_numpy(pixels).float() * 2 - 1, atol=2 / 255 + 1e-6)
    colour = read_image(str(tmp_path / "ramp.png"), (3, 8, 8))
    assert colour.shape == (1, 3, 8, 8) and torch.allclose(colour[0, 0], colour[0, 2])
    with pytest.raises(ValueError, match="8×8 pixels; the model wants 28×28: resize"):
        read_image(str(tmp_path / "ramp.png"), (1, 28, 28))


def test_directions_on_a_given_image(tiny_dir, tmp_path, capsys):
    _write_grey_png(tmp_path / "ramp.png", 8)
    main(["directions", "--model", str(tiny_dir), "--image", str(tmp_path / "ramp.png"), "--k", "2",
          "--columns", "3", "--steps", "10", "--out", str(tmp_path / "out")])
    assert load_basis(tmp_path / "out" / "basis.safetensors").v.shape == (2, 1, 1, 8, 8)
    assert (tmp_path / "out" / "strip.png").stat().st_size > 1000
    assert "singular values" in capsys.readouterr().out


def test_read_image_scales_8bit_files_by_their_type_not_their_values(tmp_path):
    from PIL import Image

    # a nearly black JPEG: its 8-bit values are all ≤ 1, which must still mean ≤ 1/255
    Image.fromarray(np.ones((8, 8), dtype=np.uint8)).save(tmp_path / "dark.jpg")
    image = read_image(str(tmp_path / "dark.jpg"), (1, 8, 8))
    assert torch.allclose(image, torch.full((1, 1, 8, 8), 2 / 255 - 1), atol=2 / 255)
