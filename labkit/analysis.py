"""The paper's timestep analysis as a restartable job: local bases over samples × timesteps.

    python -m labkit analyze --samples 8 --fraction 0.2 0.6 1.0 --k 10 --out runs/analysis
    torchrun --nproc-per-node 4 -m labkit analyze --samples 64 --fraction 0.2 0.6 1.0 --k 50 --out runs/big

A *unit* is one (sample, fraction): the sample is x_T drawn from the seed ``sample``, run by DDIM
down to the DDIM timestep t nearest fraction·T (a fraction of T in (0, 1]; t itself is an integer
timestep, as everywhere in labkit). For each unit the job computes

- the local basis of f_t: x_t ↦ h_t (top-k right singular vectors v_i of J = ∂h/∂x_t, σ_i);
- the radial frequency content of each v_i: the share of ‖v_i‖² = 1 in each ring of the 2-D
  discrete Fourier transform, |ω| = √(k_y² + k_x²) rounded to an integer (cycles per image;
  the corners above H/2 go to the last ring), channels summed; and its mean frequency Σ |ω| p;
- the rank of the posterior-mean Jacobian J_pm = ∂x̂₀/∂x_t (Tweedie's x̂₀, labkit.diffusion.
  posterior_mean): all its singular values, exactly (full Jacobian) when n = dim x ≤ EXACT_PM_MAX,
  else its top k by local_basis; two ranks: #{σ_i > 1e-3 σ_1} and the smallest r whose σ_1..σ_r
  hold 99% of Σσ² (for the top-k case, counted within the top k: lower bounds).

Each unit is written atomically (labkit.files.atomic_write) to OUT/units/, its file named by the
unit and by a key of everything else that determines it (the model's weights and schedule, its
dtype, k, steps, tol): a rerun skips the units whose file reads back with this key and computes
the rest, so a rerun with another model or other options never reuses a unit of the old ones,
and a truncated or empty unit (a copy gone wrong) is recomputed, with a warning naming it. A
results.json in OUT that this job did not write is refused before any work. Under torchrun each
rank takes every world_size-th unit of the sorted list, so the split is deterministic and no unit
is assigned twice; after a barrier rank 0 merges everything into OUT/results.json: one record per
unit, and per fraction the cross-sample tangent-space similarity ‖Q_aᵀ Q_b‖_F² / k (the mean squared
cosine of the principal angles between the spans of two samples' v_1..v_k: 1 for the same space,
k/n on average for random ones) for every sample pair, with their mean, min and max.

Explained in: book/part2-diffusion/10_scaling.ipynb
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
import warnings
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from labkit.cache import content_key
from labkit.checks import check_nonzero, check_tensor, show
from labkit.diffusion import h_space, posterior_mean, sample_at, timestep_at
from labkit.files import atomic_write, write_json
from labkit.latent import with_prompt
from labkit.models import DiffusionModel, load_model
from labkit.spectral import local_basis, principal_angles

EXACT_PM_MAX = 4096  # largest n for which the posterior-mean Jacobian is formed explicitly
RANK_REL = 1e-3  # rank: singular values above RANK_REL · σ_1
RANK_ENERGY = 0.99  # rank: fewest singular values holding this share of Σσ²
# Fault injection for the tests: the rank named here kills itself (SIGKILL) after writing this
# many units, as a crashed node would, e.g. LABKIT_ANALYZE_KILL="1:1" for rank 1 after one unit.
KILL_ENV = "LABKIT_ANALYZE_KILL"
# How long a rank that has finished its units waits at the barrier for the others. torch's default
# (30 min for gloo, 10 for NCCL) is shorter than a resumed run's spread: a rerun after a crash leaves
# the ranks unequal work (finished units are skipped), and one rank may still have hours to go.
BARRIER_TIMEOUT = timedelta(hours=48)


@dataclass(frozen=True)
class Job:
    model: str | None  # folder or hub id; None: the embedded model
    samples: int
    fractions: tuple[float, ...]  # timesteps as fractions of T: the DDIM step nearest fraction·T
    k: int
    out: Path
    steps: int = 50
    tol: float = 1e-4
    device: str = "cpu"
    prompt: str | None = None  # a text-conditioned model's prompt (labkit.latent.with_prompt)
    guidance_scale: float | None = None

    def units(self) -> list[tuple[int, float]]:
        return [(s, f) for s in range(self.samples) for f in self.fractions]


def unit_key(model: DiffusionModel, job: Job) -> str:
    """A short hex key of everything besides (sample, fraction) that determines a unit's content."""
    schedule = {name: value for name, value in model.schedule.items() if not name.startswith("_")}  # no versions
    return content_key(weights=model.fingerprint(), schedule=schedule, dtype=str(model.dtype), k=job.k,
                       steps=job.steps, tol=job.tol)[1][:16]


def unit_path(out: Path, sample: int, fraction: float, key: str) -> Path:
    return out / "units" / f"sample{sample:05d}_fraction{fraction:.4f}_{key}.safetensors"


def check_out(out: Path) -> Path:
    """Refuse, before any work, an OUT whose results.json this job did not write (it would be replaced)."""
    results = Path(out) / "results.json"
    if results.exists():
        try:
            ours = {"units", "cross_sample", "definitions"} <= set(json.loads(results.read_text()))
        except (OSError, ValueError, TypeError):
            ours = False
        if not ours:
            raise FileExistsError(f"{str(results)!r} exists and was not written by labkit analyze; it would be "
                                  "replaced: choose another --out (or move that file away)")
    return Path(out)


def radial_spectrum(v: Tensor) -> Tensor:
    """Share of each v_i's squared norm per integer frequency ring. v: (k, C, H, W) → (k, ⌊min(H, W)/2⌋ + 1).

    Ring r holds the 2-D DFT frequencies (k_y, k_x), in cycles per image, with round(√(k_y² + k_x²)) = r;
    the corners beyond min(H, W)/2 go to the last ring; channels are summed. The power |v̂_i(k)|² / (H W)
    of all frequencies adds up to ‖v_i‖² (Parseval), and each row is divided by it: a row sums to 1.
    A pure wave of r cycles per image has all its share in ring r; one bright pixel (|v̂| = 1 everywhere)
    has the share of white noise. Returns float64 on the CPU, whatever v's device.

    Explained in: book/part2-diffusion/07_semantic.ipynb (the frequencies of the directions)
    """
    check_tensor("v", v, shape=(None, None, None, None), hint="k directions (k, C, H, W), e.g. basis.v[:, 0]")
    for i, row in enumerate(v):
        check_nonzero(f"v[{i}]", row, hint="a direction needs a length to have a spectrum")
    H, W = v.shape[-2:]
    power = torch.fft.fft2(v.detach().cpu().double()).abs().pow(2).sum(dim=1) / (H * W)  # (k, H, W): Σ = ‖v_i‖²
    ky, kx = torch.fft.fftfreq(H, 1 / H), torch.fft.fftfreq(W, 1 / W)
    ring = torch.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2).round().long().clamp_max(min(H, W) // 2)
    shares = torch.zeros(len(v), int(ring.max()) + 1, dtype=torch.float64)
    shares.index_add_(1, ring.flatten(), power.flatten(1))
    return shares / shares.sum(dim=1, keepdim=True)


def ranks(sigma: Tensor) -> dict:
    """The two rank definitions of the module docstring, for descending singular values."""
    energy = torch.cumsum(sigma.double() ** 2, 0) / (sigma.double() ** 2).sum()
    return {"rank_rel": int((sigma > RANK_REL * sigma[0]).sum()),
            "rank_energy": int(torch.searchsorted(energy, torch.tensor([RANK_ENERGY], dtype=energy.dtype))) + 1}


def compute_unit(model: DiffusionModel, job: Job, sample: int, fraction: float) -> tuple[dict, dict[str, Tensor]]:
    """One (sample, fraction): the record for results.json and the tensors kept in the unit file."""
    start = time.perf_counter()
    timestep = timestep_at(model, fraction, job.steps)
    x = sample_at(model, sample, timestep, job.steps).x_t
    basis = local_basis(h_space(model, timestep), x, job.k, tol=job.tol)
    shares = radial_spectrum(basis.v[:, 0])
    pm = posterior_mean(model, timestep)
    n = x.numel()
    if n <= EXACT_PM_MAX:
        jac = torch.func.jacrev(pm, chunk_size=64)(x).reshape(n, n)  # chunks bound the memory
        pm_sigma, pm_how = torch.linalg.svdvals(jac.double()), "exact"
    else:
        pm_sigma, pm_how = local_basis(pm, x, job.k, tol=job.tol).sigma, f"top {job.k} (lower bounds)"
    rings = torch.arange(shares.shape[1], dtype=shares.dtype)
    record = {"sample": sample, "fraction": fraction, "timestep": timestep, "sigma": basis.sigma.tolist(),
              "residual_max": basis.residual.max().item(), "products": basis.n_jvp + basis.n_vjp,
              "frequency_shares": shares.tolist(), "mean_frequency": (shares @ rings).tolist(),
              "posterior_mean_rank": {**ranks(pm_sigma), "singular_values": pm_how},
              "posterior_mean_sigma_top": pm_sigma[:job.k].tolist(), "seconds": round(time.perf_counter() - start, 3)}
    return record, {"v": basis.v.detach().cpu().contiguous(), "posterior_mean_sigma": pm_sigma.cpu().contiguous()}


def write_unit(path: Path, record: dict, tensors: dict[str, Tensor]) -> None:
    """Atomic: the unit file either does not exist or is complete."""
    with atomic_write(path) as tmp:
        save_file(tensors, tmp, metadata={"record": json.dumps(record), "written_ns": str(time.time_ns()),
                                          "pid": str(os.getpid())})


def read_unit(path: Path, key: str | None = None) -> tuple[dict, Tensor]:
    """(record, v) of a unit file; ValueError naming the file when it is damaged or has another key."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as file:
            record = json.loads(file.metadata()["record"])
        v = load_file(str(path))["v"]
    except Exception as err:  # safetensors raises its own error types for a damaged file
        raise ValueError(f"unit file {str(path)!r} is unreadable ({type(err).__name__}: {err})") from err
    if key is not None and record.get("key") != key:
        raise ValueError(f"unit file {str(path)!r} was computed with other options (key {record.get('key')!r}, "
                         f"not {key!r})")
    return record, v


def unit_done(path: Path, key: str) -> bool:
    """Whether the unit file is there and reads back with this key; a damaged one is removed, with a warning."""
    if not path.exists():
        return False
    try:
        read_unit(path, key)
        return True
    except ValueError as err:
        warnings.warn(f"{err}; computing it again", RuntimeWarning, stacklevel=2)
        path.unlink(missing_ok=True)
        return False


def cross_sample_similarity(vs: list[Tensor]) -> dict:
    """How alike the tangent spaces of several samples are: for each pair (a, b) of the bases vs
    (each (k, *x.shape), orthonormal rows v_1..v_k, all of one shape), the similarity

        s(a, b) = (1/k) Σ_i cos² θ_i = ‖V_a V_bᵀ‖_F² / k  ∈ [0, 1],

    θ_i the principal angles between the two spans (labkit.spectral.principal_angles): 1 for the
    same span, k/n on average for random ones (n = x.numel()). Returns {"pairs": how many,
    "values": s for each pair in the order of itertools.combinations(vs, 2), "mean", "min", "max",
    "random_baseline": k/n}; one basis has no pairs: only "pairs" (0), "values" ([]) and the baseline.

    Explained in: book/part2-diffusion/07_semantic.ipynb (how similar the tangent spaces are, across t)
    """
    if not isinstance(vs, list | tuple) or not vs:
        raise TypeError(f"vs must be a non-empty list of bases (k, *x.shape), e.g. [b.v for b in bases], "
                        f"got {show(vs)}")
    for i, v in enumerate(vs):
        check_tensor(f"vs[{i}]", v, hint="a basis (k, *x.shape), e.g. basis.v")
        if v.shape != vs[0].shape:
            raise ValueError(f"vs[{i}] has shape {tuple(v.shape)}, vs[0] {tuple(vs[0].shape)}: compare bases of "
                             "one map with the same k")
    k, n = vs[0].shape[0], vs[0][0].numel()
    values = [float((torch.cos(principal_angles(a, b)) ** 2).mean()) for a, b in itertools.combinations(vs, 2)]
    if not values:
        return {"pairs": 0, "values": [], "random_baseline": k / n}
    return {"pairs": len(values), "values": values, "mean": sum(values) / len(values), "min": min(values),
            "max": max(values), "random_baseline": k / n}


def merge(job: Job, key: str) -> dict:
    """Read every unit file of this key and write OUT/results.json (atomically)."""
    missing = [u for u in job.units() if not unit_path(job.out, *u, key).exists()]
    if missing:
        raise RuntimeError(f"{len(missing)} unit(s) have no file in {job.out / 'units'} (e.g. sample "
                           f"{missing[0][0]}, fraction {missing[0][1]}); run the same command again to compute them")
    records, bases = [], {}
    for sample, fraction in job.units():
        record, v = read_unit(unit_path(job.out, sample, fraction, key), key)
        records.append(record)
        bases.setdefault(fraction, []).append(v)
    results = {"model": job.model or "embedded", "prompt": job.prompt, "guidance_scale": job.guidance_scale,
               "samples": job.samples, "fractions": list(job.fractions), "k": job.k,
               "tol": job.tol, "num_steps": job.steps, "unit_key": key,
               "definitions": {"rank_rel": f"#{{σ_i > {RANK_REL:g} σ_1}} of ∂x̂₀/∂x_t",
                               "rank_energy": f"fewest σ_i of ∂x̂₀/∂x_t holding {RANK_ENERGY:.0%} of Σσ²",
                               "similarity": "‖Q_aᵀ Q_b‖_F² / k over sample pairs (mean cos² of principal angles)",
                               "frequency_shares": "share of ‖v_i‖² per integer radial DFT frequency ring"},
               "units": records,
               "cross_sample": [{"fraction": f, **cross_sample_similarity(vs)} for f, vs in bases.items()]}
    write_json(job.out / "results.json", results)
    return results


def run(job: Job) -> Path | None:
    """Run the job in this process, or as one rank of torchrun (RANK, WORLD_SIZE, LOCAL_RANK set).

    Returns OUT/results.json on rank 0 (None on the other ranks).
    """
    check_out(job.out)
    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    device = job.device
    if distributed:
        cuda = torch.device(device).type == "cuda"
        if cuda:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if cuda else "gloo", timeout=BARRIER_TIMEOUT)
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    try:
        model = with_prompt(load_model(job.model, device=device), job.prompt, job.guidance_scale)
        key = unit_key(model, job)
        kill = os.environ.get(KILL_ENV, "")
        kill_rank, kill_after = (int(part) for part in kill.split(":")) if kill else (-1, 0)
        mine = job.units()[rank::world]
        todo = [u for u in mine if not unit_done(unit_path(job.out, *u, key), key)]
        bar = tqdm(todo, desc=f"rank {rank}/{world}: {len(mine) - len(todo)} of {len(mine)} units done before",
                   position=rank, disable=None)
        for done, (sample, fraction) in enumerate(bar, 1):
            record, tensors = compute_unit(model, job, sample, fraction)
            write_unit(unit_path(job.out, sample, fraction, key), {**record, "rank": rank, "key": key}, tensors)
            if rank == kill_rank and done == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
        bar.close()
        if distributed:
            dist.barrier()
        if rank != 0:
            return None
        merge(job, key)
        return job.out / "results.json"
    finally:
        if distributed:
            dist.destroy_process_group()
