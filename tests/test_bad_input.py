"""Bad inputs over the public API and the command line: each is refused at once, clearly.

One table of cases. Each case calls one public function (or ``python -m labkit`` in-process)
with one bad value and asserts: the exception type, that the message names the offending
parameter (or flag), and that it fails within a few seconds. The tests after the table check
what the refusals protect: content-keyed caching, image reading, the hub's deadline.
"""

from __future__ import annotations

import http.server
import math
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from labkit import captions, measures
from labkit import geometry as geo
from labkit.__main__ import main as cli
from labkit.analysis import check_out as analysis_check_out
from labkit.budget import BudgetedEdits, image_change, match_budget
from labkit.checkpoint import check_resume, load_checkpoint, save_checkpoint, saved_prediction
from labkit.checks import check_folder
from labkit.classifier import DigitClassifier, classify, load_classifier
from labkit.data import batches, load_digits, read_image, to_unit_range
from labkit.diffusion import ddim_invert, ddim_sample, h_space, posterior_mean, sample_noise
from labkit.dimension import drops, estimate_dimension, normal_space_spectrum, score_matrix, singular_values
from labkit.disentanglement import coverage, dci, disentanglement, top_two_gap
from labkit.editing import (
    Sample,
    edit,
    global_directions,
    interpolate,
    invert_image,
    load_basis,
    naive_edit,
    sample_at,
    sample_basis,
    save_basis,
    timestep_at,
    transport_direction,
    x_space_guidance,
)
from labkit.files import (
    atomic_folder,
    atomic_write,
    complete_folder,
    manifest_problem,
    verified_folder,
    write_json,
    write_manifest,
)
from labkit.hspace import h_offset, h_principal_components, h_shape, h_space_edit
from labkit.hub import HUB_DEADLINE_S
from labkit.latent import PromptError, from_parts, pipeline_parts, read_pipeline, with_prompt
from labkit.linearity import breaking_step, default_steps, linearisation_error
from labkit.models import EMBEDDED_MODELS, ModelUnavailableError, load_model
from labkit.notebook import setup as nb_setup
from labkit.oracle import loco_directions, oracle_directions
from labkit.plot import chart_grid, image_grid, metric_ellipses, tangent_arrows
from labkit.plot import surface as plot_surface
from labkit.readout import (
    FactorReadout,
    circular_difference,
    circular_mean,
    decode,
    encode,
    load_readout,
    read_factors,
    readout_loss,
    readout_scores,
    smooth_factors,
    train_readout,
)
from labkit.scoring import (
    EditScores,
    Instrument,
    basis_summary,
    factor_changes,
    mean_difference,
    rerender_error,
    score_directions,
    score_edits,
    select,
    world_instrument,
)
from labkit.sd_layout import (
    check_tokenizer_dir,
    check_widths,
    pipeline_manifest,
    save_pipeline,
    text_config,
    unet_config,
    vae_config,
)
from labkit.spectral import jvps, local_basis, principal_angles, subspace_distance, vjps
from labkit.stats import bootstrap_ci, compare_all, floor_to_ceiling, holm, paired_difference, ratio_ci
from labkit.train import ClassifierConfig, TrainConfig, train_classifier
from labkit.train_sd import (
    SDConfig,
    train_decoder,
    train_diffusion,
    train_sd,
    train_vae,
)
from labkit.widgets import EditExplorer, InterpolationExplorer
from labkit.widgets.player import static_player, to_png
from labkit.worlds import check_factors, hue_colour, object_mask, render, sample_factors, tangent_basis

LIMIT_S = 5.0  # "within a few seconds", on a busy 2-core machine
NAN, INF = float("nan"), float("inf")


@pytest.fixture(scope="module")
def e(tiny_dir, tmp_path_factory):
    """Everything the cases need, built once: the tiny model, a sample, bases, files."""
    root = tmp_path_factory.mktemp("bad_input")
    model = load_model(tiny_dir)
    sample = sample_at(model, 0, 600, num_steps=10)
    basis = sample_basis(model, sample, 2, method="exact")
    other = sample_basis(model, sample_at(model, 1, 600, num_steps=10), 2, method="exact")
    f64 = torch.zeros(5, dtype=torch.float64)
    mlp = geo.random_mlp(5, 7)
    files = SimpleNamespace(root=root, **_files(root, tiny_dir))
    for name in ("model_quality", "world_quality", "train_step", "local_basis"):
        _bench(name)  # import once, outside the cases' clock
    latest = _latest(root)
    return SimpleNamespace(model=model, sample=sample, basis=basis, other=other, x=sample.x_t, v=basis.v[0],
                           f64=f64, mlp=mlp, files=files, tiny_dir=tiny_dir, newer=_newer(root, tiny_dir),
                           latest=latest, sd=load_model(latest.sd_dir))


def _files(root: Path, tiny_dir: Path) -> dict:
    """Bad files of every kind the API reads."""
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "ok8.png")
    Image.fromarray(np.zeros((9, 8), np.uint8)).save(root / "wrong_size.png")
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    (root / "text.png").write_text("not an image")
    (root / "a_file").write_text("x")
    (root / "empty_dir").mkdir()
    (root / "corrupt.safetensors").write_bytes(b"\x00" * 64)
    save_file({"w": torch.zeros(2)}, root / "not_a_basis.safetensors")
    return dict(ok8=root / "ok8.png", wrong_size=root / "wrong_size.png", corrupt=root / "corrupt.png",
                text=root / "text.png", a_file=root / "a_file", empty_dir=root / "empty_dir",
                corrupt_st=root / "corrupt.safetensors", not_basis=root / "not_a_basis.safetensors",
                vae=_vae_dir(root), half=_damaged_copy(tiny_dir, root / "half", "half"),
                nan=_damaged_copy(tiny_dir, root / "nan", "nan"),
                extra=_damaged_copy(tiny_dir, root / "extra", "extra"),
                bad_json=_damaged_copy(tiny_dir, root / "bad_json", "json"),
                no_st=_damaged_copy(tiny_dir, root / "no_st", "bin"))


def _vae_dir(root: Path) -> Path:
    from diffusers import AutoencoderKL

    AutoencoderKL(block_out_channels=(8,), norm_num_groups=4, latent_channels=1).save_pretrained(root / "vae")
    return root / "vae"


def _damaged_copy(tiny_dir: Path, dest: Path, how: str) -> Path:
    import shutil

    shutil.copytree(tiny_dir, dest)
    weights = dest / "unet" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(weights)
    names = sorted(tensors)
    if how == "half":
        tensors = {n: tensors[n] for n in names[: len(names) // 2]}
    elif how == "nan":
        tensors[names[0]] = torch.full_like(tensors[names[0]], NAN)
    elif how == "extra":
        tensors["extra.weight"] = torch.zeros(3)
    elif how == "json":
        (dest / "unet" / "config.json").write_text("{ not json")
    elif how == "bin":
        weights.unlink()
        torch.save(tensors, dest / "unet" / "diffusion_pytorch_model.bin")
        return dest
    save_file(tensors, weights)
    return dest


def _hand_sample(e, **changes) -> Sample:
    fields = {"x_t": e.sample.x_t, "t": e.sample.t, "num_steps": e.sample.num_steps, "seed": e.sample.seed}
    return Sample(**{**fields, **changes})


# ---------------------------------------------------------------------------------- the newer modules' files

TRAIN_TINY = dict(batch_size=8, warmup=0, checkpoint_every=1, limit=16,
                  model_config=dict(sample_size=28, in_channels=1, out_channels=1, block_out_channels=(8, 16, 16),
                                    layers_per_block=1, down_block_types=("DownBlock2D",) * 3,
                                    up_block_types=("UpBlock2D",) * 3, norm_num_groups=4, attention_head_dim=8))


def _newer(root: Path, tiny_dir: Path) -> SimpleNamespace:
    """What the cases of worlds, readout, train, analyze and the benchmarks read: read-outs (good and
    damaged), a one-step training run to resume, an OUT holding someone else's results.json."""
    import json
    import shutil

    from labkit.readout import FactorReadout
    from labkit.train import TrainConfig, train_ddpm

    good = root / "readout"
    good.mkdir()
    torch.manual_seed(0)
    save_file({k: v.contiguous() for k, v in FactorReadout().state_dict().items()}, good / "model.safetensors")
    (good / "config.json").write_text(json.dumps({"architecture": {"channels": [16, 32, 64, 128], "hidden": 128}}))
    damaged = {}
    for how in ("nan", "json", "truncated", "other"):
        folder = damaged[how] = root / f"readout_{how}"
        shutil.copytree(good, folder)
        weights = folder / "model.safetensors"
        if how == "nan":
            tensors = load_file(weights)
            tensors["head.3.weight"] = torch.full_like(tensors["head.3.weight"], NAN)
            save_file(tensors, weights)
        elif how == "json":
            (folder / "config.json").write_text("{ not json")
        elif how == "truncated":
            weights.write_bytes(weights.read_bytes()[:1000])
        else:  # weights of another architecture beside this record
            save_file({k: v.contiguous() for k, v in FactorReadout(hidden=64).state_dict().items()}, weights)
    foreign = root / "foreign_out"
    foreign.mkdir()
    (foreign / "results.json").write_text('{"accuracy": 0.97}')
    (foreign / "notes.txt").write_text("someone else's")
    run = root / "ddpm_run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train_ddpm(TrainConfig(out=str(run), steps=2, **TRAIN_TINY))
    broken_run = root / "ddpm_broken"
    shutil.copytree(run, broken_run)
    ema = broken_run / "checkpoint" / "ema.safetensors"
    ema.write_bytes(ema.read_bytes()[:100])
    images = render(sample_factors(2))
    model = load_model(tiny_dir)
    t = timestep_at(model, 1.0, 10)  # an explorer of samples 0 and 1 is given a path between samples 2 and 3
    other_path = interpolate(model, sample_at(model, 2, t, 10), sample_at(model, 3, t, 10), n=3, method="lerp")
    return SimpleNamespace(other_path=other_path, readout=good, readout_damaged=damaged, foreign=foreign, run=run,
                           broken_run=broken_run,
                           factors=sample_factors(3), images=images, tiny_dir=tiny_dir)


def _latest(root: Path) -> SimpleNamespace:
    """What the cases of the newest modules read: an instrument, a tiny Stable Diffusion pipeline and
    its tokenizer, the objects a checkpoint is saved from, classifier folders (with manifests) damaged."""
    import json
    import shutil

    from diffusers.training_utils import EMAModel
    from test_latent import save_tiny_pipeline

    from labkit.classifier import CLASSIFIER_FILES

    sd_dir = save_tiny_pipeline(root / "sd")
    net = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(net.parameters())
    state = (net, EMAModel(net.parameters()), optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0),
             torch.Generator())
    classifier = {}
    for how in ("truncated", "json", "other", "nan"):
        folder = classifier[how] = root / f"classifier_{how}"
        model = DigitClassifier((8, 8, 8) if how == "other" else (16, 32, 64))
        weights = {k: v.contiguous() for k, v in model.state_dict().items()}
        if how == "nan":
            weights["head.weight"] = torch.full_like(weights["head.weight"], NAN)
        with atomic_folder(folder, CLASSIFIER_FILES) as tmp:  # a manifest, as train_classifier writes it
            save_file(weights, tmp / "model.safetensors")
            config = {"architecture": {"channels": [16, 32, 64]}}
            (tmp / "config.json").write_text("{ not json" if how == "json" else json.dumps(config))
        if how == "truncated":
            weights_file = folder / "model.safetensors"
            weights_file.write_bytes(weights_file.read_bytes()[:1000])
    tokenizer = shutil.copytree(sd_dir / "tokenizer", root / "sd_tokenizer")
    unet = {}  # the embedded MNIST model's folder with its manifest, a weights file changed after it was written
    for how in ("changed", "truncated"):
        folder = shutil.copytree(EMBEDDED_MODELS["mnist"] / "unet", root / f"unet_{how}" / "unet")
        shutil.copytree(EMBEDDED_MODELS["mnist"] / "scheduler", folder.parent / "scheduler")
        weights = folder / "diffusion_pytorch_model.safetensors"
        data = bytearray(weights.read_bytes())
        data[-1] ^= 1  # one weight's exponent: the file still parses
        weights.write_bytes(data if how == "changed" else data[:-4])
        unet[how] = folder.parent
    sd = {}  # the tiny pipeline with the manifest save_pipeline wrote, its text encoder changed afterwards
    for how in ("changed", "truncated"):
        folder = sd[how] = shutil.copytree(sd_dir, root / f"sd_{how}")
        weights = folder / "text_encoder" / "model.safetensors"
        data = bytearray(weights.read_bytes())
        data[-1] ^= 1
        weights.write_bytes(data if how == "changed" else data[:-4])
    return SimpleNamespace(instrument=Instrument(read=_read_a, scales={"a": 1.0}, rerender=lambda f: torch.zeros(1)),
                           sd_dir=sd_dir, tokenizer=tokenizer, state=state, classifier=classifier, unet=unet,
                           sd_damaged=sd)


def _read_a(images):
    return {"a": images.flatten(1).mean(1)}


def _edit_scores() -> EditScores:
    """The scores of one direction's two edits (±) at budget 0.05, built by hand: what select splits."""
    edits = BudgetedEdits(direction=torch.zeros(2, dtype=torch.long), sign=torch.tensor([-1.0, 1.0]),
                          budget=torch.full((2,), 0.05), strength=torch.ones(2), change=torch.full((2,), 0.05),
                          matched=torch.ones(2, dtype=torch.bool), rounds=torch.ones(2, dtype=torch.long),
                          moved=torch.ones(2), images=torch.zeros(2, 1, 8, 8), unedited=torch.zeros(1, 1, 8, 8))
    return EditScores(factors=("a",), edits=edits, changes=torch.zeros(2, 1), response=torch.zeros(1, 1),
                      side_effect=None, on_manifold=None, consistency=None)


def _sd_config(e, **changes) -> SDConfig:
    return SDConfig(**{"out": str(e.files.root / "never_sd"), "tiny": True, **changes})


def _sd(**changes):
    return lambda e: train_sd(_sd_config(e, **changes))


def _sd_cli(*flags: str):
    return lambda e: _train_main(["sd", "--out", str(e.files.root / "never_sd_cli"), "--tiny", *flags])


def _enter(context) -> None:
    """Enter a context manager (atomic_write, atomic_folder, h_offset): they check their input on entry."""
    with context:
        pass


def _bench(name: str):
    """A benchmark script's module (benchmarks/ is not a package), loaded once."""
    import importlib.util

    if name not in _BENCH:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", Path(__file__).parent.parent / "benchmarks"
                                                      / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        _BENCH[name] = module
    return _BENCH[name]


_BENCH: dict = {}


def _benchmark(name: str, *flags: str):
    return lambda e: _bench(name).main(list(flags))


def _train(**changes):
    from labkit.train import TrainConfig, train_ddpm

    return lambda e: train_ddpm(TrainConfig(**{"out": str(e.files.root / "never"), "steps": 1, **TRAIN_TINY,
                                               **changes}))


def _resume(**changes):
    from labkit.train import TrainConfig, train_ddpm

    return lambda e: train_ddpm(TrainConfig(**{"out": str(e.newer.run), "steps": 3, **TRAIN_TINY, **changes}))


def _train_cli(*flags: str):
    from labkit.train import main as train_main

    return lambda e: train_main(["ddpm", "--out", str(e.files.root / "never"), *flags])


def _readout_cli(*flags: str):
    from labkit.readout import main as readout_main

    return lambda e: readout_main(["--out", str(e.files.root / "never_readout"), *flags])


def _without(table: dict, name: str) -> dict:
    return {k: v for k, v in table.items() if k != name}


def _with(table: dict, **changes) -> dict:
    return {**table, **changes}


def _readout_main(argv: list[str]):
    from labkit.readout import main as readout_main

    return readout_main(argv)


def _train_main(argv: list[str]):
    from labkit.train import main as train_main

    return train_main(argv)



def _round(z):
    return torch.round(z * 3.0)


def _cli(*flags: str, out: Path | None = None):
    """Run ``python -m labkit directions`` in-process; the cases give the flags."""
    def run(e):
        args = ["directions", "--model", str(e.tiny_dir), "--steps", "10", "--k", "1", "--columns", "2",
                "--out", str(out or e.files.root / "cli_out")]
        cli(args + list(flags))
    return run


# (id, call taking the fixture, exception type, text the message must contain: the parameter)
CASES = [
    # ------------------------------------------------------------------ geometry
    ("circle-theta-list", lambda e: geo.circle([0.1]), TypeError, "theta"),
    ("circle-theta-shape", lambda e: geo.circle(torch.zeros(3, 2)), ValueError, "theta"),
    ("circle-theta-int", lambda e: geo.circle(torch.zeros(3, 1, dtype=torch.long)), TypeError, "theta"),
    ("circle-radius-0", lambda e: geo.circle(torch.zeros(1), radius=0.0), ValueError, "radius"),
    ("circle-radius-nan", lambda e: geo.circle(torch.zeros(1), radius=NAN), ValueError, "radius"),
    ("sphere-uv-int", lambda e: geo.sphere(torch.zeros(2, dtype=torch.long)), TypeError, "uv"),
    ("sphere-uv-3", lambda e: geo.sphere(torch.zeros(3)), ValueError, "uv"),
    ("sphere-radius-neg", lambda e: geo.sphere(torch.zeros(2), radius=-1.0), ValueError, "radius"),
    ("sphere-radius-str", lambda e: geo.sphere(torch.zeros(2), radius="1"), TypeError, "radius"),
    ("torus-R-inf", lambda e: geo.torus(torch.zeros(2), R=INF), ValueError, "R must"),
    ("torus-r-0", lambda e: geo.torus(torch.zeros(2), r=0.0), ValueError, "r must"),
    ("swiss-uv-1", lambda e: geo.swiss_roll(torch.zeros(1)), ValueError, "uv"),
    ("mlp-in-0", lambda e: geo.random_mlp(0, 2), ValueError, "in_dim"),
    ("mlp-out-bool", lambda e: geo.random_mlp(2, True), TypeError, "out_dim"),
    ("mlp-hidden-float", lambda e: geo.random_mlp(2, 2, hidden=2.5), TypeError, "hidden"),
    ("mlp-depth-neg", lambda e: geo.random_mlp(2, 2, depth=-1), ValueError, "depth"),
    ("mlp-seed-neg", lambda e: geo.random_mlp(2, 2, seed=-1), ValueError, "seed"),
    ("mlp-x-shape", lambda e: e.mlp(torch.zeros(4, dtype=torch.float64)), ValueError, "x must"),
    ("jacobian-f", lambda e: geo.jacobian(5, e.f64), TypeError, "f must"),
    ("jacobian-x-nan", lambda e: geo.jacobian(e.mlp, e.f64 * NAN), ValueError, "x contains"),
    ("jacobian-x-numpy", lambda e: geo.jacobian(e.mlp, np.zeros(5)), TypeError, "x must"),
    ("jacobian-x-huge", lambda e: geo.jacobian(torch.sin, torch.zeros(5000)), ValueError, "x has 5000"),
    ("pullback-x-int", lambda e: geo.pullback_metric(e.mlp, torch.zeros(5, dtype=torch.long)), TypeError, "x must"),
    ("pullback-x-huge", lambda e: geo.pullback_metric(torch.sin, torch.zeros(5000)), ValueError, "x has 5000"),
    ("tangent-norm-v-nan", lambda e: geo.tangent_norm(e.mlp, e.f64, e.f64 * NAN), ValueError, "v contains"),
    ("tangent-norm-v-shape", lambda e: geo.tangent_norm(e.mlp, e.f64, torch.zeros(4, dtype=torch.float64)),
     ValueError, "tangent vector"),
    ("tangent-angle-w-none", lambda e: geo.tangent_angle(e.mlp, e.f64, e.f64, None), TypeError, "w must"),
    ("tangent-angle-zero", lambda e: geo.tangent_angle(e.mlp, e.f64, e.f64, e.f64 + 1), ValueError, "v or w"),
    ("curve-length-1pt", lambda e: geo.curve_length(torch.zeros(1, 2)), ValueError, "path"),
    ("curve-length-nan", lambda e: geo.curve_length(torch.full((3, 2), NAN)), ValueError, "path"),
    ("curve-energy-list", lambda e: geo.curve_energy([[0.0], [1.0]]), TypeError, "path"),
    ("curve-length-f", lambda e: geo.curve_length(torch.zeros(3, 2), f="sphere"), TypeError, "f must"),
    ("geodesic-n-1", lambda e: geo.discrete_geodesic(geo.sphere, torch.ones(2), torch.ones(2), n_points=1),
     ValueError, "n_points"),
    ("geodesic-n-float", lambda e: geo.discrete_geodesic(geo.sphere, torch.ones(2), torch.ones(2), n_points=4.0),
     TypeError, "n_points"),
    ("geodesic-steps-neg", lambda e: geo.discrete_geodesic(geo.sphere, torch.ones(2), torch.ones(2), steps=-1),
     ValueError, "steps"),
    ("geodesic-tol-nan", lambda e: geo.discrete_geodesic(geo.sphere, torch.ones(2), torch.ones(2), tol=NAN),
     ValueError, "tol"),
    ("geodesic-x1-shape", lambda e: geo.discrete_geodesic(geo.sphere, torch.ones(2), torch.ones(3)),
     ValueError, "x0 and x1"),
    ("geodesic-init-shape", lambda e: geo.discrete_geodesic(geo.sphere, torch.ones(2), torch.ones(2), n_points=4,
                                                            init=torch.ones(3, 2)), ValueError, "init"),
    ("geodesic-init-nan", lambda e: geo.discrete_geodesic(geo.sphere, torch.ones(2), torch.ones(2), n_points=3,
                                                          init=torch.full((3, 2), NAN)), ValueError, "init"),
    ("transport-v-shape", lambda e: geo.parallel_transport(geo.sphere, torch.ones(3, 2), torch.ones(3)),
     ValueError, "v must"),
    ("transport-v-zero", lambda e: geo.parallel_transport(geo.sphere, torch.ones(3, 2), torch.zeros(2)),
     ValueError, "v has zero length"),
    ("transport-f", lambda e: geo.parallel_transport(None, torch.ones(3, 2), torch.ones(2)), TypeError, "f must"),
    ("shooting-n-0", lambda e: geo.geodesic_shooting(geo.sphere, torch.ones(2), torch.ones(2), 0, 0.1),
     ValueError, "n_steps"),
    ("shooting-step-nan", lambda e: geo.geodesic_shooting(geo.sphere, torch.ones(2), torch.ones(2), 3, NAN),
     ValueError, "step_size"),
    ("shooting-step-neg", lambda e: geo.geodesic_shooting(geo.sphere, torch.ones(2), torch.ones(2), 3, -0.1),
     ValueError, "step_size"),
    ("shooting-v0-shape", lambda e: geo.geodesic_shooting(geo.sphere, torch.ones(2), torch.ones(3), 3, 0.1),
     ValueError, "v0"),
    ("shooting-v0-null", lambda e: geo.geodesic_shooting(lambda z: z * 0, torch.ones(2), torch.ones(2), 3, 0.1),
     ValueError, "v0 has zero length"),
    ("lerp-shapes", lambda e: geo.lerp(torch.zeros(2), torch.zeros(3), 0.5), ValueError, "a and b"),
    ("lerp-t-nan", lambda e: geo.lerp(torch.zeros(2), torch.ones(2), NAN), ValueError, "t contains"),
    ("lerp-t-2d", lambda e: geo.lerp(torch.zeros(2), torch.ones(2), torch.zeros(2, 2)), ValueError, "t must"),
    ("lerp-a-list", lambda e: geo.lerp([0.0], torch.ones(1), 0.5), TypeError, "a must"),
    ("slerp-zero", lambda e: geo.slerp(torch.zeros(2), torch.ones(2), 0.5), ValueError, "a and b"),
    ("slerp-opposite", lambda e: geo.slerp(torch.ones(2), -torch.ones(2), 0.5), ValueError, "a and b"),
    ("slerp-b-inf", lambda e: geo.slerp(torch.ones(2), torch.full((2,), INF), 0.5), ValueError, "b contains"),
    # ------------------------------------------------------------------ spectral
    ("lb-method", lambda e: local_basis(e.mlp, e.f64, 2, method="svd"), ValueError, "method"),
    ("lb-f", lambda e: local_basis("mlp", e.f64, 2), TypeError, "f must"),
    ("lb-x-list", lambda e: local_basis(e.mlp, [0.0] * 5, 2), TypeError, "x must"),
    ("lb-x-int", lambda e: local_basis(e.mlp, torch.zeros(5, dtype=torch.long), 2), TypeError, "x must"),
    ("lb-x-half", lambda e: local_basis(e.mlp, torch.zeros(5, dtype=torch.float16), 2), TypeError, "x must"),
    ("lb-x-nan", lambda e: local_basis(e.mlp, e.f64 * NAN, 2), ValueError, "x contains"),
    ("lb-x-empty", lambda e: local_basis(torch.sin, torch.zeros(0, dtype=torch.float64), 1), ValueError, "x is empty"),
    ("lb-k-0", lambda e: local_basis(e.mlp, e.f64, 0), ValueError, "k must"),
    ("lb-k-float", lambda e: local_basis(e.mlp, e.f64, 2.0), TypeError, "k must"),
    ("lb-k-bool", lambda e: local_basis(e.mlp, e.f64, True), TypeError, "k must"),
    ("lb-k-big", lambda e: local_basis(e.mlp, e.f64, 6), ValueError, "k must"),
    ("lb-tol-inf", lambda e: local_basis(e.mlp, e.f64, 2, tol=INF), ValueError, "tol"),
    ("lb-tol-0", lambda e: local_basis(e.mlp, e.f64, 2, tol=0.0), ValueError, "tol"),
    ("lb-tol-neg", lambda e: local_basis(e.mlp, e.f64, 2, tol=-1e-4), ValueError, "tol"),
    ("lb-tol-nan", lambda e: local_basis(e.mlp, e.f64, 2, tol=NAN), ValueError, "tol"),
    ("lb-tol-1", lambda e: local_basis(e.mlp, e.f64, 2, tol=1.0), ValueError, "tol"),
    ("lb-tol-str", lambda e: local_basis(e.mlp, e.f64, 2, tol="1e-4"), TypeError, "tol"),
    ("lb-max-iter-0", lambda e: local_basis(e.mlp, e.f64, 2, max_iter=0), ValueError, "max_iter"),
    ("lb-oversample-neg", lambda e: local_basis(e.mlp, e.f64, 2, oversample=-1), ValueError, "oversample"),
    ("lb-block-0", lambda e: local_basis(e.mlp, e.f64, 2, block=0), ValueError, "block"),
    ("lb-seed-neg", lambda e: local_basis(e.mlp, e.f64, 2, seed=-1), ValueError, "seed"),
    ("lb-chunk-0", lambda e: local_basis(e.mlp, e.f64, 2, chunk_size=0), ValueError, "chunk_size"),
    ("lb-progress-str", lambda e: local_basis(e.mlp, e.f64, 2, progress="yes"), TypeError, "progress"),
    ("lb-f-tuple", lambda e: local_basis(lambda z: (z, z), e.f64, 2), TypeError, "f(x)"),
    ("lb-f-nan", lambda e: local_basis(lambda z: torch.log(z - 1.0), e.f64, 2), ValueError, "f(x)"),
    ("lb-detach", lambda e: local_basis(lambda z: e.mlp(z.detach()), e.f64, 2), ValueError, "f does not depend"),
    ("lb-detach-exact", lambda e: local_basis(lambda z: e.mlp(z.detach()), e.f64, 2, method="exact"),
     ValueError, "f does not depend"),
    ("lb-argmax", lambda e: local_basis(lambda z: e.mlp(z).argmax()[None], e.f64, 1), ValueError, "f does not depend"),
    ("lb-constant", lambda e: local_basis(lambda z: torch.ones(3, dtype=z.dtype), e.f64, 1), ValueError,
     "f does not depend"),
    ("lb-round", lambda e: local_basis(lambda z: _round(e.mlp(z)), e.f64, 2), ValueError, "f does not vary"),
    ("lb-round-power", lambda e: local_basis(lambda z: _round(e.mlp(z)), e.f64, 2, method="power"), ValueError,
     "f does not vary"),
    ("lb-round-exact", lambda e: local_basis(lambda z: _round(e.mlp(z)), e.f64, 2, method="exact"), ValueError,
     "f does not vary"),
    ("lb-times-zero", lambda e: local_basis(lambda z: 0.0 * e.mlp(z), e.f64, 2), ValueError, "f does not vary"),
    ("lb-batch-of-two", lambda e: local_basis(h_space(e.model, 600), e.x.expand(2, -1, -1, -1).clone(), 2),
     ValueError, "x has shape"),
    ("lb-unet-x-float64", lambda e: local_basis(h_space(e.model, 600), e.x.double(), 2), TypeError, "x is"),
    ("jvps-V-shape", lambda e: jvps(e.mlp, e.f64, torch.zeros(2, 4, dtype=torch.float64)), ValueError, "V must"),
    ("jvps-V-dtype", lambda e: jvps(e.mlp, e.f64, torch.zeros(2, 5)), TypeError, "V must"),
    ("vjps-U-shape", lambda e: vjps(e.mlp, e.f64, torch.zeros(2, 5, dtype=torch.float64)), ValueError, "U must"),
    ("vjps-U-list", lambda e: vjps(e.mlp, e.f64, [[0.0] * 7]), TypeError, "U must"),
    ("angles-shapes", lambda e: principal_angles(torch.zeros(2, 3), torch.zeros(2, 4)), ValueError, "A and B"),
    ("angles-A-list", lambda e: principal_angles([[1.0]], torch.zeros(1, 1)), TypeError, "A must"),
    ("angles-B-nan", lambda e: principal_angles(torch.eye(2), torch.full((1, 2), NAN)), ValueError, "B contains"),
    ("distance-empty", lambda e: subspace_distance(torch.zeros(0, 3), torch.eye(3)), ValueError, "A and B"),
    # ------------------------------------------------------------------ loading
    ("load-int", lambda e: load_model(123), TypeError, "name_or_path"),
    ("load-not-id", lambda e: load_model("no such model"), ModelUnavailableError, "name_or_path"),
    ("load-empty-dir", lambda e: load_model(e.files.empty_dir), ModelUnavailableError, "empty_dir"),
    ("load-vae", lambda e: load_model(e.files.vae), ModelUnavailableError, "AutoencoderKL"),
    ("load-half-weights", lambda e: load_model(e.files.half), ModelUnavailableError, "missing"),
    ("load-extra-weights", lambda e: load_model(e.files.extra), ModelUnavailableError, "unexpected"),
    ("load-nan-weights", lambda e: load_model(e.files.nan), ModelUnavailableError, "NaN"),
    ("load-bad-json", lambda e: load_model(e.files.bad_json), ModelUnavailableError, "bad_json"),
    ("load-bin-only", lambda e: load_model(e.files.no_st), ModelUnavailableError, "safetensors"),
    ("load-unet-changed", lambda e: load_model(e.latest.unet["changed"]), ModelUnavailableError,
     "diffusion_pytorch_model.safetensors differs"),
    ("load-unet-truncated", lambda e: load_model(e.latest.unet["truncated"]), ModelUnavailableError, "truncated"),
    ("load-sd-changed", lambda e: load_model(e.latest.sd_damaged["changed"]), ModelUnavailableError,
     "text_encoder/model.safetensors differs"),
    ("load-sd-truncated", lambda e: load_model(e.latest.sd_damaged["truncated"]), ModelUnavailableError,
     "truncated"),
    ("load-device-gpu", lambda e: load_model(e.tiny_dir, device="gpu"), ValueError, "device"),
    ("load-device-int", lambda e: load_model(e.tiny_dir, device=[0]), TypeError, "device"),
    pytest.param("load-device-cuda", lambda e: load_model(e.tiny_dir, device="cuda"), RuntimeError, "device",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
    ("load-dtype-int", lambda e: load_model(e.tiny_dir, dtype=torch.int64), TypeError, "dtype"),
    ("load-dtype-str", lambda e: load_model(e.tiny_dir, dtype="float32"), TypeError, "dtype"),
    # ------------------------------------------------------------------ diffusion
    ("noise-batch-0", lambda e: sample_noise(e.model, 0), ValueError, "batch"),
    ("noise-batch-float", lambda e: sample_noise(e.model, 2.5), TypeError, "batch"),
    ("noise-seed-neg", lambda e: sample_noise(e.model, 1, seed=-1), ValueError, "seed"),
    ("ddim-steps-0", lambda e: e.model.ddim(0), ValueError, "num_steps"),
    ("ddim-steps-big", lambda e: e.model.ddim(5000), ValueError, "num_steps"),
    ("timesteps-str", lambda e: e.model.timesteps("10"), TypeError, "num_steps"),
    ("sample-x-shape", lambda e: ddim_sample(e.model, e.x[0]), ValueError, "x must"),
    ("sample-x-nan", lambda e: ddim_sample(e.model, e.x * NAN), ValueError, "x contains"),
    ("sample-x-empty", lambda e: ddim_sample(e.model, e.x[:0]), ValueError, "x is"),
    ("sample-x-float64", lambda e: ddim_sample(e.model, e.x.double()), TypeError, "x is"),
    ("sample-x-numpy", lambda e: ddim_sample(e.model, e.x.numpy()), TypeError, "x must"),
    ("sample-eta-neg", lambda e: ddim_sample(e.model, e.x, 10, eta=-0.5), ValueError, "eta"),
    ("sample-eta-nan", lambda e: ddim_sample(e.model, e.x, 10, eta=NAN), ValueError, "eta"),
    ("sample-eta-2", lambda e: ddim_sample(e.model, e.x, 10, eta=2.0), ValueError, "eta"),
    ("sample-eta-below", lambda e: ddim_sample(e.model, e.x, 10, eta_below=5000), ValueError, "eta_below"),
    ("sample-t-from", lambda e: ddim_sample(e.model, e.x, 10, t_from=1000), ValueError, "t_from"),
    ("sample-t-to", lambda e: ddim_sample(e.model, e.x, 10, t_from=100, t_to=500), ValueError, "t_to"),
    ("sample-t-to-float", lambda e: ddim_sample(e.model, e.x, 10, t_to=2.5), ValueError, "t_to"),
    ("sample-steps-0", lambda e: ddim_sample(e.model, e.x, 0), ValueError, "num_steps"),
    ("sample-seed-str", lambda e: ddim_sample(e.model, e.x, 10, seed="0"), TypeError, "seed"),
    ("sample-shared-str", lambda e: ddim_sample(e.model, e.x, 10, shared_noise="yes"), TypeError, "shared_noise"),
    ("invert-off-schedule", lambda e: ddim_invert(e.model, e.x, t_to=333, num_steps=10), ValueError, "t_to"),
    ("invert-x0-shape", lambda e: ddim_invert(e.model, e.x[0], t_to=600, num_steps=10), ValueError, "x0"),
    ("h-t-1000", lambda e: h_space(e.model, 1000), ValueError, "t must"),
    ("h-t-frac", lambda e: h_space(e.model, 2.5), ValueError, "t must"),
    ("h-t-str", lambda e: h_space(e.model, "600"), TypeError, "t must"),
    ("h-layer-9", lambda e: h_space(e.model, 600, layer="down.9"), ValueError, "layer"),
    ("h-layer-int", lambda e: h_space(e.model, 600, layer=3), TypeError, "layer"),
    ("h-x-shape", lambda e: h_space(e.model, 600)(e.x[0]), ValueError, "x must"),
    ("h-x-dtype", lambda e: h_space(e.model, 600)(e.x.double()), TypeError, "x is"),
    ("tweedie-t-neg", lambda e: posterior_mean(e.model, -1), ValueError, "t must"),
    # ------------------------------------------------------------------ editing: samples and bases
    ("sample-at-seed", lambda e: sample_at(e.model, -1, 600, 10), ValueError, "seed"),
    ("sample-at-off-schedule", lambda e: sample_at(e.model, 0, 650, 10), ValueError, "t=650"),
    ("sample-at-steps-0", lambda e: sample_at(e.model, 0, 600, 0), ValueError, "num_steps"),
    ("sample-at-t-big", lambda e: sample_at(e.model, 0, 5000, 10), ValueError, "t must"),
    ("invert-image-shape", lambda e: invert_image(e.model, e.x[0], 600, 10), ValueError, "image"),
    ("invert-image-nan", lambda e: invert_image(e.model, e.x * NAN, 600, 10), ValueError, "image"),
    ("invert-image-batch", lambda e: invert_image(e.model, torch.cat([e.x, e.x]), 600, 10), ValueError, "image"),
    ("invert-off-schedule-t", lambda e: invert_image(e.model, e.x, 650, 10), ValueError, "t=650"),
    ("timestep-at-1.5", lambda e: timestep_at(e.model, 1.5), ValueError, "fraction"),
    ("timestep-at-nan", lambda e: timestep_at(e.model, NAN), ValueError, "fraction"),
    ("timestep-at-str", lambda e: timestep_at(e.model, "0.5"), TypeError, "fraction"),
    ("save-reserved", lambda e: save_basis(e.basis, e.files.root / "b.safetensors", {"method": "mine"}),
     ValueError, "reserved"),
    ("save-reserved-n-jvp", lambda e: save_basis(e.basis, e.files.root / "b.safetensors", {"n_jvp": 0}),
     ValueError, "n_jvp"),
    ("save-metadata-list", lambda e: save_basis(e.basis, e.files.root / "b.safetensors", ["a"]), TypeError,
     "metadata"),
    ("save-metadata-key", lambda e: save_basis(e.basis, e.files.root / "b.safetensors", {1: "a"}), TypeError,
     "metadata keys"),
    ("save-basis-type", lambda e: save_basis(e.basis.v, e.files.root / "b.safetensors"), TypeError, "basis"),
    ("save-path-dir", lambda e: save_basis(e.basis, e.files.empty_dir), IsADirectoryError, "path"),
    ("save-path-none", lambda e: save_basis(e.basis, None), TypeError, "path"),
    ("load-basis-missing", lambda e: load_basis(e.files.root / "nope.safetensors"), FileNotFoundError, "nope"),
    ("load-basis-corrupt", lambda e: load_basis(e.files.corrupt_st), ValueError, "corrupt.safetensors"),
    ("load-basis-other", lambda e: load_basis(e.files.not_basis), ValueError, "not_a_basis"),
    ("basis-k-0", lambda e: sample_basis(e.model, e.sample, 0), ValueError, "k must"),
    ("basis-method", lambda e: sample_basis(e.model, e.sample, 2, method="fast"), ValueError, "method"),
    ("basis-tol-inf", lambda e: sample_basis(e.model, e.sample, 2, tol=INF), ValueError, "tol"),
    ("basis-sample-type", lambda e: sample_basis(e.model, e.x, 2), TypeError, "sample"),
    ("basis-sample-batch", lambda e: sample_basis(e.model, _hand_sample(e, x_t=e.x.expand(2, -1, -1, -1)), 2),
     ValueError, "sample.x_t"),
    ("basis-off-schedule", lambda e: sample_basis(e.model, _hand_sample(e, t=650), 2), ValueError, "t=650"),
    ("basis-bad-option", lambda e: sample_basis(e.model, e.sample, 2, tolerance=1e-3), TypeError, "tolerance"),
    # ------------------------------------------------------------------ editing: edits
    ("naive-v-zero", lambda e: naive_edit(e.model, e.x, 600, torch.zeros_like(e.v), 1.0), ValueError, "v is zero"),
    ("naive-v-nan", lambda e: naive_edit(e.model, e.x, 600, e.v * NAN, 1.0), ValueError, "v contains"),
    ("naive-v-shape", lambda e: naive_edit(e.model, e.x, 600, e.v[..., :4], 1.0), ValueError, "v must"),
    ("naive-v-two", lambda e: naive_edit(e.model, e.x, 600, e.basis.v[:, 0], 1.0), ValueError, "v must"),
    ("naive-strength-nan", lambda e: naive_edit(e.model, e.x, 600, e.v, NAN), ValueError, "strength"),
    ("naive-strength-str", lambda e: naive_edit(e.model, e.x, 600, e.v, "1"), TypeError, "strength"),
    ("naive-x-batch", lambda e: naive_edit(e.model, torch.cat([e.x, e.x]), 600, e.v, 1.0), ValueError, "x_t"),
    ("guidance-delta-0", lambda e: x_space_guidance(e.model, e.x, 600, e.v, 1.0, delta=0.0), ValueError, "delta"),
    ("guidance-delta-nan", lambda e: x_space_guidance(e.model, e.x, 600, e.v, 1.0, delta=NAN), ValueError, "delta"),
    ("guidance-delta-neg", lambda e: x_space_guidance(e.model, e.x, 600, e.v, 1.0, delta=-1.0), ValueError, "delta"),
    ("guidance-n-iter-neg", lambda e: x_space_guidance(e.model, e.x, 600, e.v, 1.0, n_iter=-1), ValueError, "n_iter"),
    ("guidance-n-iter-float", lambda e: x_space_guidance(e.model, e.x, 600, e.v, 1.0, n_iter=1.5), TypeError,
     "n_iter"),
    ("guidance-strength-2d", lambda e: x_space_guidance(e.model, e.x, 600, e.v, torch.ones(2, 2)), ValueError,
     "strength"),
    ("guidance-t-big", lambda e: x_space_guidance(e.model, e.x, 1000, e.v, 1.0), ValueError, "t must"),
    ("edit-v-zero", lambda e: edit(e.model, e.sample, torch.zeros_like(e.v), [1.0]), ValueError, "v is zero"),
    ("edit-delta-0", lambda e: edit(e.model, e.sample, e.v, [1.0], delta=0), ValueError, "delta"),
    ("edit-boost-1.5", lambda e: edit(e.model, e.sample, e.v, [1.0], boost_below=1.5), ValueError, "boost_below"),
    ("edit-boost-neg", lambda e: edit(e.model, e.sample, e.v, [1.0], boost_below=-0.1), ValueError, "boost_below"),
    ("edit-boost-nan", lambda e: edit(e.model, e.sample, e.v, [1.0], boost_below=NAN), ValueError, "boost_below"),
    ("edit-off-schedule", lambda e: edit(e.model, _hand_sample(e, t=650), e.v, [1.0]), ValueError, "t=650"),
    ("edit-t-big", lambda e: edit(e.model, _hand_sample(e, t=5000), e.v, [1.0]), ValueError, "t must"),
    ("edit-steps-0", lambda e: edit(e.model, _hand_sample(e, num_steps=0), e.v, [1.0]), ValueError, "num_steps"),
    ("edit-seed-neg", lambda e: edit(e.model, _hand_sample(e, seed=-5), e.v, [1.0]), ValueError, "sample.seed"),
    ("edit-x-nan", lambda e: edit(e.model, _hand_sample(e, x_t=e.x * NAN), e.v, [1.0]), ValueError, "sample.x_t"),
    ("edit-strengths-inf", lambda e: edit(e.model, e.sample, e.v, [1.0, INF]), ValueError, "strengths"),
    ("edit-strengths-empty", lambda e: edit(e.model, e.sample, e.v, []), ValueError, "strengths"),
    ("edit-strengths-none", lambda e: edit(e.model, e.sample, e.v, None), TypeError, "strengths"),
    ("edit-method", lambda e: edit(e.model, e.sample, e.v, [1.0], method="magic"), ValueError, "method"),
    ("edit-naive-options", lambda e: edit(e.model, e.sample, e.v, [1.0], method="naive", delta=1.0), ValueError,
     "naive edit takes no options"),
    ("edit-n-iter-huge", lambda e: edit(e.model, e.sample, e.v, [1.0], n_iter=10**9), ValueError, "n_iter"),
    ("transport-orthogonal", lambda e: transport_direction(e.basis, e.other, _orthogonal(e.basis)), ValueError,
     "orthogonal to span(V_A)"),
    ("transport-zero", lambda e: transport_direction(e.basis, e.other, torch.zeros_like(e.v)), ValueError, "v is zero"),
    ("transport-v-size", lambda e: transport_direction(e.basis, e.other, torch.ones(3)), ValueError, "v must"),
    ("transport-v-nan", lambda e: transport_direction(e.basis, e.other, e.v * NAN), ValueError, "v contains"),
    ("transport-b-type", lambda e: transport_direction(e.basis, e.other.v, e.v), TypeError, "basis_b"),
    ("transport-mismatch", lambda e: transport_direction(e.basis, _toy_basis(), e.v), ValueError,
     "basis_a and basis_b"),
    ("global-empty", lambda e: global_directions([]), TypeError, "bases"),
    ("global-k-0", lambda e: global_directions([e.basis, e.other], k=0), ValueError, "k must"),
    ("global-k-big", lambda e: global_directions([e.basis], k=100), ValueError, "k must"),
    ("global-mixed", lambda e: global_directions([e.basis, _toy_basis()]), ValueError, "bases"),
    ("interp-n-1", lambda e: interpolate(e.model, e.sample, e.sample, n=1), ValueError, "n must"),
    ("interp-method", lambda e: interpolate(e.model, e.sample, e.sample, method="cubic"), ValueError, "method"),
    ("interp-t-differ", lambda e: interpolate(e.model, e.sample, _hand_sample(e, t=500)), ValueError, "a and b"),
    ("interp-steps-neg", lambda e: interpolate(e.model, e.sample, e.sample, method="geodesic", geodesic_steps=-1),
     ValueError, "geodesic_steps"),
    # ------------------------------------------------------------------ measures, data, classifier
    ("ink-list", lambda e: measures.ink_mass([[0.0]]), TypeError, "images"),
    ("ink-3d", lambda e: measures.ink_mass(torch.zeros(1, 28, 28)), ValueError, "images"),
    ("ink-int", lambda e: measures.ink_mass(torch.zeros(1, 1, 28, 28, dtype=torch.uint8)), TypeError, "images"),
    ("ink-nan", lambda e: measures.ink_mass(torch.full((1, 1, 8, 8), NAN)), ValueError, "images"),
    ("ink-empty", lambda e: measures.ink_mass(torch.zeros(0, 1, 8, 8)), ValueError, "images"),
    ("ink-255", lambda e: measures.ink_mass(torch.full((1, 1, 8, 8), 255.0)), ValueError, "images"),
    ("slant-rgb", lambda e: measures.slant(torch.zeros(1, 3, 8, 8)), ValueError, "images"),
    ("measures-inf", lambda e: measures.digit_measures(torch.full((1, 1, 8, 8), INF)), ValueError, "images"),
    ("read-missing", lambda e: read_image(e.files.root / "missing.png", (1, 8, 8)), FileNotFoundError, "missing.png"),
    ("read-dir", lambda e: read_image(e.files.empty_dir, (1, 8, 8)), FileNotFoundError, "empty_dir"),
    ("read-corrupt", lambda e: read_image(e.files.corrupt, (1, 8, 8)), ValueError, "corrupt.png"),
    ("read-text", lambda e: read_image(e.files.text, (1, 8, 8)), ValueError, "text.png"),
    ("read-size", lambda e: read_image(e.files.wrong_size, (1, 8, 8)), ValueError, "wrong_size.png"),
    ("read-bomb", lambda e: read_image(_bomb(e.files.root), (1, 28, 28)), ValueError, "bomb.png"),
    ("read-path-int", lambda e: read_image(3, (1, 8, 8)), TypeError, "path"),
    ("read-shape-2", lambda e: read_image(e.files.ok8, (8, 8)), TypeError, "shape"),
    ("read-shape-channels", lambda e: read_image(e.files.ok8, (2, 8, 8)), ValueError, "channels"),
    ("read-shape-huge", lambda e: read_image(e.files.ok8, (1, 10**6, 8)), ValueError, "height"),
    ("read-alpha-only", lambda e: read_image(_alpha_only(e.files.root), (1, 8, 8)), ValueError, "alpha_only.png"),
    ("digits-11", lambda e: load_digits([11]), ValueError, "digits"),
    ("digits-str", lambda e: load_digits("3"), TypeError, "digits"),
    ("digits-limit-0", lambda e: load_digits(limit=0), ValueError, "limit"),
    ("batches-0", lambda e: batches(torch.zeros(4, 1), 0, torch.Generator()), ValueError, "batch_size"),
    ("batches-too-big", lambda e: batches(torch.zeros(4, 1), 5, torch.Generator()), ValueError, "batch_size"),
    ("unit-range-list", lambda e: to_unit_range([0, 255]), TypeError, "images"),
    ("classify-shape", lambda e: classify(torch.zeros(1, 1, 8, 8)), ValueError, "images"),
    ("classify-nan", lambda e: classify(torch.full((1, 1, 28, 28), NAN)), ValueError, "images"),
    ("classify-batch-0", lambda e: classify(torch.zeros(1, 1, 28, 28), batch_size=0), ValueError, "batch_size"),
    ("classify-model-type", lambda e: classify(torch.zeros(1, 1, 28, 28), classifier="cnn"), TypeError, "classifier"),
    ("classifier-missing", lambda e: load_classifier(e.files.empty_dir), FileNotFoundError, "empty_dir"),
    ("classifier-channels", lambda e: DigitClassifier((16, 0, 8)), ValueError, "channels"),
    # ------------------------------------------------------------------ command line (usage errors, exit 2)
    ("cli-fraction-2", _cli("--fraction", "2.0"), SystemExit, "--fraction"),
    ("cli-fraction-nan", _cli("--fraction", "nan"), SystemExit, "--fraction"),
    ("cli-fraction-word", _cli("--fraction", "half"), SystemExit, "--fraction"),
    ("cli-fraction-neg", _cli("--fraction", "-0.1"), SystemExit, "--fraction"),
    ("cli-t-renamed", _cli("--t", "0.6"), SystemExit, "renamed: use --fraction"),
    ("cli-steps-0", _cli("--steps", "0"), SystemExit, "--steps"),
    ("cli-steps-big", _cli("--steps", "5000"), SystemExit, "--steps"),
    ("cli-steps-float", _cli("--steps", "2.5"), SystemExit, "--steps"),
    ("cli-k-0", _cli("--k", "0"), SystemExit, "--k"),
    ("cli-k-huge", _cli("--k", "1000000"), SystemExit, "--k"),
    ("cli-columns-1", _cli("--columns", "1"), SystemExit, "--columns"),
    ("cli-columns-huge", _cli("--columns", "100000000"), SystemExit, "--columns"),
    ("cli-strength-nan", _cli("--strength", "nan"), SystemExit, "--strength"),
    ("cli-strength-inf", _cli("--strength", "inf"), SystemExit, "--strength"),
    ("cli-strength-0", _cli("--strength", "0"), SystemExit, "--strength"),
    ("cli-strength-neg", _cli("--strength", "-1"), SystemExit, "--strength"),
    ("cli-seed-neg", _cli("--seed", "-1"), SystemExit, "--seed"),
    ("cli-seed-word", _cli("--seed", "zero"), SystemExit, "--seed"),
    ("cli-image-missing", lambda e: _cli("--image", str(e.files.root / "none.png"))(e), SystemExit, "--image"),
    ("cli-image-dir", lambda e: _cli("--image", str(e.files.empty_dir))(e), SystemExit, "--image"),
    ("cli-image-corrupt", lambda e: _cli("--image", str(e.files.corrupt))(e), SystemExit, "--image"),
    ("cli-image-size", lambda e: _cli("--image", str(e.files.wrong_size))(e), SystemExit, "--image"),
    ("cli-out-under-file", lambda e: _cli(out=e.files.a_file / "sub")(e), SystemExit, "--out"),
    ("cli-out-is-file", lambda e: _cli(out=e.files.a_file)(e), SystemExit, "--out"),
    ("cli-method", _cli("--method", "fast"), SystemExit, "--method"),
    ("cli-device-gpu", _cli("--device", "gpu"), SystemExit, "--device"),
    pytest.param("cli-device-cuda", _cli("--device", "cuda"), SystemExit, "--device",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
    ("cli-model-missing", _cli("--model", "/no/such/folder"), SystemExit, "--model"),
    ("cli-model-vae", lambda e: _cli("--model", str(e.files.vae))(e), SystemExit, "--model"),
    ("cli-model-half", lambda e: _cli("--model", str(e.files.half))(e), SystemExit, "--model"),
    ("cli-unknown-flag", _cli("--colums", "3"), SystemExit, "--colums"),
    ("cli-analyze-device-gpu", lambda e: cli(["analyze", "--device", "gpu", "--out", str(e.files.root / "an")]),
     SystemExit, "--device"),
    # ------------------------------------------------------------------ worlds (sizes bounded before allocating)
    ("factors-n-huge", lambda e: sample_factors(10**10), ValueError, "n must"),
    ("factors-n-0", lambda e: sample_factors(0), ValueError, "n must"),
    ("factors-n-float", lambda e: sample_factors(2.5), TypeError, "n must"),
    ("factors-n-str", lambda e: sample_factors("4"), TypeError, "n must"),
    ("factors-seed-neg", lambda e: sample_factors(3, seed=-1), ValueError, "seed"),
    ("factors-seed-float", lambda e: sample_factors(3, seed=0.5), TypeError, "seed"),
    ("render-size-huge", lambda e: render(e.newer.factors, size=100_000), ValueError, "size"),
    ("render-size-3", lambda e: render(e.newer.factors, size=3), ValueError, "size"),
    ("render-size-float", lambda e: render(e.newer.factors, size=32.0), TypeError, "size"),
    ("render-supersample-huge", lambda e: render(e.newer.factors, supersample=10_000), ValueError, "supersample"),
    ("render-supersample-0", lambda e: render(e.newer.factors, supersample=0), ValueError, "supersample"),
    ("render-200k-scenes", lambda e: render(sample_factors(200_000)), ValueError, "200000 scenes"),
    ("render-big-at-size", lambda e: render(e.newer.factors, size=1024, supersample=16), ValueError,
     "one scene alone"),
    ("render-factors-list", lambda e: render([0.5]), TypeError, "factors"),
    ("render-factor-missing", lambda e: render(_without(e.newer.factors, "shape")), ValueError, "missing"),
    ("render-factor-unknown", lambda e: render(_with(e.newer.factors, colour=torch.zeros(3))), ValueError, "colour"),
    ("render-factor-range", lambda e: render(_with(e.newer.factors, scale=torch.full((3,), 5.0))), ValueError, "scale"),
    ("render-factor-nan", lambda e: render(_with(e.newer.factors, rotation=torch.full((3,), NAN))), ValueError,
     "rotation"),
    ("render-factor-lengths", lambda e: render(_with(e.newer.factors, scale=torch.full((2,), 0.3))), ValueError,
     "scale"),
    ("render-shape-float", lambda e: render(_with(e.newer.factors, shape=torch.zeros(3))), ValueError, "shape"),
    ("render-factor-numpy", lambda e: render(_with(e.newer.factors, scale=np.full(3, 0.3))), ValueError, "scale"),
    # ------------------------------------------------------------------ readout: loading, reading, scoring, training
    ("readout-load-nan", lambda e: load_readout(e.newer.readout_damaged["nan"]), ValueError, "NaN"),
    ("readout-load-json", lambda e: load_readout(e.newer.readout_damaged["json"]), ValueError, "config.json"),
    ("readout-load-truncated", lambda e: load_readout(e.newer.readout_damaged["truncated"]), ValueError,
     "model.safetensors"),
    ("readout-load-other", lambda e: load_readout(e.newer.readout_damaged["other"]), ValueError, "does not fit"),
    ("readout-load-missing", lambda e: load_readout(e.files.empty_dir), FileNotFoundError, "python -m labkit.readout"),
    ("readout-load-int", lambda e: load_readout(3), TypeError, "path"),
    ("readout-channels", lambda e: FactorReadout((16, 32)), ValueError, "channels"),
    ("readout-hidden-0", lambda e: FactorReadout(hidden=0), ValueError, "hidden"),
    ("read-uint8", lambda e: read_factors(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)), TypeError, "images"),
    ("read-0-255", lambda e: read_factors(torch.full((2, 3, 32, 32), 200.0)), ValueError, "outside [-1, 1]"),
    ("read-nan", lambda e: read_factors(e.newer.images * NAN), ValueError, "images contains"),
    ("read-shape", lambda e: read_factors(torch.zeros(2, 1, 28, 28)), ValueError, "images must have shape"),
    ("read-empty", lambda e: read_factors(torch.zeros(0, 3, 32, 32)), ValueError, "images is empty"),
    ("read-list", lambda e: read_factors([[0.0]]), TypeError, "images"),
    ("read-network-type", lambda e: read_factors(e.newer.images, network="shapes"), TypeError, "network must"),
    ("read-batch-0", lambda e: read_factors(e.newer.images, batch_size=0), ValueError, "batch_size"),
    ("scores-1-vs-16", lambda e: readout_scores(sample_factors(1), sample_factors(16)), ValueError, "same n"),
    ("scores-one-scene", lambda e: readout_scores(sample_factors(1), sample_factors(1)), ValueError, "n ≥ 2"),
    ("scores-missing", lambda e: readout_scores(_without(e.newer.factors, "scale"), e.newer.factors), ValueError,
     "read: missing"),
    ("scores-true-type", lambda e: readout_scores(e.newer.factors, [1, 2]), TypeError, "true"),
    ("readout-train-lr-inf", lambda e: train_readout(e.files.root / "r", lr=INF), ValueError, "lr"),
    ("readout-train-lr-0", lambda e: train_readout(e.files.root / "r", lr=0.0), ValueError, "lr"),
    ("readout-train-steps-0", lambda e: train_readout(e.files.root / "r", steps=0), ValueError, "steps"),
    ("readout-train-batch-huge", lambda e: train_readout(e.files.root / "r", batch_size=100_000), ValueError,
     "batch_size"),
    ("readout-train-heldout-1", lambda e: train_readout(e.files.root / "r", heldout=1), ValueError, "heldout"),
    ("readout-train-noise-1", lambda e: train_readout(e.files.root / "r", max_noise=1.0), ValueError, "max_noise"),
    ("readout-train-seed-str", lambda e: train_readout(e.files.root / "r", seed="0"), TypeError, "seed"),
    ("readout-train-foreign", lambda e: train_readout(e.newer.foreign, steps=1), FileExistsError, "other files"),
    ("readout-train-out-file", lambda e: train_readout(e.files.a_file, steps=1), PermissionError, "out"),
    ("readout-cli-lr-inf", _readout_cli("--lr", "inf"), SystemExit, "--lr"),
    ("readout-cli-lr-neg", _readout_cli("--lr", "-1"), SystemExit, "--lr"),
    ("readout-cli-steps-0", _readout_cli("--steps", "0"), SystemExit, "--steps"),
    ("readout-cli-batch-huge", _readout_cli("--batch-size", "100000"), SystemExit, "--batch-size"),
    ("readout-cli-seed-neg", _readout_cli("--seed", "-1"), SystemExit, "--seed"),
    ("readout-cli-out-empty", lambda e: _readout_main(["--out", ""]), SystemExit, "--out"),
    ("readout-cli-out-foreign", lambda e: _readout_main(["--out", str(e.newer.foreign)]), SystemExit, "--out"),
    # ------------------------------------------------------------------ training: the API (before any work)
    ("train-ema-2", _train(ema_decay=2.0), ValueError, "ema_decay"),
    ("train-ema-nan", _train(ema_decay=NAN), ValueError, "ema_decay"),
    ("train-ema-1", _train(ema_decay=1.0), ValueError, "ema_decay"),
    ("train-lr-neg", _train(lr=-1.0), ValueError, "lr"),
    ("train-lr-inf", _train(lr=INF), ValueError, "lr"),
    ("train-checkpoint-every-0", _train(checkpoint_every=0), ValueError, "checkpoint_every"),
    ("train-batch-huge", _train(batch_size=100_000), ValueError, "batch_size"),
    ("train-steps-float", _train(steps=2.5), TypeError, "steps"),
    ("train-warmup-neg", _train(warmup=-1), ValueError, "warmup"),
    ("train-seed-neg", _train(seed=-1), ValueError, "seed"),
    ("train-limit-0", _train(limit=0), ValueError, "limit"),
    ("train-device-bogus", _train(device="bogus"), ValueError, "device"),
    pytest.param("train-device-cuda", _train(device="cuda"), RuntimeError, "device",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
    ("train-data", _train(data="cifar"), ValueError, "data"),
    ("train-prediction", _train(prediction="x0"), ValueError, "prediction"),
    ("train-model-config", _train(model_config=[8, 16]), TypeError, "model_config"),
    ("train-out-empty", _train(out=""), ValueError, "out"),
    ("train-resume-lr", _resume(lr=1e-2), ValueError, "--lr"),
    ("train-resume-fewer-steps", _resume(steps=1), ValueError, "--steps 2"),
    ("train-resume-data", _resume(data="shapes"), ValueError, "--data"),
    ("train-resume-seed", _resume(seed=3), ValueError, "--seed"),
    ("train-resume-batch", _resume(batch_size=4), ValueError, "--batch-size"),
    ("train-resume-prediction", _resume(prediction="epsilon"), ValueError, "--prediction"),
    ("train-resume-damaged", lambda e: _resume(out=str(e.newer.broken_run))(e), ValueError, "ema.safetensors"),
    ("train-foreign-unet", lambda e: _train(out=str(e.tiny_dir))(e), FileExistsError, "unet"),
    ("classifier-lr-nan", lambda e: train_classifier(ClassifierConfig(out=str(e.files.root / "c"), lr=NAN)),
     ValueError, "lr"),
    ("classifier-heldout-1", lambda e: train_classifier(ClassifierConfig(out=str(e.files.root / "c"),
                                                                          heldout_fraction=1.0)),
     ValueError, "heldout_fraction"),
    ("classifier-foreign-out", lambda e: train_classifier(ClassifierConfig(out=str(e.newer.foreign))),
     FileExistsError, "other files"),
    # ------------------------------------------------------------------ training: the command line (exit 2)
    ("train-cli-ema-2", _train_cli("--ema-decay", "2"), SystemExit, "--ema-decay"),
    ("train-cli-ema-nan", _train_cli("--ema-decay", "nan"), SystemExit, "--ema-decay"),
    ("train-cli-lr-neg", _train_cli("--lr", "-1"), SystemExit, "--lr"),
    ("train-cli-lr-inf", _train_cli("--lr", "inf"), SystemExit, "--lr"),
    ("train-cli-checkpoint-every-0", _train_cli("--checkpoint-every", "0"), SystemExit, "--checkpoint-every"),
    ("train-cli-batch-huge", _train_cli("--batch-size", "100000"), SystemExit, "--batch-size"),
    ("train-cli-steps-0", _train_cli("--steps", "0"), SystemExit, "--steps"),
    ("train-cli-steps-float", _train_cli("--steps", "1e3"), SystemExit, "--steps"),
    ("train-cli-warmup-neg", _train_cli("--warmup", "-5"), SystemExit, "--warmup"),
    ("train-cli-device-bogus", _train_cli("--device", "bogus"), SystemExit, "--device"),
    ("train-cli-data", _train_cli("--data", "cifar"), SystemExit, "--data"),
    ("train-cli-resume-lr", lambda e: _train_main(["ddpm", "--out", str(e.newer.run), "--lr", "0.01", "--steps", "3"]),
     SystemExit, "--lr"),
    ("train-cli-foreign-unet", lambda e: _train_main(["ddpm", "--out", str(e.tiny_dir)]), SystemExit, "--out"),
    ("train-cli-classifier-epochs-0", lambda e: _train_main(["classifier", "--out", "x", "--epochs", "0"]),
     SystemExit, "--epochs"),
    ("train-cli-classifier-heldout-1", lambda e: _train_main(["classifier", "--out", "x", "--heldout-fraction", "1"]),
     SystemExit, "--heldout-fraction"),
    # ------------------------------------------------------------------ analyze (checked before the model loads)
    ("analyze-out-empty", lambda e: cli(["analyze", "--out", ""]), SystemExit, "--out"),
    ("analyze-out-foreign", lambda e: cli(["analyze", "--out", str(e.newer.foreign)]), SystemExit, "--out"),
    ("analyze-out-under-file", lambda e: cli(["analyze", "--out", str(e.files.a_file / "sub")]), SystemExit, "--out"),
    ("analyze-model-missing", lambda e: cli(["analyze", "--model", "/no/such/folder", "--out",
                                             str(e.files.root / "an")]), SystemExit, "--model"),
    ("analyze-k-0", lambda e: cli(["analyze", "--k", "0", "--out", str(e.files.root / "an")]), SystemExit, "--k"),
    ("analyze-samples-huge", lambda e: cli(["analyze", "--samples", "1000000", "--out", str(e.files.root / "an")]),
     SystemExit, "--samples"),
    ("analyze-tol-0", lambda e: cli(["analyze", "--tol", "0", "--out", str(e.files.root / "an")]), SystemExit,
     "--tol"),
    ("analyze-steps-0", lambda e: cli(["analyze", "--steps", "0", "--out", str(e.files.root / "an")]), SystemExit,
     "--steps"),
    ("analyze-check-out-foreign", lambda e: analysis_check_out(e.newer.foreign), FileExistsError, "results.json"),
    # ------------------------------------------------------------------ plot
    ("grid-range-inverted", lambda e: image_grid(torch.zeros(2, 1, 4, 4), value_range=(1, -1)), ValueError,
     "value_range"),
    ("grid-range-nan", lambda e: image_grid(torch.zeros(2, 1, 4, 4), value_range=(NAN, 1)), ValueError,
     "value_range[0]"),
    ("grid-range-word", lambda e: image_grid(torch.zeros(2, 1, 4, 4), value_range="auto"), TypeError, "value_range"),
    ("grid-nan", lambda e: image_grid(torch.full((2, 1, 4, 4), NAN)), ValueError, "images contains"),
    ("grid-uint8", lambda e: image_grid(torch.zeros(2, 1, 4, 4, dtype=torch.uint8)), TypeError, "to_unit_range"),
    ("grid-list-numpy", lambda e: image_grid([np.zeros((2, 1, 4, 4))]), TypeError, "images[0]"),
    ("grid-3d", lambda e: image_grid(torch.zeros(1, 4, 4)), ValueError, "images must have shape"),
    ("grid-too-many", lambda e: image_grid(torch.zeros(3000, 1, 2, 2)), ValueError, "at most 2500"),
    ("grid-size-0", lambda e: image_grid(torch.zeros(2, 1, 4, 4), size=0), ValueError, "size"),
    ("grid-labels", lambda e: image_grid(torch.zeros(2, 1, 4, 4), row_labels=["a", "b"]), ValueError, "row_labels"),
    ("chart-grid-n-0", lambda e: chart_grid((0, 1), (0, 1), 0, 3), ValueError, "n_u"),
    ("chart-grid-range-inf", lambda e: chart_grid((0, INF), (0, 1), 3, 3), ValueError, "u_range[1]"),
    ("surface-n-huge", lambda e: plot_surface(geo.sphere, (0, 1), (0, 1), n=10**6), ValueError, "n must"),
    ("surface-f", lambda e: plot_surface("sphere", (0, 1), (0, 1)), TypeError, "f must"),
    ("ellipses-grid", lambda e: metric_ellipses(geo.sphere, torch.zeros(3, 3)), ValueError, "grid"),
    ("arrows-vectors", lambda e: tangent_arrows(geo.sphere, torch.zeros(3, 2), torch.zeros(2, 2)), ValueError,
     "vectors"),
    # ------------------------------------------------------------------ widgets
    ("png-pixel-size-huge", lambda e: to_png(np.zeros((8, 8)), pixel_size=10**5), ValueError, "pixel_size"),
    ("png-pixel-size-0", lambda e: to_png(np.zeros((8, 8)), pixel_size=0), ValueError, "pixel_size"),
    ("png-nan", lambda e: to_png(np.full((8, 8), NAN)), ValueError, "image contains"),
    ("png-int64", lambda e: to_png(np.zeros((8, 8), dtype=np.int64)), TypeError, "uint8"),
    ("png-range-inverted", lambda e: to_png(np.zeros((8, 8)), value_range=(1, 0)), ValueError, "value_range"),
    ("png-list", lambda e: to_png([[0.0]]), TypeError, "image"),
    ("png-shape", lambda e: to_png(np.zeros((2, 8, 8))), ValueError, "a frame must be"),
    ("player-labels", lambda e: static_player([to_png(np.zeros((2, 2)))], [1]), TypeError, "labels"),
    ("player-interval-0", lambda e: static_player([to_png(np.zeros((2, 2)))], ["a"], interval_ms=0), ValueError,
     "interval_ms"),
    ("player-frames", lambda e: static_player(["not png"], ["a"]), TypeError, "frames_png"),
    ("interp-explorer-other-path", lambda e: InterpolationExplorer(e.model, n=3, num_steps=10, methods=("lerp",),
                                                                   interpolations={"lerp": e.newer.other_path}),
     ValueError, "does not join samples 0 and 1"),
    ("interp-explorer-n-1", lambda e: InterpolationExplorer(e.model, n=1, num_steps=10), ValueError, "n must"),
    ("interp-explorer-t-nan", lambda e: InterpolationExplorer(e.model, t_fraction=NAN, num_steps=10), ValueError,
     "t_fraction"),
    ("interp-explorer-seed", lambda e: InterpolationExplorer(e.model, seed_a=-1, num_steps=10), ValueError, "seed_a"),
    ("edit-explorer-k-0", lambda e: EditExplorer(e.model, k=0, num_steps=10), ValueError, "k must"),
    ("edit-explorer-seed-float", lambda e: EditExplorer(e.model, seeds=(1.5,), num_steps=10), TypeError, "seeds[0]"),
    ("edit-explorer-strength-nan", lambda e: EditExplorer(e.model, strengths=[NAN], num_steps=10), ValueError,
     "strengths"),
    ("edit-explorer-options", lambda e: EditExplorer(e.model, edit_options={"deltaa": 1}, num_steps=10), ValueError,
     "edit_options"),
    ("edit-explorer-steps-0", lambda e: EditExplorer(e.model, num_steps=0), ValueError, "num_steps"),
    # a text-conditioned model reaches an explorer bound to its prompt: model.conditioned(prompt, guidance_scale=w)
    ("edit-explorer-model-str", lambda e: EditExplorer("shapes-sd", num_steps=10), TypeError, "model must be"),
    ("interp-explorer-model-unet", lambda e: InterpolationExplorer(e.sd.unet, num_steps=10), TypeError,
     "model must be"),
    ("edit-explorer-seeds-prompt", lambda e: EditExplorer(e.sd, "a red square", num_steps=10), TypeError,
     "model.conditioned("),
    ("interp-explorer-seed-prompt", lambda e: InterpolationExplorer(e.sd, "a red square", num_steps=10), TypeError,
     "seed_a"),
    ("edit-explorer-prompt-word", lambda e: EditExplorer(e.sd.conditioned("a purple square"), num_steps=10),
     ValueError, "prompt="),
    ("interp-explorer-guidance-nan",
     lambda e: InterpolationExplorer(e.sd.conditioned("a red square", guidance_scale=NAN), num_steps=10), ValueError,
     "guidance_scale"),
    # ------------------------------------------------------------------ strengths: one batch, bounded
    ("edit-strengths-huge", lambda e: edit(e.model, e.sample, e.v, torch.zeros(10**6)), ValueError, "at most 1024"),
    ("hspace-strengths-huge", lambda e: h_space_edit(e.model, e.sample, torch.ones(h_shape(e.model)),
                                                     torch.zeros(10**6)), ValueError, "at most 1024"),
    # ------------------------------------------------------------------ notebook setup
    ("setup-device-gpu", lambda e: nb_setup(e.tiny_dir, device="gpu"), ValueError, "device"),
    ("setup-model-int", lambda e: nb_setup(3), TypeError, "name_or_path"),
    # ------------------------------------------------------------------ benchmark command lines (exit 2, before work)
    ("mq-samples-0", _benchmark("model_quality", "--samples", "0"), SystemExit, "--samples"),
    ("mq-samples-1e8", _benchmark("model_quality", "--samples", "1e8"), SystemExit, "--samples"),
    ("mq-samples-huge", _benchmark("model_quality", "--samples", "100000000"), SystemExit, "--samples"),
    ("mq-batch-0", _benchmark("model_quality", "--batch-size", "0"), SystemExit, "--batch-size"),
    ("mq-steps-0", _benchmark("model_quality", "--steps", "0"), SystemExit, "--steps"),
    ("mq-out-under-file", lambda e: _benchmark("model_quality", "--out", str(e.files.a_file / "q"))(e), SystemExit,
     "--out"),
    ("mq-model-missing", lambda e: _benchmark("model_quality", "--model", "/no/such", "--out",
                                              str(e.files.root / "mq"))(e), SystemExit, "--model"),
    ("mq-model-not-digits", lambda e: _benchmark("model_quality", "--model", str(e.tiny_dir), "--out",
                                                 str(e.files.root / "mq"))(e), SystemExit, "1×28×28"),
    ("mq-classifier-missing", lambda e: _benchmark("model_quality", "--classifier", str(e.files.empty_dir), "--out",
                                                   str(e.files.root / "mq"))(e), SystemExit, "--classifier"),
    ("wq-samples-1e8", _benchmark("world_quality", "--samples", "1e8"), SystemExit, "--samples"),
    ("wq-samples-huge", _benchmark("world_quality", "--samples", "200000"), SystemExit, "--samples"),
    ("wq-batch-0", _benchmark("world_quality", "--batch-size", "0"), SystemExit, "--batch-size"),
    ("wq-steps-neg", _benchmark("world_quality", "--steps", "-1"), SystemExit, "--steps"),
    ("wq-out-under-file", lambda e: _benchmark("world_quality", "--out", str(e.files.a_file / "q"))(e), SystemExit,
     "--out"),
    ("wq-model-missing", lambda e: _benchmark("world_quality", "--model", "/no/such", "--out",
                                              str(e.files.root / "wq"))(e), SystemExit, "--model"),
    ("wq-model-not-scenes", lambda e: _benchmark("world_quality", "--model", str(e.tiny_dir), "--out",
                                                 str(e.files.root / "wq"))(e), SystemExit, "3×32×32"),
    ("ts-short-1-long-2", _benchmark("train_step", "--short", "1", "--long", "2"), SystemExit, "--long"),
    ("ts-long-below-short", _benchmark("train_step", "--short", "40", "--long", "30"), SystemExit, "--long"),
    ("ts-repeats-0", _benchmark("train_step", "--repeats", "0"), SystemExit, "--repeats"),
    ("ts-device-bogus", _benchmark("train_step", "--device", "bogus"), SystemExit, "--device"),
    ("ts-out-under-file", lambda e: _benchmark("train_step", "--out", str(e.files.a_file / "x" / "t.json"))(e),
     SystemExit, "--out"),
    ("lb-cli-ks-0", _benchmark("local_basis", "--ks", "0"), SystemExit, "--ks"),
    ("lb-cli-tol-0", _benchmark("local_basis", "--tol", "0"), SystemExit, "--tol"),
    ("lb-cli-tols-2", _benchmark("local_basis", "--tols", "1e-3", "2"), SystemExit, "--tols"),
    ("lb-cli-cap-0", _benchmark("local_basis", "--cap", "0"), SystemExit, "--cap"),
    ("lb-cli-max-sweeps-0", _benchmark("local_basis", "--max-sweeps", "0"), SystemExit, "--max-sweeps"),
    ("lb-cli-device-bogus", _benchmark("local_basis", "--device", "bogus"), SystemExit, "--device"),
    ("lb-cli-out-under-file", lambda e: _benchmark("local_basis", "--out", str(e.files.a_file / "x" / "l.json"))(e),
     SystemExit, "--out"),
    # ------------------------------------------------------------------ budget (edits of one size)
    ("budget-image-change-sizes", lambda e: image_change(torch.zeros(2, 1, 8, 8), torch.zeros(1, 1, 4, 4)),
     ValueError, "unedited"),
    ("budget-nan", lambda e: match_budget(e.model, e.sample, e.v, [NAN]), ValueError, "budgets"),
    ("budget-empty", lambda e: match_budget(e.model, e.sample, e.v, []), ValueError, "budgets"),
    ("budget-how", lambda e: match_budget(e.model, e.sample, e.v, [0.05], how="pixels"), ValueError, "how"),
    ("budget-direction-zero", lambda e: match_budget(e.model, e.sample, torch.zeros_like(e.v), [0.05]), ValueError,
     "every direction"),
    ("budget-tolerance-0", lambda e: match_budget(e.model, e.sample, e.v, [0.05], tolerance=0.0), ValueError,
     "tolerance"),
    ("budget-image-change-nan", lambda e: image_change(torch.full((2, 1, 8, 8), NAN), torch.zeros(1, 1, 8, 8)),
     ValueError, "edited contains"),
    ("budget-image-change-list", lambda e: image_change([[0.0]], torch.zeros(1, 1, 8, 8)), TypeError,
     "edited must be"),
    ("budget-image-change-unedited-batch", lambda e: image_change(torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 8)),
     ValueError, "unedited must have shape"),
    ("budget-h-delta", lambda e: match_budget(e.model, e.sample, e.v, [0.05], how="h", delta=5.0), ValueError,
     "take no options"),
    ("budget-naive-delta", lambda e: match_budget(e.model, e.sample, e.v, [0.05], how="naive", delta=0.5),
     ValueError, "take no options"),
    ("budget-guidance-typo", lambda e: match_budget(e.model, e.sample, e.v, [0.05], detla=1.0), ValueError, "detla"),
    ("budget-guidance-delta-0", lambda e: match_budget(e.model, e.sample, e.v, [0.05], delta=0.0), ValueError,
     "delta must be"),
    ("budget-guidance-n-iter-float", lambda e: match_budget(e.model, e.sample, e.v, [0.05], n_iter=2.5), TypeError,
     "n_iter must be"),
    # ------------------------------------------------------------------ scoring
    ("instrument-scale-nan", lambda e: Instrument(read=_read_a, scales={"a": NAN}), ValueError, "scales"),
    ("instrument-scales-empty", lambda e: Instrument(read=_read_a, scales={}), ValueError, "scales"),
    ("instrument-circular-unknown", lambda e: Instrument(read=_read_a, scales={"a": 1.0}, circular=frozenset("b")),
     ValueError, "circular"),
    ("instrument-read-str", lambda e: Instrument(read="x", scales={"a": 1.0}), TypeError, "read must be"),
    ("instrument-rerender-str", lambda e: Instrument(read=_read_a, scales={"a": 1.0}, rerender="x"), TypeError,
     "rerender must be"),
    ("instrument-tangent-int", lambda e: Instrument(read=_read_a, scales={"a": 1.0}, tangent=3), TypeError,
     "tangent must be"),
    ("instrument-scales-list", lambda e: Instrument(read=_read_a, scales=[1.0]), TypeError, "scales must be"),
    ("instrument-scale-bool", lambda e: Instrument(read=_read_a, scales={"a": True}), ValueError, "scales"),
    ("instrument-circular-str", lambda e: Instrument(read=_read_a, scales={"hue": 0.25}, circular="hue"), TypeError,
     "circular must be"),
    ("instrument-categorical-str", lambda e: Instrument(read=_read_a, scales={"shape": 0.5}, categorical="shape"),
     TypeError, "categorical must be"),
    ("instrument-both-kinds", lambda e: Instrument(read=_read_a, scales={"a": 1.0}, circular=frozenset({"a"}),
                                                   categorical=frozenset({"a"})), ValueError, "both circular"),
    ("world-instrument-network-str", lambda e: world_instrument(network="x"), TypeError, "network must be"),
    ("mean-difference-one", lambda e: mean_difference(torch.ones(1)), ValueError, "values"),
    ("mean-difference-list", lambda e: mean_difference([1.0, 2.0]), TypeError, "values"),
    ("mean-difference-nan", lambda e: mean_difference(torch.tensor([1.0, NAN])), ValueError, "values contains"),
    ("rerender-instrument-str", lambda e: rerender_error(e.newer.images, "readout"), TypeError, "instrument"),
    ("rerender-images-nan", lambda e: rerender_error(e.newer.images * NAN, e.latest.instrument), ValueError,
     "images contains"),
    ("rerender-images-255", lambda e: rerender_error(torch.full((1, 3, 32, 32), 200.0), e.latest.instrument),
     ValueError, "images must be"),
    ("factor-changes-nan", lambda e: factor_changes(e.latest.instrument, {"a": torch.tensor([NAN])},
                                                    {"a": torch.zeros(1)}), ValueError, "read NaN"),
    ("factor-changes-instrument", lambda e: factor_changes("world", {"a": torch.zeros(1)}, {"a": torch.zeros(1)}),
     TypeError, "instrument"),
    ("factor-changes-read-list", lambda e: factor_changes(e.latest.instrument, [0.0], {"a": torch.zeros(1)}),
     TypeError, "read must be a dict"),
    ("factor-changes-read-missing", lambda e: factor_changes(e.latest.instrument, {"b": torch.zeros(1)},
                                                             {"a": torch.zeros(1)}), ValueError, "read has no 'a'"),
    ("factor-changes-reference-missing", lambda e: factor_changes(e.latest.instrument, {"a": torch.zeros(1)},
                                                                  {"b": torch.zeros(1)}),
     ValueError, "reference has no 'a'"),
    ("factor-changes-value-list", lambda e: factor_changes(e.latest.instrument, {"a": [0.0]}, {"a": torch.zeros(1)}),
     TypeError, "read['a'] must be"),
    ("factor-changes-value-2d", lambda e: factor_changes(e.latest.instrument, {"a": torch.zeros(2, 1)},
                                                         {"a": torch.zeros(2)}), ValueError, "read['a'] must have"),
    ("factor-changes-lengths", lambda e: factor_changes(e.latest.instrument, {"a": torch.zeros(2)},
                                                        {"a": torch.zeros(3)}), ValueError, "lengths"),
    ("score-edits-type", lambda e: score_edits(e.latest.instrument, "edits"), TypeError, "edits"),
    ("score-edits-instrument", lambda e: score_edits("world", None), TypeError, "instrument"),
    ("score-directions-instrument", lambda e: score_directions(e.model, e.sample, e.v, [0.05], "world"), TypeError,
     "instrument"),
    ("basis-summary-type", lambda e: basis_summary({"response": torch.ones(1, 1)}), TypeError, "scores"),
    ("select-type", lambda e: select("scores", range(1)), TypeError, "scores"),
    ("select-budgets-str", lambda e: select(_edit_scores(), range(1), "0.05"), TypeError, "budgets must be"),
    ("select-budgets-empty", lambda e: select(_edit_scores(), range(1), []), ValueError, "budgets must be"),
    ("select-budgets-nan", lambda e: select(_edit_scores(), range(1), [NAN]), ValueError, "budgets must be"),
    ("select-budgets-2", lambda e: select(_edit_scores(), range(1), [2.0]), ValueError, "budgets must be in"),
    ("select-budgets-word", lambda e: select(_edit_scores(), range(1), ["small"]), TypeError, "budgets must be"),
    # ------------------------------------------------------------------ oracle and LOCO-Edit directions
    ("oracle-sample-type", lambda e: oracle_directions(e.model, e.x), TypeError, "sample"),
    ("oracle-not-the-world", lambda e: oracle_directions(e.model, e.sample), ValueError, "model of the world"),
    ("oracle-network-str", lambda e: oracle_directions(e.model, e.sample, network="x"), TypeError, "network must be"),
    ("loco-mask-empty", lambda e: loco_directions(e.model, e.sample, torch.zeros(1, 1, 8, 8), 1), ValueError, "mask"),
    ("loco-mask-shape", lambda e: loco_directions(e.model, e.sample, torch.ones(8, 8), 1), ValueError, "mask"),
    ("loco-k-0", lambda e: loco_directions(e.model, e.sample, torch.ones(1, 1, 8, 8), 0), ValueError, "k must"),
    ("loco-rank-neg", lambda e: loco_directions(e.model, e.sample, torch.ones(1, 1, 8, 8), 1, rank_outside=-1),
     ValueError, "rank_outside"),
    # ------------------------------------------------------------------ disentanglement metrics
    ("disentanglement-empty", lambda e: disentanglement(torch.zeros(0, 3)), ValueError, "response"),
    ("disentanglement-1d", lambda e: disentanglement(torch.ones(3)), ValueError, "response must have 2"),
    ("top-two-negative", lambda e: top_two_gap(-torch.ones(2, 3)), ValueError, "response has negative"),
    ("coverage-list", lambda e: coverage([[1.0, 0.0]]), TypeError, "response"),
    ("dci-nan", lambda e: dci(torch.full((2, 2), NAN)), ValueError, "response contains"),
    # ------------------------------------------------------------------ stats
    ("bootstrap-one-sample", lambda e: bootstrap_ci([1.0]), ValueError, "values"),
    ("bootstrap-inf", lambda e: bootstrap_ci([1.0, INF]), ValueError, "values"),
    ("bootstrap-resamples-10", lambda e: bootstrap_ci([1.0, 2.0, 3.0], n_resamples=10), ValueError, "n_resamples"),
    ("bootstrap-level-1", lambda e: bootstrap_ci([1.0, 2.0, 3.0], level=1.0), ValueError, "level"),
    ("bootstrap-resamples-huge", lambda e: bootstrap_ci([1.0, 2.0, 3.0], n_resamples=10**12), ValueError,
     "n_resamples"),
    ("compare-resamples-huge", lambda e: compare_all({"a": [1.0, 2.0], "b": [2.0, 3.0]}, n_resamples=10**7),
     ValueError, "n_resamples"),
    ("ratio-lengths", lambda e: ratio_ci([1.0, 2.0], [1.0, 2.0, 3.0]), ValueError, "numerator, denominator"),
    ("ratio-zero-mean", lambda e: ratio_ci([1.0, 2.0], [1.0, -1.0]), ValueError, "denominator"),
    ("floor-ceiling-word", lambda e: floor_to_ceiling([1.0, 2.0], [0.0, 0.0], "high"), TypeError, "ceiling"),
    ("paired-level-nan", lambda e: paired_difference([1.0, 2.0, 3.0], [0.0, 1.0, 1.0], level=NAN), ValueError,
     "level"),
    ("holm-above-1", lambda e: holm([0.5, 1.5]), ValueError, "pvalues"),
    ("compare-one-method", lambda e: compare_all({"park": [1.0, 2.0]}), ValueError, "per_sample"),
    ("compare-list", lambda e: compare_all([[1.0, 2.0], [2.0, 3.0]]), TypeError, "per_sample"),
    ("compare-alpha-0", lambda e: compare_all({"a": [1.0, 2.0], "b": [2.0, 3.0]}, alpha=0.0), ValueError, "alpha"),
    # ------------------------------------------------------------------ dimension (Stanczuk et al.)
    ("score-matrix-eps", lambda e: score_matrix(3, torch.zeros(1, 4), 0.5, 8), TypeError, "eps"),
    ("score-matrix-alpha-1", lambda e: score_matrix(torch.neg, torch.zeros(1, 4), 1.0, 8), ValueError, "alpha_bar"),
    ("score-matrix-x0-batch", lambda e: score_matrix(torch.neg, torch.zeros(2, 4), 0.5, 8), ValueError, "x0"),
    ("score-matrix-n-huge", lambda e: score_matrix(torch.neg, torch.zeros(1, 4), 0.5, 10**9), ValueError, "n must"),
    ("svals-1d", lambda e: singular_values(torch.zeros(3)), ValueError, "scores"),
    ("svals-centred-str", lambda e: singular_values(torch.zeros(3, 3), centred="yes"), TypeError, "centred"),
    ("spectrum-n-1", lambda e: normal_space_spectrum(e.model, e.x, 10, n=1), ValueError, "n must"),
    ("spectrum-t-big", lambda e: normal_space_spectrum(e.model, e.x, 5000, n=8), ValueError, "t must"),
    ("spectrum-x0-nan", lambda e: normal_space_spectrum(e.model, e.x * NAN, 10, n=8), ValueError, "x0 contains"),
    ("drops-ascending", lambda e: drops(torch.tensor([1.0, 2.0, 3.0])), ValueError, "spectrum"),
    ("drops-gap", lambda e: drops(torch.tensor([3.0, 2.0, 1.0]), gap="ratio"), ValueError, "gap"),
    ("dimension-dim-small", lambda e: estimate_dimension(torch.tensor([3.0, 2.0, 1.0]), dim=2), ValueError, "dim"),
    ("dimension-one-value", lambda e: estimate_dimension(torch.ones(1)), ValueError, "spectrum"),
    # ------------------------------------------------------------------ linearity
    ("linearisation-f", lambda e: linearisation_error("mlp", e.f64, e.f64 + 1, default_steps()), TypeError, "f must"),
    ("linearisation-f-tuple", lambda e: linearisation_error(lambda z: (z, z), e.f64, e.f64 + 1, default_steps()),
     TypeError, "f(x) must return"),
    ("breaking-f-dict", lambda e: breaking_step(lambda z: {"h": z}, e.f64, e.f64 + 1), TypeError, "f(x) must return"),
    ("linearisation-v-zero", lambda e: linearisation_error(e.mlp, e.f64, e.f64, default_steps()), ValueError,
     "v is zero"),
    ("linearisation-v-float32", lambda e: linearisation_error(e.mlp, e.f64, torch.ones(5), default_steps()),
     TypeError, "v must"),
    ("linearisation-steps-neg", lambda e: linearisation_error(e.mlp, e.f64, e.f64 + 1, -default_steps()), ValueError,
     "steps"),
    ("breaking-level-nan", lambda e: breaking_step(e.mlp, e.f64, e.f64 + 1, level=NAN), ValueError, "level"),
    ("breaking-steps-decreasing", lambda e: breaking_step(e.mlp, e.f64, e.f64 + 1, steps=default_steps().flip(0)),
     ValueError, "steps must increase"),
    # ------------------------------------------------------------------ worlds: the rest of the public functions
    ("check-factors-list", lambda e: check_factors([0.5]), TypeError, "factors"),
    ("check-factors-range", lambda e: check_factors(_with(e.newer.factors, x_position=torch.full((3,), 2.0))),
     ValueError, "x_position"),
    ("hue-colour-list", lambda e: hue_colour([0.5], 0.5, 0.4), TypeError, "hue"),
    ("hue-colour-2d", lambda e: hue_colour(torch.zeros(2, 2), 0.5, 0.4), ValueError, "hue"),
    ("hue-colour-grey-nan", lambda e: hue_colour(torch.zeros(3), NAN, 0.1), ValueError, "grey"),
    ("hue-colour-amplitude", lambda e: hue_colour(torch.zeros(3), 0.5, 0.9), ValueError, "amplitude"),
    ("mask-size-float", lambda e: object_mask(e.newer.factors, size=32.0), TypeError, "size"),
    ("mask-supersample-0", lambda e: object_mask(e.newer.factors, supersample=0), ValueError, "supersample"),
    ("mask-200k-scenes", lambda e: object_mask(sample_factors(200_000)), ValueError, "200000 scenes"),
    ("mask-big-at-size", lambda e: object_mask(e.newer.factors, size=1024, supersample=16), ValueError,
     "one scene alone"),
    ("tangent-factors-list", lambda e: tangent_basis([1.0]), TypeError, "factors"),
    ("tangent-too-many", lambda e: tangent_basis(sample_factors(10_001)), ValueError, "10001 scenes"),
    # ------------------------------------------------------------------ readout: targets, outputs, hues
    ("encode-missing", lambda e: encode(_without(e.newer.factors, "shape")), ValueError, "missing factor"),
    ("encode-list", lambda e: encode([0.5]), TypeError, "factors"),
    ("decode-width", lambda e: decode(torch.zeros(2, 5)), ValueError, "outputs"),
    ("decode-nan", lambda e: decode(torch.full((2, 12), NAN)), ValueError, "outputs contains"),
    ("smooth-factors-1d", lambda e: smooth_factors(torch.zeros(12)), ValueError, "outputs"),
    ("readout-loss-targets", lambda e: readout_loss(torch.zeros(3, 12), {"scale": torch.zeros(3)}), ValueError,
     "targets"),
    ("readout-loss-outputs", lambda e: readout_loss(torch.zeros(3, 5), encode(e.newer.factors)), ValueError,
     "outputs"),
    ("circular-difference-list", lambda e: circular_difference([0.1], torch.zeros(1)), TypeError, "a must"),
    ("circular-difference-shapes", lambda e: circular_difference(torch.zeros(3), torch.zeros(2)), ValueError,
     "a and b"),
    ("circular-mean-empty", lambda e: circular_mean(torch.zeros(0)), ValueError, "h is empty"),
    ("circular-mean-nan", lambda e: circular_mean(torch.full((2,), NAN)), ValueError, "h contains"),
    # ------------------------------------------------------------------ latent: Stable Diffusion pipelines
    ("latent-parts-unet", lambda e: from_parts("unet", e.sd.vae, e.sd.text_encoder, e.sd.tokenizer, e.sd.schedule),
     TypeError, "unet"),
    ("latent-parts-text-encoder", lambda e: from_parts(e.sd.unet, e.sd.vae, "clip", e.sd.tokenizer, e.sd.schedule),
     TypeError, "text_encoder"),
    ("latent-parts-tokenizer", lambda e: from_parts(e.sd.unet, e.sd.vae, e.sd.text_encoder, None, e.sd.schedule),
     TypeError, "tokenizer"),
    ("latent-parts-schedule", lambda e: from_parts(e.sd.unet, e.sd.vae, e.sd.text_encoder, e.sd.tokenizer, None),
     ValueError, "schedule"),
    ("latent-pipeline-missing", lambda e: pipeline_parts(str(e.files.empty_dir), True), FileNotFoundError,
     "model_index.json"),
    ("latent-pipeline-int", lambda e: pipeline_parts(3, True), TypeError, "source"),
    ("latent-pipeline-ddpm", lambda e: pipeline_parts(str(e.tiny_dir), True), ModelUnavailableError,
     "pipeline's parts"),
    ("latent-read-dtype", lambda e: read_pipeline(str(e.latest.sd_dir), True, "float32", torch.device("cpu"), "x"),
     TypeError, "dtype"),
    ("latent-read-device", lambda e: read_pipeline(str(e.latest.sd_dir), True, torch.float32, "cpu", "x"),
     TypeError, "device"),
    ("latent-with-prompt-ddpm", lambda e: with_prompt(e.model, "a red square"), PromptError, "prompt"),
    ("latent-with-prompt-scale-nan", lambda e: with_prompt(e.sd, guidance_scale=NAN), PromptError, "guidance_scale"),
    ("latent-conditioned-int", lambda e: e.sd.conditioned(prompt=3), TypeError, "prompt"),
    ("latent-encode-prompt-word", lambda e: e.sd.encode_prompt("a purple square"), ValueError, "prompt"),
    ("latent-embeds-width", lambda e: e.sd.check_embeds(torch.zeros(1, 5, 7)), ValueError, "prompt_embeds"),
    ("latent-check-prompt-long", lambda e: e.sd.check_prompt("a red square " * 10), ValueError, "prompt is"),
    ("latent-decode-shape", lambda e: e.sd.decode(torch.zeros(1, 3, 8, 8)), ValueError, "z must"),
    ("latent-encode-shape", lambda e: e.sd.encode(torch.zeros(1, 3, 8, 8)), ValueError, "images must"),
    # ------------------------------------------------------------------ captions
    ("colour-name-word", lambda e: captions.colour_name("red"), TypeError, "hue"),
    ("colour-name-nan", lambda e: captions.colour_name(NAN), ValueError, "hue"),
    ("describe-i-big", lambda e: captions.describe(e.newer.factors, 3), ValueError, "i must"),
    ("describe-factors-list", lambda e: captions.describe([0.5], 0), TypeError, "factors"),
    ("caption-word", lambda e: captions.caption({"scale": "huge"}), ValueError, "words['scale']"),
    ("caption-factor", lambda e: captions.caption({"colour": "red"}), ValueError, "colour"),
    ("caption-list", lambda e: captions.caption(["red"]), TypeError, "words"),
    ("random-captions-generator", lambda e: captions.random_captions(e.newer.factors, None), TypeError, "generator"),
    ("random-captions-empty-2", lambda e: captions.random_captions(e.newer.factors, torch.Generator(), empty=2.0),
     ValueError, "empty"),
    ("parse-caption-int", lambda e: captions.parse_caption(3), TypeError, "text"),
    ("parse-caption-words", lambda e: captions.parse_caption("the red square"), ValueError, "is not a caption"),
    ("faithful-word", lambda e: captions.faithful({"shape": "circle"}, e.newer.factors), ValueError,
     "named['shape']"),
    ("faithful-factors", lambda e: captions.faithful({"shape": "square"}, [0.5]), TypeError, "factors"),
    ("tokenizer-max-length-2", lambda e: captions.tokenizer_files(e.files.root / "tok", max_length=2), ValueError,
     "max_length"),
    ("tokenizer-folder-int", lambda e: captions.tokenizer_files(3), TypeError, "folder"),
    # ------------------------------------------------------------------ train_sd: the config, the stages, the CLI
    ("sd-stage", _sd(stage="unet"), ValueError, "stage"),
    ("sd-lr-0", _sd(lr=0.0), ValueError, "lr"),
    ("sd-batch-huge", _sd(batch_size=100_000), ValueError, "batch_size"),
    ("sd-steps-float", _sd(steps=2.5), TypeError, "steps"),
    ("sd-empty-nan", _sd(empty=NAN), ValueError, "empty"),
    ("sd-device-bogus", _sd(device="bogus"), ValueError, "device"),
    ("sd-out-empty", _sd(out=""), ValueError, "out"),
    ("sd-tiny-str", _sd(tiny="yes"), TypeError, "tiny"),
    ("sd-config-dict", lambda e: train_sd({"out": "x"}), TypeError, "config"),
    ("sd-vae-device-str", lambda e: train_vae(_sd_config(e), "cpu", torch.Generator()), TypeError, "device"),
    ("sd-vae-lr-neg", lambda e: train_vae(_sd_config(e, vae_lr=-1.0), torch.device("cpu"), torch.Generator()),
     ValueError, "vae_lr"),
    ("sd-diffusion-vae", lambda e: train_diffusion(_sd_config(e), "vae", e.latest.tokenizer, torch.device("cpu"),
                                                   torch.Generator()), TypeError, "vae"),
    ("sd-diffusion-gen", lambda e: train_diffusion(_sd_config(e), e.sd.vae, e.latest.tokenizer, torch.device("cpu"),
                                                   0), TypeError, "gen"),
    ("sd-decoder-vae", lambda e: train_decoder(_sd_config(e), "vae", torch.device("cpu"), torch.Generator()),
     TypeError, "vae"),
    ("sd-decoder-lr-0", lambda e: train_decoder(_sd_config(e, decoder_lr=0.0), e.sd.vae, torch.device("cpu"),
                                                torch.Generator()), ValueError, "decoder_lr"),
    ("sd-decoder-stage-no-steps", _sd(stage="decoder"), ValueError, "decoder_steps"),
    ("sd-decoder-steps-neg", _sd(decoder_steps=-1), ValueError, "decoder_steps"),
    ("sd-decoder-empty-run", _sd(stage="decoder", decoder_steps=2), FileNotFoundError, "vae and diffusion stages"),
    ("sd-widths-odd", lambda e: check_widths((50, 96)), ValueError, "multiple of 16"),
    ("sd-tokenizer-dir-empty", lambda e: check_tokenizer_dir(e.files.empty_dir), FileNotFoundError, "tokenizer_dir"),
    ("sd-save-unet", lambda e: save_pipeline(e.files.root / "p", "unet", e.sd.vae, e.sd.text_encoder,
                                             e.latest.tokenizer), TypeError, "unet"),
    ("sd-save-tokenizer", lambda e: save_pipeline(e.files.root / "p", e.sd.unet, e.sd.vae, e.sd.text_encoder,
                                                  e.files.empty_dir), FileNotFoundError, "tokenizer_dir"),
    ("sd-manifest-no-pipeline", lambda e: pipeline_manifest(e.files.empty_dir), FileNotFoundError,
     "model_index.json"),
    ("sd-vae-config-tiny-str", lambda e: vae_config("yes"), TypeError, "tiny"),
    ("sd-text-config-vocab-0", lambda e: text_config(0), ValueError, "vocab_size"),
    ("sd-unet-config-width-float", lambda e: unet_config(16.5), TypeError, "cross_attention_dim"),
    ("sd-cli-lr-0", _sd_cli("--lr", "0"), SystemExit, "--lr"),
    ("sd-cli-device-bogus", _sd_cli("--device", "bogus"), SystemExit, "--device"),
    ("sd-cli-batch-huge", _sd_cli("--batch-size", "100000"), SystemExit, "--batch-size"),
    ("sd-cli-seed-neg", _sd_cli("--seed", "-1"), SystemExit, "--seed"),
    ("sd-cli-stage", _sd_cli("--stage", "unet"), SystemExit, "--stage"),
    ("sd-cli-decoder-steps-neg", _sd_cli("--decoder-steps", "-1"), SystemExit, "--decoder-steps"),
    ("sd-cli-decoder-lr-0", _sd_cli("--decoder-lr", "0"), SystemExit, "--decoder-lr"),
    ("sd-cli-ema-1", _sd_cli("--ema-decay", "1"), SystemExit, "--ema-decay"),
    ("sd-cli-out-under-file", lambda e: _train_main(["sd", "--out", str(e.files.a_file / "sub")]), SystemExit,
     "--out"),
    # ------------------------------------------------------------------ checkpoint
    ("resume-ckpt-int", lambda e: check_resume(3, TrainConfig(out="x")), TypeError, "ckpt"),
    ("resume-no-state", lambda e: check_resume(e.files.empty_dir, TrainConfig(out="x")), FileNotFoundError,
     "state.json"),
    ("resume-config-dict", lambda e: check_resume(e.newer.run / "checkpoint", {"lr": 1e-3}), TypeError, "config"),
    ("save-ckpt-step-neg", lambda e: save_checkpoint(e.files.root / "ck", -1, 0.0, *e.latest.state,
                                                     TrainConfig(out="x")), ValueError, "step"),
    ("save-ckpt-seconds-nan", lambda e: save_checkpoint(e.files.root / "ck", 1, NAN, *e.latest.state,
                                                        TrainConfig(out="x")), ValueError, "seconds"),
    ("save-ckpt-model", lambda e: save_checkpoint(e.files.root / "ck", 1, 0.0, "unet", *e.latest.state[1:],
                                                  TrainConfig(out="x")), TypeError, "model"),
    ("saved-prediction-str", lambda e: saved_prediction("v_prediction"), TypeError, "saved"),
    ("load-ckpt-empty", lambda e: load_checkpoint(e.files.empty_dir, *e.latest.state), ValueError, "empty_dir"),
    ("load-ckpt-gen", lambda e: load_checkpoint(e.newer.run / "checkpoint", *e.latest.state[:4], None), TypeError,
     "gen"),
    # ------------------------------------------------------------------ files
    ("atomic-write-int", lambda e: _enter(atomic_write(3)), TypeError, "path"),
    ("atomic-write-dir", lambda e: _enter(atomic_write(e.files.empty_dir)), IsADirectoryError, "path"),
    ("write-json-int", lambda e: write_json(3, {}), TypeError, "path"),
    ("write-json-dir", lambda e: write_json(e.files.empty_dir, {}), IsADirectoryError, "path"),
    ("write-json-compact-str", lambda e: write_json(e.files.root / "wj.json", {}, compact="yes"), TypeError,
     "compact"),
    ("write-json-tensor", lambda e: write_json(e.files.root / "wj.json", {"x": torch.zeros(2)}), TypeError,
     "value"),
    ("atomic-folder-file", lambda e: _enter(atomic_folder(e.files.a_file)), NotADirectoryError, "folder"),
    ("atomic-folder-required-str", lambda e: _enter(atomic_folder(e.files.root / "af", "model.safetensors")),
     TypeError, "required"),
    ("complete-folder-file", lambda e: complete_folder(e.files.a_file), NotADirectoryError, "folder"),
    ("complete-folder-none", lambda e: complete_folder(None), TypeError, "folder"),
    ("manifest-required-str", lambda e: manifest_problem(e.files.empty_dir, "abc"), TypeError, "required"),
    ("manifest-folder-int", lambda e: manifest_problem(3), TypeError, "folder"),
    ("verified-folder-file", lambda e: verified_folder("path", e.files.a_file, ("a",), "fix"), NotADirectoryError,
     "path"),
    ("verified-folder-shipped-bare", lambda e: verified_folder("path", e.files.empty_dir, ("a",), "fix", shipped=True),
     ValueError, "no manifest.json"),
    ("write-manifest-names-str", lambda e: write_manifest(e.files.empty_dir, "a.txt"), TypeError, "names"),
    ("write-manifest-outside", lambda e: write_manifest(e.files.empty_dir, ("../a_file",)), ValueError, "'..'"),
    ("write-manifest-missing", lambda e: write_manifest(e.files.empty_dir, ("a.txt",)), FileNotFoundError, "a.txt"),
    ("write-manifest-file", lambda e: write_manifest(e.files.a_file, ()), NotADirectoryError, "folder"),
    ("check-folder-file", lambda e: check_folder("out", e.files.a_file), NotADirectoryError, "out"),
    # ------------------------------------------------------------------ hspace
    ("h-offset-shape", lambda e: _enter(h_offset(e.model, torch.zeros(3))), ValueError, "offset"),
    ("h-offset-list", lambda e: _enter(h_offset(e.model, [0.0])), TypeError, "offset"),
    ("h-pcs-k-0", lambda e: h_principal_components(e.model, 600, 0, n=4, num_steps=10), ValueError, "k must"),
    ("h-pcs-n-1", lambda e: h_principal_components(e.model, 600, 1, n=1, num_steps=10), ValueError, "n must"),
    ("h-pcs-off-schedule", lambda e: h_principal_components(e.model, 650, 1, num_steps=10), ValueError, "t=650"),
    # ------------------------------------------------------------------ classifier: the folder and its manifest
    ("classifier-path-int", lambda e: load_classifier(3), TypeError, "path"),
    ("classifier-path-file", lambda e: load_classifier(e.files.a_file), NotADirectoryError, "path"),
    ("readout-path-file", lambda e: load_readout(e.files.a_file), NotADirectoryError, "path"),
    ("classifier-truncated", lambda e: load_classifier(e.latest.classifier["truncated"]), ValueError,
     "model.safetensors"),
    ("classifier-json", lambda e: load_classifier(e.latest.classifier["json"]), ValueError, "config.json"),
    ("classifier-other", lambda e: load_classifier(e.latest.classifier["other"]), ValueError, "another architecture"),
    ("classifier-nan", lambda e: load_classifier(e.latest.classifier["nan"]), ValueError, "NaN"),
]


def _orthogonal(basis) -> torch.Tensor:
    """A unit vector orthogonal to span(V) (V has 2 rows in a 64-dimensional space)."""
    V = basis.v.reshape(len(basis.v), -1).double()
    w = torch.randn(V.shape[1], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    w = w - V.T @ (V @ w)
    w = w - V.T @ (V @ w)
    return (w / w.norm()).to(basis.v.dtype).reshape(basis.v.shape[1:])


def _toy_basis():
    return local_basis(geo.random_mlp(3, 4), torch.zeros(3, dtype=torch.float64), 2, method="exact")


def _bomb(root: Path) -> Path:
    """A PNG of a few hundred bytes whose header says 12000×12000 grey pixels (2.3 GB as RGBA floats)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path = root / "bomb.png"
    rows = zlib.compress(b"\x00" * 12001 * 16)  # the first rows; a decoder would go on to 12000
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 12000, 12000, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
    return path


def _alpha_only(root: Path) -> Path:
    """Black ink drawn only through alpha on a transparent canvas: blank once composited onto black."""
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[2:6, 3:5, 3] = 255
    Image.fromarray(rgba, "RGBA").save(root / "alpha_only.png")
    return root / "alpha_only.png"


def _case_id(case) -> str:
    return case.values[0] if hasattr(case, "values") else case[0]


@pytest.mark.parametrize("name, call, error, needle", CASES, ids=[_case_id(c) for c in CASES])
def test_bad_input_is_refused_clearly(e, name, call, error, needle, capsys):
    start = time.perf_counter()
    with pytest.raises(error) as info:
        call(e)
    seconds = time.perf_counter() - start
    if error is SystemExit:  # a usage error: exit status 2, argparse's message on stderr, no traceback
        assert info.value.code == 2
        message = capsys.readouterr().err
    else:
        message = str(info.value)
    assert needle in message, f"{name}: the message does not name {needle!r}: {message}"
    assert "Traceback" not in message
    assert seconds < LIMIT_S, f"{name} took {seconds:.1f} s to fail"


def test_the_table_is_large():
    assert len(CASES) >= 150


# ---------------------------------------------------------------------------------- end to end

@pytest.mark.parametrize("flags, flag", [(["--fraction", "2.0"], "--fraction"), (["--t", "0.6"], "--t"),
                                         (["--strength", "nan"], "--strength")])
def test_cli_usage_error_in_a_real_process(flags, flag):
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "labkit", "directions", *flags], capture_output=True, text=True,
                         check=False, timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr and f"argument {flag}" in run.stderr
    assert time.perf_counter() - start < 60  # mostly the import of torch


def test_cli_checks_out_before_any_work(e, monkeypatch):
    calls = []
    monkeypatch.setattr("labkit.__main__.load_model", lambda *a, **k: calls.append(a))
    with pytest.raises(SystemExit):
        cli(["directions", "--out", str(e.files.a_file / "sub")])
    assert calls == []


def test_cli_shows_progress_in_the_edit_phase(e, tmp_path, capsys):
    cli(["directions", "--model", str(e.tiny_dir), "--steps", "10", "--k", "2", "--columns", "2",
         "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert "edit (one row per direction)" in err and "2/2" in err


# ---------------------------------------------------------------------------------- the basis cache

def test_cache_is_keyed_by_weights_not_by_name(tiny_dir, tmp_path):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_dir, folder)
    first = load_model(folder)
    sample = sample_at(first, 0, 600, 10)
    a = sample_basis(first, sample, 2, method="exact", cache_dir=tmp_path / "cache")
    # "retrain" in the same folder: same name, other weights
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    save_file({n: t * 1.5 for n, t in load_file(weights).items()}, weights)
    second = load_model(folder)
    assert second.name == first.name
    b = sample_basis(second, sample, 2, method="exact", cache_dir=tmp_path / "cache")
    fresh = sample_basis(second, sample, 2, method="exact")
    assert torch.allclose(b.sigma, fresh.sigma) and not torch.allclose(a.sigma, b.sigma)
    assert len(list((tmp_path / "cache").iterdir())) == 2
    # the first model's entry is still there and used
    again = sample_basis(first, sample, 2, method="exact", cache_dir=tmp_path / "cache")
    assert torch.equal(again.v, a.v)


def test_cache_tells_float64_from_float32(tiny_dir, tmp_path):
    m32, m64 = load_model(tiny_dir), load_model(tiny_dir, dtype=torch.float64)
    s32 = sample_at(m32, 0, 600, 10)
    s64 = Sample(x_t=s32.x_t.double(), t=s32.t, num_steps=s32.num_steps, seed=s32.seed)
    b32 = sample_basis(m32, s32, 2, method="exact", cache_dir=tmp_path)
    b64 = sample_basis(m64, s64, 2, method="exact", cache_dir=tmp_path)
    assert b32.v.dtype == torch.float32 and b64.v.dtype == torch.float64
    assert len(list(tmp_path.iterdir())) == 2


def test_cache_weights_changed_in_place_are_a_new_key(tiny_dir, tmp_path):
    model = load_model(tiny_dir)
    sample = sample_at(model, 0, 600, 10)
    a = sample_basis(model, sample, 2, method="exact", cache_dir=tmp_path)
    with torch.no_grad():
        model.unet.conv_in.weight.mul_(2.0)
    b = sample_basis(model, sample, 2, method="exact", cache_dir=tmp_path)
    assert not torch.allclose(a.sigma, b.sigma) and len(list(tmp_path.iterdir())) == 2


def test_cache_options_are_part_of_the_key(e, tmp_path):
    a = sample_basis(e.model, e.sample, 2, cache_dir=tmp_path, tol=1e-2)
    sample_basis(e.model, e.sample, 2, cache_dir=tmp_path, tol=1e-3, progress=False)
    sample_basis(e.model, e.sample, 2, cache_dir=tmp_path, tol=1e-2, progress=True)  # progress: same key
    assert len(list(tmp_path.iterdir())) == 2 and a.v.shape == (2, 1, 1, 8, 8)


def test_corrupt_cache_entry_is_reported_and_recomputed(e, tmp_path):
    first = sample_basis(e.model, e.sample, 2, method="exact", cache_dir=tmp_path)
    (entry,) = tmp_path.iterdir()
    entry.write_bytes(b"\x00" * 100)
    with pytest.warns(RuntimeWarning, match=str(entry.name)):
        again = sample_basis(e.model, e.sample, 2, method="exact", cache_dir=tmp_path)
    assert torch.allclose(again.v, first.v)
    rewritten = sample_basis(e.model, e.sample, 2, method="exact", cache_dir=tmp_path)
    assert torch.equal(rewritten.v, again.v)


def test_save_basis_metadata_round_trip(e, tmp_path):
    save_basis(e.basis, tmp_path / "b.safetensors", {"my_method": "x", "t": 600})
    assert torch.equal(load_basis(tmp_path / "b.safetensors").v, e.basis.v)


# ---------------------------------------------------------------------------------- results, not errors

def test_transport_of_a_vector_inside_the_span_still_works(e):
    moved = transport_direction(e.basis, e.other, e.basis.v[0])
    assert math.isclose(float(moved.norm()), 1.0, rel_tol=1e-5)


def test_rank_deficient_map_warns_for_the_zero_directions():
    def f(z):  # R^4 -> R^3 of rank 2: asking for k = 3 directions asks for one that does not exist
        return torch.stack([2.0 * z[0], z[0] + z[1], 0.0 * z[2]])

    with pytest.warns(RuntimeWarning, match="rank 2 < k = 3"):
        local_basis(f, torch.zeros(4, dtype=torch.float64), 3, method="exact")


def test_rgba_transparent_white_background_reads_as_black(tmp_path):
    rgba = np.full((8, 8, 4), 255, np.uint8)
    rgba[..., 3] = 0  # transparent everywhere, white underneath
    rgba[2:6, 3:5, 3] = 255  # a white stroke, opaque
    Image.fromarray(rgba, "RGBA").save(tmp_path / "digit.png")
    image = read_image(tmp_path / "digit.png", (1, 8, 8))
    assert image[0, 0, 0, 0] == -1.0 and image[0, 0, 3, 3] == 1.0
    assert int((image > 0).sum()) == 8


def test_sixteen_bit_png_is_scaled_by_65535(tmp_path):
    Image.fromarray(np.full((8, 8), 65535, np.uint16)).save(tmp_path / "white16.png")
    assert torch.allclose(read_image(tmp_path / "white16.png", (1, 8, 8)), torch.ones(1, 1, 8, 8))


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    import tracemalloc

    path = _bomb(tmp_path)
    assert path.stat().st_size < 2_000_000
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(ValueError, match="12000×12000"):
        read_image(path, (1, 28, 28))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert time.perf_counter() - start < 1.0 and peak < 50_000_000


# ---------------------------------------------------------------------------------- the hub's deadline

def _serve(handler_factory) -> tuple[int, threading.Event]:
    """A TCP server on 127.0.0.1 running handler(connection) per client, in a daemon thread."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def loop():
        server.settimeout(0.2)
        held = []
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            held.append(conn)
            handler_factory(conn)
        for conn in held:
            conn.close()
        server.close()

    threading.Thread(target=loop, daemon=True).start()
    return server.getsockname()[1], stop


def _silent(conn):  # accepts TCP, never answers TLS
    pass


def _plain_http(conn):  # speaks plain HTTP where TLS is expected: a broken certificate exchange
    try:
        conn.recv(4096)
        conn.sendall(b"HTTP/1.0 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    except OSError:
        pass


def _self_signed_server(tmp_path) -> tuple[int, threading.Event]:
    """HTTPS with a self-signed certificate (made by openssl), which verification must refuse."""
    import shutil
    import ssl

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True, timeout=60)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    def handshake(conn):
        try:
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(4096)
        except (OSError, ssl.SSLError):
            pass

    return _serve(lambda conn: threading.Thread(target=handshake, args=(conn,), daemon=True).start())


class _NotFound(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    return constants


@pytest.mark.parametrize("kind", ["silent", "plain-http", "self-signed", "refused"])
def test_hub_fails_within_the_deadline_with_one_message(kind, tmp_path, empty_hub_cache, monkeypatch):
    if kind == "self-signed":
        port, stop = _self_signed_server(tmp_path)
    elif kind == "refused":
        probe = socket.create_server(("127.0.0.1", 0))
        port, stop = probe.getsockname()[1], threading.Event()
        probe.close()
    else:
        port, stop = _serve(_silent if kind == "silent" else _plain_http)
    monkeypatch.setattr(empty_hub_cache, "ENDPOINT", f"https://127.0.0.1:{port}")
    start = time.perf_counter()
    try:
        with pytest.raises(ModelUnavailableError) as info:
            load_model("someone/some-ddpm")
    finally:
        stop.set()
    seconds = time.perf_counter() - start
    message = str(info.value)
    assert seconds < HUB_DEADLINE_S + 6, f"{kind}: {seconds:.1f} s"  # the deadline, plus the local-cache look-up
    assert "someone/some-ddpm" in message and "--local-dir" in message and "config.json" not in message
    assert ("did not answer" if kind == "silent" else "unreachable") in message


def test_hub_without_the_model_says_so(empty_hub_cache, monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(empty_hub_cache, "ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    try:
        start = time.perf_counter()
        with pytest.raises(ModelUnavailableError, match="no public model 'someone/some-ddpm'"):
            load_model("someone/some-ddpm")
        assert time.perf_counter() - start < HUB_DEADLINE_S + 6
    finally:
        server.shutdown()


def test_model_quality_asks_the_hub_with_load_models_deadline(tmp_path, empty_hub_cache, monkeypatch, capsys):
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there: the connection is refused
    monkeypatch.setattr(empty_hub_cache, "ENDPOINT", f"https://127.0.0.1:{port}")
    start = time.perf_counter()
    with pytest.raises(SystemExit) as exit_:
        _bench("model_quality").main(["--model", "someone/some-ddpm", "--out", str(tmp_path)])
    assert exit_.value.code == 2 and time.perf_counter() - start < HUB_DEADLINE_S + 6
    message = capsys.readouterr().err
    assert "argument --model" in message and "someone/some-ddpm" in message and "unreachable" in message


# ---------------------------------------------------------------------------------- valid input of another type

def test_numpy_integers_are_integers():
    factors = sample_factors(np.int64(4), seed=np.int64(2))
    assert len(factors["scale"]) == 4
    assert torch.equal(factors["scale"], sample_factors(4, seed=2)["scale"])
    assert render(factors, size=np.int64(16), supersample=np.int32(1)).shape == (4, 3, 16, 16)
    assert len(to_png(np.zeros((4, 4)), pixel_size=np.int64(2))) > 0


def test_the_render_bound_is_where_memory_says(tmp_path):
    """16,384 scenes at the default size are allowed (the bound), one more is refused before allocating."""
    from labkit.worlds import MAX_SUBPIXELS, check_render_size

    check_render_size(MAX_SUBPIXELS // (32 * 2) ** 2, 32, 2)
    with pytest.raises(ValueError, match="16384 scenes per call"):
        check_render_size(MAX_SUBPIXELS // (32 * 2) ** 2 + 1, 32, 2)
