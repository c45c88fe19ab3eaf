"""Park et al.'s Stable Diffusion experiments on the miniature, where the prompt's words are ground truth.

    python benchmarks/sd_prompts.py                                        # shapes-sd (once it is trained)
    python benchmarks/sd_prompts.py --model runs/shapes-sd --samples 4 --fractions 0.6 --out /tmp/sdp.json

A prompt of the shapes world names some of its seven factors in words (labkit.captions) and
leaves the rest free, so "how similar are two prompts" is a count: the factors they name alike.
On a text-conditioned latent model (labkit.latent: the miniature ``shapes-sd``, or any Stable
Diffusion pipeline folder), for N samples (noise seeds) and timesteps t (fractions of T):

1. **tangent**: the tangent space across prompts. A reference scene's full caption A names all
   seven factors; prompt B_j names the same seven, j of them (a random order, nested in j) with
   A's word and the other 7 − j with another word; B_7 = A, encoded again: the known answer 1.
   x_t is sampled under A at ``--guidance-scale``; the local basis (top-k right singular vectors
   of ∂h/∂x_t, h the mid-block output under the prompt) under A and under B_j at the same x_t;
   their similarity is the mean squared cosine of the principal angles, ‖V_Aᵀ V_B‖²_F / k
   (labkit.analysis.cross_sample_similarity), against a random k-subspace (per sample) and its
   expectation k/n. Reported per j and t, and at each j the change from the largest to the
   smallest t (paired over samples): does the prompt matter less at small t? A top-k subspace also
   turns further when the gap between σ_k and σ_{k+1} shrinks, even if the map changes no more
   (Davis–Kahan), so each unit also records what the similarity cannot separate: the spectrum
   σ_1..σ_{k+1} under A, and two measures of how much B_j changes the map itself, free of any gap:
   the relative change of h, ‖h_B − h_A‖ / ‖h_A‖, and of the Jacobian on random probes r,
   (Σ_r ‖(J_B − J_A) r‖² / Σ_r ‖J_A r‖²)^½, whose square estimates ‖J_B − J_A‖²_F / ‖J_A‖²_F.
2. **free**: under a prompt naming q factors (the first q of the sample's order), do the top-k
   directions move the factors the prompt leaves free? Each direction and k random ones are
   edited (``--edit``) and matched to ``--budgets`` (labkit.budget.match_budget), the edits are
   decoded to pixels and scored by chapter 14's scorer (labkit.scoring.score_edits with the
   world's read-out): the response R (directions × factors). The share of a direction's response
   on the free factors, Σ_free R / Σ R, averaged over directions, against the random directions'
   share on the same sample (paired difference). A direction blind to the prompt gets about the
   random share; q = 0 leaves everything free (share 1). The named factors are a fresh random
   subset for each sample, so (7 − q)/7 is what a direction blind to the prompt puts on the free
   factors on average over samples. The RMS pixel change is recorded for top and random edits apart.
3. **guidance**: under a prompt naming ``--guidance-named`` factors, the sample and its basis at
   each guidance scale w (``--scales``): the similarity of the bases between scales, and the
   prompt faithfulness of the edits (labkit.captions.faithful: every named factor read back from
   the decoded, edited image as named) per scale, with paired differences against the first
   scale, and per scale the paired difference between an edit's faithfulness and its unedited
   sample's. h does not depend on w (it is the conditional branch), so the bases differ only
   through the sample x_t(w); the basis under the last scale at the first scale's x_t is the
   known answer 1.

Budgets are RMS changes of the finished **latent** (match_budget measures finish's output, which
for a latent model is z₀); each edit's RMS pixel change after decoding is reported beside it.

Every (experiment, t, sample) unit is a file in OUT.units/, keyed by the configuration, the
weights and the unit code, so a stopped run goes on where it stopped and a changed one never
reuses a stale unit. When all exist, the merge writes OUT: per-sample values (in the order of
``seeds``), means with 95% bootstrap intervals (labkit.stats.bootstrap_ci), paired differences
(labkit.stats.paired_difference). Numbers from a random pipeline mean nothing; they test the
mechanics.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import itertools
import json
import math
import os
import time
from pathlib import Path

import torch

from labkit import budget, captions, latent, scoring, worlds
from labkit.analysis import cross_sample_similarity
from labkit.budget import image_change, match_budget
from labkit.cache import weights_fingerprint
from labkit.checks import device_arg, float_arg, int_arg
from labkit.diffusion import h_space, sample_at, timestep_at
from labkit.editing import sample_basis
from labkit.files import write_json
from labkit.latent import DEFAULT_GUIDANCE, LatentDiffusionModel
from labkit.models import EMBEDDED_MODELS, HUB_ID, ModelUnavailableError, load_model
from labkit.readout import load_readout, read_factors
from labkit.scoring import basis_summary, score_edits, select, world_instrument
from labkit.spectral import jvps
from labkit.stats import bootstrap_ci, paired_difference

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = ("tangent", "free", "guidance")
NAMES = tuple(worlds.FACTORS)
# the seeds of the scenes whose words make each sample's prompts, and of the factors' random order
SCENE_SEED, ORDER_SEED, RANDOM_SEED, PROBE_SEED = 3 * 10**6, 4 * 10**6, 5 * 10**6, 6 * 10**6
PROBES = 8  # random tangents per sample for the Jacobian's change (a trace estimate: its error falls as 1/√probes)


# --------------------------------------------------------------------------------------------
# Prompts and directions
# --------------------------------------------------------------------------------------------

def scene_words(seed: int) -> tuple[dict[str, str], list[str], dict[str, str]]:
    """Sample seed's scene in words ({factor: word}), a random order of the factors, and for each
    factor another word than the scene's (the word a prompt that does not share it uses)."""
    words = captions.describe(worlds.sample_factors(1, seed=SCENE_SEED + seed), 0)
    gen = torch.Generator().manual_seed(ORDER_SEED + seed)
    order = [NAMES[i] for i in torch.randperm(len(NAMES), generator=gen).tolist()]
    other = {}
    for name in NAMES:
        choices = [w for w in captions.WORDS_OF[name] if w != words[name]]
        other[name] = choices[int(torch.randint(len(choices), (), generator=gen))]
    return words, order, other


def shared_prompt(words: dict[str, str], order: list[str], other: dict[str, str], j: int) -> str:
    """The caption naming all seven factors: the first j of ``order`` with the scene's word, the rest with another."""
    return captions.caption({name: words[name] if name in order[:j] else other[name] for name in NAMES})


def random_frame(k: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """k random orthonormal directions (k, *shape): QR of a seeded Gaussian matrix."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(math.prod(shape), k, generator=g, dtype=torch.float64))
    return q.T.float().reshape(k, *shape)


def similarity(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖Q_aᵀ Q_b‖²_F / k of two k-frames (k, ...): the mean squared cosine of their principal angles."""
    return cross_sample_similarity([a, b])["mean"]


def map_at(model: LatentDiffusionModel, t: int, x_t: torch.Tensor, probes: torch.Tensor) \
        -> tuple[torch.Tensor, torch.Tensor]:
    """h = f_t(x_t) under the model's prompt, and J r for each probe r (PROBES, *x_t.shape)."""
    f = h_space(model, t)
    with torch.no_grad():
        h = f(x_t)
    return h, jvps(f, x_t, probes).detach()


def map_change(reference: tuple[torch.Tensor, torch.Tensor], other: tuple[torch.Tensor, torch.Tensor]) \
        -> tuple[float, float]:
    """‖h_B − h_A‖ / ‖h_A‖ and (Σ_r ‖J_B r − J_A r‖² / Σ_r ‖J_A r‖²)^½ from two map_at results (A first)."""
    (h_a, jr_a), (h_b, jr_b) = reference, other
    h_change = float((h_b - h_a).double().norm() / h_a.double().norm())
    jacobian_change = float(((jr_b - jr_a).double().pow(2).sum() / jr_a.double().pow(2).sum()).sqrt())
    return h_change, jacobian_change


def decoded(model: LatentDiffusionModel, edits: budget.BudgetedEdits) -> budget.BudgetedEdits:
    """The same edits with their finished latents decoded to images in [-1, 1], for the read-out."""
    with torch.no_grad():
        images = torch.cat([model.decode(z).clamp(-1, 1) for z in edits.images.split(64)])
        unedited = model.decode(edits.unedited).clamp(-1, 1)
    return budget.BudgetedEdits(**{**{n: getattr(edits, n) for n in budget.BudgetedEdits.__dataclass_fields__},
                                   "images": images.float(), "unedited": unedited.float()})


def free_share(response: torch.Tensor, named: list[str]) -> tuple[float, list[float]]:
    """Σ_free R / Σ R per direction (NaN where it has no matched edit or moved nothing), and their mean."""
    free = torch.tensor([name not in named for name in NAMES])
    total = response.sum(1)
    share = torch.where(total > 0, response[:, free].sum(1) / total, torch.nan)
    finite = share[torch.isfinite(share)]
    return (float(finite.mean()) if len(finite) else math.nan), share.tolist()


# --------------------------------------------------------------------------------------------
# The units: one (experiment, t, sample) each
# --------------------------------------------------------------------------------------------

def tangent_unit(model: LatentDiffusionModel, fraction: float, seed: int, args) -> dict:
    """Experiment 1 at one sample: the similarity of the bases under A and under each B_j at A's x_t."""
    t = timestep_at(model, fraction, args.steps)
    words, order, other = scene_words(seed)
    prompt = captions.caption(words)
    reference = model.conditioned(prompt, guidance_scale=args.guidance_scale)
    sample = sample_at(reference, seed, t, args.steps)
    basis = sample_basis(reference, sample, args.k)
    v, residual = basis.v.squeeze(1), [float(basis.residual.max())]
    # σ_{k+1} for the gap: one more direction, from a basis of its own (the similarities keep the k-bases)
    wide = sample_basis(reference, sample, args.k + 1)
    gen = torch.Generator().manual_seed(PROBE_SEED + seed)
    probes = torch.randn(PROBES, *sample.x_t.shape, generator=gen).to(sample.x_t)
    at_a = map_at(reference, t, sample.x_t, probes)
    out = {"prompt": prompt, "prompts": {}, "similarity": {}, "h_change": {}, "jacobian_change": {},
           "sigma": wide.sigma.tolist()}
    for j in args.shared:
        text = shared_prompt(words, order, other, j)
        conditioned = model.conditioned(text, guidance_scale=args.guidance_scale)
        b = sample_basis(conditioned, sample, args.k)
        out["prompts"][str(j)] = text
        out["similarity"][str(j)] = similarity(v, b.v.squeeze(1))
        out["h_change"][str(j)], out["jacobian_change"][str(j)] = map_change(at_a, map_at(conditioned, t, sample.x_t,
                                                                                          probes))
        residual.append(float(b.residual.max()))
    out["random"] = similarity(v, random_frame(args.k, model.sample_shape, RANDOM_SEED + seed))
    return {**out, "t": t, "residual_max": max(residual)}


def free_unit(model: LatentDiffusionModel, fraction: float, seed: int, args, instrument) -> dict:
    """Experiment 2 at one sample: per m, the top-k and k random directions' response shares on free factors."""
    t = timestep_at(model, fraction, args.steps)
    words, order, _ = scene_words(seed)
    out: dict = {"t": t, "named": {}}
    for m in args.named:
        named = order[:m]
        prompt = captions.caption({name: words[name] for name in named})
        conditioned = model.conditioned(prompt, guidance_scale=args.guidance_scale)
        sample = sample_at(conditioned, seed, t, args.steps)
        top = sample_basis(conditioned, sample, args.k).v.squeeze(1)
        rand = random_frame(args.k, model.sample_shape, RANDOM_SEED + 1000 * m + seed)
        edits = decoded(model, match_budget(conditioned, sample, torch.cat([top, rand]), args.budgets, args.edit,
                                            max_rounds=args.max_rounds, **_edit_options(args)))
        scores = score_edits(instrument, edits)
        record: dict = {"prompt": prompt, "named": named}
        for which, rows in (("top", range(args.k)), ("random", range(args.k, 2 * args.k))):
            part = select(scores, rows)
            share, per_direction = free_share(part.response, named)
            matched = part.edits.matched  # the decoder may stretch top and random edits differently
            record[which] = {"share_free": share, "per_direction": per_direction, "summary": basis_summary(part),
                             "response": part.response.tolist(),
                             "pixel_change": float(image_change(part.edits.images[matched], part.edits.unedited)
                                                   .mean()) if matched.any() else math.nan}
        out["named"][str(m)] = record
    return out


def guidance_unit(model: LatentDiffusionModel, fraction: float, seed: int, args, readout) -> dict:
    """Experiment 3 at one sample: per scale w, its sample's basis and the faithfulness of its edits."""
    t = timestep_at(model, fraction, args.steps)
    words, order, _ = scene_words(seed)
    named = {name: words[name] for name in order[:args.guidance_named]}
    prompt = captions.caption(named)
    out: dict = {"t": t, "prompt": prompt, "scales": {}}
    frames, samples = {}, {}
    for w in args.scales:
        conditioned = model.conditioned(prompt, guidance_scale=w)
        sample = samples[w] = sample_at(conditioned, seed, t, args.steps)
        frames[w] = sample_basis(conditioned, sample, args.k).v.squeeze(1)
        edits = decoded(model, match_budget(conditioned, sample, frames[w], args.budgets, args.edit,
                                            max_rounds=args.max_rounds, **_edit_options(args)))
        right = captions.faithful(named, read_factors(torch.cat([edits.unedited, edits.images]), readout))
        every = torch.stack(list(right.values())).all(0)
        matched = edits.matched
        out["scales"][str(w)] = {
            "faithful_unedited": float(every[0]),
            "faithful_edited": float(every[1:][matched].double().mean()) if matched.any() else math.nan,
            "matched": int(matched.sum()), "edits": len(matched),
            "pixel_change": float(image_change(edits.images[matched], edits.unedited).mean()) if matched.any()
            else math.nan}
    pairs = itertools.combinations(args.scales, 2)
    out["similarity"] = {f"{a}|{b}": similarity(frames[a], frames[b]) for a, b in pairs}
    first, last = args.scales[0], args.scales[-1]
    same = sample_basis(model.conditioned(prompt, guidance_scale=last), samples[first], args.k).v.squeeze(1)
    out["same_latent_similarity"] = similarity(frames[first], same)
    return out


def _edit_options(args) -> dict:
    return {"n_iter": args.n_iter} if args.edit == "guidance" else {}


UNIT_CODE = (scene_words, shared_prompt, random_frame, similarity, map_at, map_change, decoded, free_share,
             tangent_unit, free_unit, guidance_unit, _edit_options)
CODE = tuple(Path(m.__file__) for m in (budget, captions, latent, scoring))


def code_key() -> str:
    """sha256 of what a unit's numbers depend on: the modules' files and the unit functions' source."""
    parts = [path.read_bytes() for path in CODE] + [inspect.getsource(f).encode() for f in UNIT_CODE]
    return hashlib.sha256(b"".join(parts)).hexdigest()


# --------------------------------------------------------------------------------------------
# The merge: per-sample values, intervals, paired differences
# --------------------------------------------------------------------------------------------

def interval(values: list[float], args) -> dict:
    """Mean and 95% bootstrap interval over the finite per-sample values (kept, NaN as None, in seed order)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    mean = low = high = finite[0] if len(finite) == 1 else math.nan
    if len(finite) >= 2:
        mean, low, high = bootstrap_ci(finite, n_resamples=args.resamples)
    return {"mean": mean, "low": low, "high": high, "n": len(finite), "per_sample": values}


def paired(a: list[float], b: list[float], args) -> dict:
    """a − b on the same samples (labkit.stats.paired_difference); with fewer than 2 complete pairs, just n."""
    n = sum(math.isfinite(x) and math.isfinite(y) for x, y in zip(a, b))
    if n < 2:
        return {"n": n, "mean_difference": math.nan, "low": math.nan, "high": math.nan, "p": math.nan}
    return paired_difference(a, b, n_resamples=args.resamples)


def merge(units: dict[str, list[dict]], args, n: int) -> dict:
    out: dict = {}
    if "tangent" in units:
        by_fraction = {}
        for fraction in args.fractions:
            us = [u for u in units["tangent"] if u["fraction"] == fraction]
            by_fraction[str(fraction)] = {
                "t": us[0]["t"], "random": interval([u["random"] for u in us], args),
                "shared": {str(j): interval([u["similarity"][str(j)] for u in us], args) for j in args.shared},
                "h_change": {str(j): interval([u["h_change"][str(j)] for u in us], args) for j in args.shared},
                "jacobian_change": {str(j): interval([u["jacobian_change"][str(j)] for u in us], args)
                                    for j in args.shared},
                "sigma": {str(i + 1): interval([u["sigma"][i] for u in us], args) for i in range(args.k + 1)},
                "gap_ratio": interval([u["sigma"][args.k] / u["sigma"][args.k - 1] for u in us], args),
                "residual_max": max(u["residual_max"] for u in us)}
        small, large = str(min(args.fractions)), str(max(args.fractions))

        def trend(measure: str) -> dict:
            return {} if small == large else {
                str(j): paired(by_fraction[small][measure][str(j)]["per_sample"],
                               by_fraction[large][measure][str(j)]["per_sample"], args) for j in args.shared}
        out["tangent"] = {"random_expected": args.k / n, "probes": PROBES, "by_fraction": by_fraction,
                          "smallest_minus_largest_t": {"fractions": [small, large], "by_shared": trend("shared"),
                                                       "jacobian_change": trend("jacobian_change"),
                                                       "h_change": trend("h_change")}}
    if "free" in units:
        by_fraction = {}
        for fraction in args.edit_fractions:
            us = [u for u in units["free"] if u["fraction"] == fraction]
            cell = by_fraction[str(fraction)] = {"t": us[0]["t"]}
            for m in map(str, args.named):
                top = [u["named"][m]["top"]["share_free"] for u in us]
                rand = [u["named"][m]["random"]["share_free"] for u in us]
                cell[m] = {"top": interval(top, args), "random": interval(rand, args),
                           "top_minus_random": paired(top, rand, args) if m != "0" else None,
                           "uniform_share": (len(NAMES) - int(m)) / len(NAMES),
                           "pixel_change": {w: interval([u["named"][m][w]["pixel_change"] for u in us], args)
                                            for w in ("top", "random")},
                           "unmatched": sum(u["named"][m][w]["summary"]["unmatched"] for u in us
                                            for w in ("top", "random"))}
        out["free"] = {"by_fraction": by_fraction}
    if "guidance" in units:
        by_fraction = {}
        for fraction in args.edit_fractions:
            us = [u for u in units["guidance"] if u["fraction"] == fraction]
            scales = list(map(str, args.scales))
            faithful = {w: [u["scales"][w]["faithful_edited"] for u in us] for w in scales}
            unedited = {w: [u["scales"][w]["faithful_unedited"] for u in us] for w in scales}
            by_fraction[str(fraction)] = {
                "t": us[0]["t"],
                "similarity": {pair: interval([u["similarity"][pair] for u in us], args)
                               for pair in us[0]["similarity"]},
                "same_latent_similarity": interval([u["same_latent_similarity"] for u in us], args),
                "faithful_edited": {w: interval(faithful[w], args) for w in scales},
                "faithful_unedited": {w: interval(unedited[w], args) for w in scales},
                "faithful_minus_first_scale": {w: paired(faithful[w], faithful[scales[0]], args) for w in scales[1:]},
                "edited_minus_unedited": {w: paired(faithful[w], unedited[w], args) for w in scales},
                "pixel_change": {w: interval([u["scales"][w]["pixel_change"] for u in us], args) for w in scales},
                "unmatched": {w: sum(u["scales"][w]["edits"] - u["scales"][w]["matched"] for u in us) for w in scales}}
        out["guidance"] = {"named": args.guidance_named, "by_fraction": by_fraction}
    return out


# --------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------

def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    fraction = float_arg(0.0, 1.0, low_open=True)
    parser.add_argument("--model", default="shapes-sd",
                        help="the miniature (default), a Stable Diffusion pipeline folder, or a cached hub id")
    parser.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS), choices=EXPERIMENTS)
    parser.add_argument("--samples", type=int_arg(2, 10_000), default=24, help="noise seeds SEED..SEED+N−1")
    parser.add_argument("--fractions", type=fraction, nargs="+", default=[0.2, 0.4, 0.6, 0.8, 1.0],
                        help="t as fractions of T for the tangent experiment")
    parser.add_argument("--edit-fractions", type=fraction, nargs="+", default=[0.6],
                        help="t as fractions of T for the free and guidance experiments (they edit)")
    parser.add_argument("--k", type=int_arg(1, 64), default=4, help="directions per basis")
    parser.add_argument("--shared", type=int_arg(0, len(NAMES)), nargs="+", default=list(range(len(NAMES) + 1)),
                        help="tangent: how many of the seven factors prompt B names as A does (7: B = A)")
    parser.add_argument("--named", type=int_arg(0, len(NAMES) - 1), nargs="+", default=[0, 2, 4, 6],
                        help="free: how many factors the prompt names (at least one stays free)")
    parser.add_argument("--guidance-named", type=int_arg(1, len(NAMES)), default=4,
                        help="guidance: how many factors the prompt names")
    parser.add_argument("--scales", type=float_arg(0.0, latent.MAX_GUIDANCE), nargs="+", default=[1.0, 3.0, 7.5],
                        help="guidance: the classifier-free guidance scales compared")
    parser.add_argument("--guidance-scale", type=float_arg(0.0, latent.MAX_GUIDANCE), default=DEFAULT_GUIDANCE,
                        help="tangent and free: the scale the samples are drawn and edited at")
    parser.add_argument("--budgets", type=float_arg(0.0, 1.0, low_open=True), nargs="+", default=[0.1],
                        help="RMS changes of the finished latent every edit is matched to, both signs")
    parser.add_argument("--edit", default="guidance", choices=("guidance", "naive"),
                        help="x-space guidance (Park et al.) or the naive step x_t + γv")
    parser.add_argument("--n-iter", type=int_arg(1, 1000), default=16, help="x-space guidance iterations")
    parser.add_argument("--max-rounds", type=int_arg(1, 50), default=5,
                        help="edits tried per budget before it counts unmatched")
    parser.add_argument("--steps", type=int_arg(1, 1000), default=20, help="DDIM steps")
    parser.add_argument("--resamples", type=int_arg(100, 10**6), default=2000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int_arg(0, 2**31), default=0, help="the first noise seed")
    parser.add_argument("--device", type=device_arg, default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "sd_prompts_cpu.json"))
    args = parser.parse_args(argv)
    # every flag is checked here, before any work
    for flag in ("experiments", "fractions", "edit_fractions", "shared", "named", "scales", "budgets"):
        values = getattr(args, flag)
        if len(set(values)) != len(values):
            parser.error(f"--{flag.replace('_', '-')} lists a value twice ({values}); give each once")
    if len(args.scales) < 2:
        parser.error(f"--scales must give at least two guidance scales to compare, got {args.scales}")
    model = args.model
    if model not in EMBEDDED_MODELS:
        if Path(model).is_dir():
            if not (Path(model) / "model_index.json").is_file():
                parser.error(f"--model {model!r} is a folder without model_index.json: not a Stable Diffusion "
                             "pipeline (save one with StableDiffusionPipeline.save_pretrained)")
        elif not HUB_ID.match(model):
            parser.error(f"--model must be 'shapes-sd', a pipeline folder or a hub id (owner/name), got {model!r}: "
                         "no such folder")
    out = Path(args.out)
    if out.is_dir() or out.suffix != ".json":
        parser.error(f"--out must be a .json file path (not a folder), got {args.out!r}")
    try:
        (out.parent / (out.name + ".units")).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        parser.error(f"--out: cannot write beside {args.out!r} ({err}); choose a folder you can write to")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    out = Path(args.out)
    try:
        model = load_model(args.model, device=args.device)
    except ModelUnavailableError as err:
        raise SystemExit(f"--model {args.model!r}: {err}") from None
    if not isinstance(model, LatentDiffusionModel):
        raise SystemExit(f"--model {args.model!r} is not text-conditioned: give a Stable Diffusion pipeline")
    readout = load_readout()
    instrument = world_instrument(readout)
    config = {k: v for k, v in vars(args).items() if k not in ("out", "device", "resamples", "experiments")}
    weights = {part: weights_fingerprint(getattr(model, part)) for part in ("unet", "vae", "text_encoder")}
    weights["readout"] = weights_fingerprint(readout)
    # the unit files name their seed, so the key leaves out how many there are: a stopped run is merged
    # by rerunning with --samples set to the samples it finished, and a larger --samples extends it
    keyed = {k: v for k, v in config.items() if k != "samples"}
    key = hashlib.sha256(json.dumps({"config": keyed, "weights": weights, "code": code_key()},
                                    sort_keys=True).encode()).hexdigest()[:16]
    units_dir = out.parent / (out.name + ".units")
    seeds = list(range(args.seed, args.seed + args.samples))
    plan = {"tangent": args.fractions, "free": args.edit_fractions, "guidance": args.edit_fractions}
    run = {"tangent": lambda f, s: tangent_unit(model, f, s, args),
           "free": lambda f, s: free_unit(model, f, s, args, instrument),
           "guidance": lambda f, s: guidance_unit(model, f, s, args, readout)}
    start = time.perf_counter()
    units: dict[str, list[dict]] = {}
    for seed in seeds:  # sample by sample: a stopped run holds its first samples complete
        for experiment in args.experiments:
            for fraction in plan[experiment]:
                path = units_dir / f"{key}-{experiment}-f{fraction}-s{seed}.json"
                if not path.exists():
                    begun = time.perf_counter()
                    record = {"key": key, "experiment": experiment, "fraction": fraction, "sample": seed,
                              **run[experiment](fraction, seed)}
                    record.update(seconds=round(time.perf_counter() - begun, 2),
                                  load_average=round(os.getloadavg()[0], 2))
                    write_json(path, record, compact=True)
                    print(f"{experiment}, sample {seed}, t = {fraction} T: {record['seconds']:.0f} s "
                          f"(load {record['load_average']})", flush=True)
                units.setdefault(experiment, []).append(json.loads(path.read_text()))
    seconds = [u["seconds"] for us in units.values() for u in us]
    report = {
        "model": args.model, "weights_sha256": weights, "config": config, "key": key, "seeds": seeds,
        "factors": list(NAMES), "sample_shape": list(model.sample_shape), "budgets_are": "RMS latent change",
        "timing": {"unit_seconds_total": round(sum(seconds), 1), "units": len(seconds),
                   "this_call_seconds": round(time.perf_counter() - start, 1), "torch_threads": torch.get_num_threads(),
                   "cpu_cores": os.cpu_count(), "device": str(args.device)},
        **merge(units, args, math.prod(model.sample_shape)),
        "units": units,
    }
    report = _strict(report)
    write_json(out, report, compact=True)
    print_tables(report)
    print(f"\n{args.samples} samples, {len(seconds)} units, {sum(seconds):.0f} s of unit time; wrote {out}")
    return report


def _strict(value):
    """NaN and infinities as None: the file is strict JSON (a browser's JSON.parse reads it)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    return value


def _ci(cell: dict) -> str:
    if cell["mean"] is None:
        return f"{'n/a':>22s}"
    return f"{cell['mean']:>8.3f} [{cell['low']:.3f}, {cell['high']:.3f}]"


def print_tables(report: dict) -> None:
    if "tangent" in report:
        tangent = report["tangent"]
        fractions = list(tangent["by_fraction"])
        print(f"\ntangent spaces across prompts: ‖V_Aᵀ V_B‖²_F / k, mean [95% interval] over samples "
              f"(random k-subspaces: {tangent['random_expected']:.4f} expected)")
        print(f"{'shared factors':16s}" + "".join(f"{'t=' + f + 'T':>22s}" for f in fractions))
        for j in tangent["by_fraction"][fractions[0]]["shared"]:
            print(f"{j:16s}" + "".join(_ci(tangent["by_fraction"][f]["shared"][j]) for f in fractions))
        print(f"{'random':16s}" + "".join(_ci(tangent["by_fraction"][f]["random"]) for f in fractions))
        print(f"\nhow much B_j changes the map itself: (Σ_r ‖(J_B − J_A) r‖² / Σ_r ‖J_A r‖²)^½ over "
              f"{tangent['probes']} random probes")
        for j in tangent["by_fraction"][fractions[0]]["jacobian_change"]:
            print(f"{j:16s}" + "".join(_ci(tangent["by_fraction"][f]["jacobian_change"][j]) for f in fractions))
        print(f"{'σ_k+1 / σ_k':16s}" + "".join(_ci(tangent["by_fraction"][f]["gap_ratio"]) for f in fractions))
    if "free" in report:
        print("\nshare of the response on the factors the prompt leaves free, mean [95% interval]")
        for fraction, cell in report["free"]["by_fraction"].items():
            for m, row in ((m, r) for m, r in cell.items() if m != "t"):
                d = row["top_minus_random"]
                diff = "" if d is None or d["mean_difference"] is None else \
                    f"  top − random {d['mean_difference']:+.3f} [{d['low']:.3f}, {d['high']:.3f}] (n {d['n']})"
                print(f"t={fraction}T, {m} named: top-k {_ci(row['top'])}  random {_ci(row['random'])}{diff}")
    if "guidance" in report:
        print("\nguidance scale: faithfulness of the edits (all named factors read back as named), similarity")
        for fraction, cell in report["guidance"]["by_fraction"].items():
            for w, row in cell["faithful_edited"].items():
                d = cell["edited_minus_unedited"][w]
                diff = "" if d["mean_difference"] is None else \
                    f", edited − unedited {d['mean_difference']:+.3f} [{d['low']:.3f}, {d['high']:.3f}]"
                print(f"t={fraction}T, w={w}: faithful edits {_ci(row)}, unedited {_ci(cell['faithful_unedited'][w])}"
                      + diff)
            for pair, row in cell["similarity"].items():
                print(f"t={fraction}T, bases at w={pair.replace('|', ' and w=')}: {_ci(row)}")
            print(f"t={fraction}T, same x_t, first and last w: {_ci(cell['same_latent_similarity'])} (known: 1)")


if __name__ == "__main__":
    main()
