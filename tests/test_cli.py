"""python -m labkit directions: writes a loadable basis and an image strip."""

import pytest

from labkit.__main__ import main
from labkit.editing import load_basis


def test_directions_writes_basis_and_strip(tiny_dir, tmp_path, capsys):
    main(["directions", "--model", str(tiny_dir), "--k", "2", "--columns", "3", "--steps", "10",
          "--t", "0.6", "--out", str(tmp_path)])
    basis = load_basis(tmp_path / "basis.safetensors")
    assert basis.v.shape == (2, 1, 1, 8, 8) and basis.sigma[0] >= basis.sigma[1]
    assert (tmp_path / "strip.png").stat().st_size > 1000
    assert "singular values" in capsys.readouterr().out


def test_directions_rejects_bad_arguments(tmp_path):
    with pytest.raises(SystemExit):
        main(["directions", "--k", "0", "--out", str(tmp_path)])
