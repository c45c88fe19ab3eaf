"""Explorers: scrub through edits and interpolations, live in JupyterLab and static in the web book.

One explorer per module, on a small shared base:

- ``labkit.widgets.base``          `Explorer`: image, slider, status, progress, and `LatestWins`, the
  background worker that always computes the newest request (rapid control changes never pile up)
- ``labkit.widgets.player``        frames as PNGs (`to_png`) and the self-contained HTML player
  (`static_player`) that the web book shows where there is no kernel
- ``labkit.widgets.edit``          `EditExplorer`: a sample, its local directions, every strength
- ``labkit.widgets.interpolation`` `InterpolationExplorer`: lerp, slerp and geodesic paths

A text-conditioned latent model (``labkit.latent``) comes bound to its prompt,
``EditExplorer(model.conditioned(prompt, guidance_scale=w))``: everything runs in the VAE latent
under that prompt, and the images are decoded to pixels for display only.

Explained in: book/part2-diffusion/05_editing.ipynb and 06_interpolation.ipynb
"""

try:
    import ipywidgets  # noqa: F401  (checked here, so that the message names what to install)
except ImportError as err:
    raise ImportError("labkit.widgets needs ipywidgets, which a plain `pip install labkit` leaves out: "
                      "pip install 'labkit[widgets]' (or 'labkit[book]', or pip install ipywidgets)") from err

from labkit.widgets.edit import EditExplorer  # noqa: E402
from labkit.widgets.interpolation import InterpolationExplorer  # noqa: E402
from labkit.widgets.player import static_player, to_png  # noqa: E402

__all__ = ["EditExplorer", "InterpolationExplorer", "static_player", "to_png"]
