"""Training the shapes miniature of Stable Diffusion: a VAE, a CLIP text encoder and a conditional U-Net.

    python -m labkit.train sd --out runs/shapes-sd                    # both stages, resumable
    python -m labkit.train sd --out runs/shapes-sd --stage vae        # the VAE only
    python -m labkit.train sd --out runs/wide --stage diffusion --unet-widths 64 128  # on runs/wide's VAE
    python -m labkit.train sd --out runs/shapes-sd --stage decoder --decoder-steps 9000  # sharpen D after

Two stages, as latent diffusion is trained (Rombach et al., 2022), and an optional third:

1. **vae**: an ``AutoencoderKL`` (32×32×3 → 8×8×4) on fresh renders of ``labkit.worlds``, loss
   ‖D(z) − x‖² + β·KL(q(z|x) ‖ N(0, I)) with z ~ q(z|x) and a small β (the KL only keeps the latent
   near the unit scale). Then its ``scaling_factor`` s = 1/std(z) over 2,000 renders, as SD's 0.18215,
   so that s·z has about unit variance. Written to OUT/vae.
2. **diffusion**: a ``UNet2DConditionModel`` on the latents z₀ = s·z of fresh renders, and a small
   ``CLIPTextModel`` trained with it from scratch on the scenes' captions (``labkit.captions``: a
   random subset of the factors in words; 10% empty, the classifier-free-guidance dropout). Loss
   ‖v − v_θ(z_t, t, c)‖², v = √ᾱ ε − √(1−ᾱ) z₀ (v-prediction, as SD 2.x), SD's scaled-linear β
   schedule. EMA of both networks.
3. **decoder** (``--decoder-steps N``, 0 by default: none): the VAE's decoder fine-tuned alone, the
   encoder frozen, with stage 1's loss ‖D(z) − x‖², z ~ q(z|x). The latent space is the frozen
   encoder's, so the scaling factor and a U-Net trained on it stay valid; only the images D draws
   from the latents change (as Stable Diffusion's VAE decoder was fine-tuned after its release).
   Written to OUT/checkpoint-decoder/finished, and the pipeline in OUT is saved again with it.

Each stage checkpoints under OUT/checkpoint-STAGE (safetensors + state.json, written atomically, as
``labkit.train``), and rerunning the command resumes. At the end, the EMA weights are saved with
``StableDiffusionPipeline.save_pretrained`` (safetensors, no safety checker) into OUT, the layout
``labkit.load_model`` reads for any Stable Diffusion checkpoint, and OUT/manifest.json over every
file of the pipeline (size and SHA-256; ``load_model`` refuses a pipeline that differs from it).
OUT/training_log.json records each stage's steps, seconds and seconds per step, with the load average.

Explained in: labkit/embedded/shapes/README.md (the model card's miniature section)
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from labkit import captions, worlds
from labkit.checkpoint import CHECKPOINT_FILES, load_checkpoint, save_checkpoint
from labkit.checks import (
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_path,
    device_arg,
    float_arg,
    int_arg,
    out_dir_arg,
)
from labkit.files import complete_folder, write_json
from labkit.models import resolve_device
from labkit.sd_layout import (
    MAX_TOKENS,
    UNET_WIDTHS,
    check_tokenizer_dir,
    check_widths,
    noise_schedule,
    pipeline_manifest,
    save_pipeline,
    text_config,
    unet_config,
    vae_config,
)
from labkit.train import MAX_BATCH, MAX_STEPS

STAGES = ("vae", "diffusion", "decoder", "all")  # "all": vae, diffusion, then decoder if decoder_steps > 0
# a resumed stage continues the same run: these options must be the checkpoint's
SAME_ON_RESUME = ("batch_size", "vae_lr", "lr", "warmup", "ema_decay", "kl_weight", "empty", "seed", "tiny",
                  "unet_widths", "decoder_lr")


@dataclass
class SDConfig:
    out: str
    stage: str = "all"
    vae_steps: int = 3000
    steps: int = 20000  # diffusion steps (U-Net and text encoder)
    batch_size: int = 64
    vae_lr: float = 1e-3
    lr: float = 1e-3
    warmup: int = 200
    ema_decay: float = 0.999
    kl_weight: float = 1e-6
    empty: float = 0.1  # share of empty captions (classifier-free-guidance dropout)
    seed: int = 0
    device: str = "cpu"
    checkpoint_every: int = 250
    precision: str = "fp32"  # "bf16": the networks' forward and backward under bfloat16 autocast
    tiny: bool = False  # tiny networks (tests and smoke runs)
    unet_widths: tuple[int, int] = UNET_WIDTHS  # the U-Net's two levels' channels
    decoder_steps: int = 0  # stage 3, the decoder's fine-tuning (0: none)
    decoder_lr: float = 3e-4

    def check(self) -> None:
        """Every field checked before any work, naming the field, the value and the fix."""
        check_path("out", self.out)
        check_choice("stage", self.stage, STAGES)
        for name in ("vae_steps", "steps", "warmup", "checkpoint_every"):
            check_int(name, getattr(self, name), 1 if name != "warmup" else 0, MAX_STEPS)
        check_int("batch_size", self.batch_size, 1, MAX_BATCH, hint="64 trains the miniature")
        check_int("decoder_steps", self.decoder_steps, 0, MAX_STEPS)
        if self.stage == "decoder" and self.decoder_steps == 0:
            raise ValueError("decoder_steps: 0 with stage 'decoder' would train nothing; pass --decoder-steps N "
                             "(3000 for the miniature)")
        for name in ("vae_lr", "lr", "decoder_lr"):
            check_float(name, getattr(self, name), 0.0, 1.0, low_open=True)
        check_float("ema_decay", self.ema_decay, 0.0, 1.0, high_open=True)
        check_float("kl_weight", self.kl_weight, 0.0, 1.0)
        check_float("empty", self.empty, 0.0, 1.0)
        check_int("seed", self.seed, 0, 2**63 - 1)
        check_choice("precision", self.precision, ("fp32", "bf16"))
        check_bool("tiny", self.tiny)
        check_widths(self.unet_widths)
        resolve_device(self.device)


def _check_config(config: object) -> SDConfig:
    if not isinstance(config, SDConfig):
        raise TypeError(f"config must be an SDConfig, got {type(config).__name__}")
    config.check()
    return config


def _check_run(config: object, device: object, gen: object) -> SDConfig:
    """A stage's arguments: a valid SDConfig, a torch.device and a torch.Generator (train_sd makes them)."""
    _check_config(config)
    if not isinstance(device, torch.device):
        raise TypeError(f"device must be a torch.device (labkit.models.resolve_device(config.device)), got "
                        f"{type(device).__name__} {device!r}")
    if not isinstance(gen, torch.Generator):
        raise TypeError(f"gen must be a torch.Generator, got {type(gen).__name__}")
    return config


def _train(stage: str, config: SDConfig, nets: dict, steps: int, lr: float, loss_fn, gen: torch.Generator,
           device: torch.device) -> tuple[EMAModel, dict]:
    """The loop both stages share: AdamW, warm-up then cosine, gradient norm clipped at 1, EMA,
    a checkpoint every ``checkpoint_every`` steps (labkit.checkpoint's format, the networks as one
    ModuleDict). Returns the EMA and the stage's timing record."""
    model = torch.nn.ModuleDict(nets)
    params = list(model.parameters())
    ema = EMAModel(params, decay=config.ema_decay, use_ema_warmup=True, power=3 / 4)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    lr_sched = get_cosine_schedule_with_warmup(optimizer, min(config.warmup, steps // 10), steps)
    folder = Path(config.out) / f"checkpoint-{stage}"
    start, before = 0, 0.0
    if complete_folder(folder, CHECKPOINT_FILES) is not None:
        saved = json.loads((folder / "state.json").read_text())["config"]
        asked = json.loads(json.dumps(asdict(config)))  # as the checkpoint saved it (a tuple becomes a list)
        saved.setdefault("unet_widths", list(UNET_WIDTHS))  # checkpoints from before the option
        saved.setdefault("decoder_lr", SDConfig.decoder_lr)  # checkpoints from before the decoder stage
        changed = {k: (saved.get(k), v) for k, v in asked.items() if k in SAME_ON_RESUME and saved.get(k) != v}
        if changed:
            raise ValueError(f"the checkpoint in {folder} was trained with other options {changed} (saved, asked): "
                             "pass the saved ones to resume it, or train into a new --out")
        start, before = load_checkpoint(folder, model, ema, optimizer, lr_sched, gen)
        print(f"{stage}: resuming from step {start}")
    t0, load0 = time.perf_counter(), os.getloadavg()
    for step in (bar := tqdm(range(start, steps), initial=start, total=steps, desc=f"training {stage}")):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16"):
            loss = loss_fn()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        lr_sched.step()
        ema.step(params)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == steps:
            save_checkpoint(folder, step + 1, before + time.perf_counter() - t0, model, ema, optimizer, lr_sched, gen,
                            config)
    done = steps - start
    seconds = time.perf_counter() - t0
    record = {"steps": steps, "resumed_from": start, "seconds_this_run": round(seconds, 1),
              "seconds_total": round(before + seconds, 1),
              "seconds_per_step_this_run": round(seconds / done, 4) if done else None,
              "loadavg_before": [round(x, 2) for x in load0], "loadavg_after": [round(x, 2) for x in os.getloadavg()],
              "threads": torch.get_num_threads(), "last_loss": round(float(loss.item()), 5) if done else None}
    return ema, record


def _renders(batch_size: int, gen: torch.Generator) -> tuple[dict, torch.Tensor]:
    factors = worlds.sample_factors(batch_size, int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
    return factors, worlds.render(factors)


def train_vae(config: SDConfig, device: torch.device, gen: torch.Generator) -> tuple[AutoencoderKL, dict]:
    """Stage 1 (module docstring); returns the EMA VAE with its scaling factor and the stage record."""
    _check_run(config, device, gen)
    torch.manual_seed(config.seed)  # the initial weights: the same whether the stages run together or apart
    vae = AutoencoderKL(**vae_config(config.tiny)).to(device)

    def loss_fn() -> torch.Tensor:
        x = _renders(config.batch_size, gen)[1].to(device)
        posterior = vae.encode(x).latent_dist
        z = posterior.sample(generator=gen)  # z ~ q(z|x), noise from gen (CPU: repeats on any device)
        recon = vae.decode(z).sample
        return torch.nn.functional.mse_loss(recon.float(), x) + config.kl_weight * posterior.kl().mean() / x[0].numel()

    ema, record = _train("vae", config, {"vae": vae}, config.vae_steps, config.vae_lr, loss_fn, gen, device)
    ema.copy_to(vae.parameters())
    vae.eval()
    z, heldout = _heldout_reconstruction(vae, config, device)
    scale = float(1 / z.std())
    vae.register_to_config(scaling_factor=scale)
    record.update(scaling_factor=round(scale, 5), **heldout)
    return vae, record


def _heldout_reconstruction(vae: AutoencoderKL, config: SDConfig, device: torch.device) -> tuple[torch.Tensor, dict]:
    """The latent means z (N, 4, 8, 8) of held-out renders (2,000, seeded apart from training; 64 when tiny)
    and the RMS error of D(mean z) − x over them: its median and p99, as the training log records them."""
    with torch.no_grad():
        x = worlds.render(worlds.sample_factors(2000 if not config.tiny else 64, seed=10**6 + 1)).to(device)
        z = torch.cat([vae.encode(chunk).latent_dist.mean for chunk in x.split(250)])
        error = torch.cat([(vae.decode(zc).sample - c).pow(2).mean((1, 2, 3)).sqrt()
                           for zc, c in zip(z.split(250), x.split(250))])
    return z, {"reconstruction_rmse_median": round(float(error.median()), 5),
               "reconstruction_rmse_p99": round(float(torch.quantile(error, 0.99)), 5), "heldout_renders": len(x)}


def train_decoder(config: SDConfig, vae: AutoencoderKL, device: torch.device,
                  gen: torch.Generator) -> tuple[AutoencoderKL, dict]:
    """Stage 3 (module docstring): the decoder (and the 1×1 convolution before it) fine-tuned on fresh
    renders with the encoder frozen, loss ‖D(z) − x‖², z ~ q(z|x). Returns the VAE, its encoder and
    scaling factor unchanged, and the stage record with the held-out reconstruction error before and after."""
    _check_run(config, device, gen)
    if not isinstance(vae, AutoencoderKL):
        raise TypeError(f"vae must be the diffusers AutoencoderKL of the vae stage, got {type(vae).__name__}")
    vae.eval()
    before = _heldout_reconstruction(vae, config, device)[1]
    vae.requires_grad_(False)
    nets = {"decoder": vae.decoder, "post_quant_conv": vae.post_quant_conv}  # trained in place, inside vae
    for net in nets.values():
        net.requires_grad_(True)

    def loss_fn() -> torch.Tensor:
        x = _renders(config.batch_size, gen)[1].to(device)
        with torch.no_grad():
            z = vae.encode(x).latent_dist.sample(generator=gen)
        return torch.nn.functional.mse_loss(vae.decode(z).sample.float(), x)

    ema, record = _train("decoder", config, nets, config.decoder_steps, config.decoder_lr, loss_fn, gen, device)
    ema.copy_to([p for net in nets.values() for p in net.parameters()])
    vae.requires_grad_(False)
    record.update(_heldout_reconstruction(vae, config, device)[1],
                  before={k: v for k, v in before.items() if k != "heldout_renders"})
    return vae, record


def train_diffusion(config: SDConfig, vae: AutoencoderKL, tokenizer_dir: Path, device: torch.device,
                    gen: torch.Generator) -> tuple[UNet2DConditionModel, torch.nn.Module, dict]:
    """Stage 2 (module docstring); returns the EMA U-Net and text encoder and the stage record."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    _check_run(config, device, gen)
    if not isinstance(vae, AutoencoderKL):
        raise TypeError(f"vae must be the diffusers AutoencoderKL of the vae stage, got {type(vae).__name__}")
    tokenizer_dir = check_tokenizer_dir(tokenizer_dir)
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(config.seed + 1)
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_config(len(tokenizer), config.tiny))).to(device)
    unet_args = unet_config(text_encoder.config.hidden_size, config.tiny, config.unet_widths)
    unet = UNet2DConditionModel(**unet_args).to(device)
    vae.requires_grad_(False)
    schedule = DDPMScheduler.from_config(noise_schedule().config)
    abar_all = schedule.alphas_cumprod.to(device)
    scale = vae.config.scaling_factor

    def loss_fn() -> torch.Tensor:
        factors, x = _renders(config.batch_size, gen)
        ids = tokenizer(captions.random_captions(factors, gen, config.empty), padding="max_length",
                        max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
        with torch.no_grad():
            z0 = scale * vae.encode(x.to(device)).latent_dist.sample(generator=gen)
        noise = torch.randn(z0.shape, generator=gen).to(device)
        t = torch.randint(0, schedule.config.num_train_timesteps, (len(z0),), generator=gen).to(device)
        abar = abar_all[t].view(-1, 1, 1, 1).float()
        zt = abar.sqrt() * z0 + (1 - abar).sqrt() * noise
        target = abar.sqrt() * noise - (1 - abar).sqrt() * z0
        c = text_encoder(ids.to(device))[0]
        return torch.nn.functional.mse_loss(unet(zt, t, encoder_hidden_states=c).sample.float(), target)

    nets = {"unet": unet, "text_encoder": text_encoder}
    ema, record = _train("diffusion", config, nets, config.steps, config.lr, loss_fn, gen, device)
    ema.copy_to([p for net in nets.values() for p in net.parameters()])
    return unet, text_encoder, record


def train_sd(config: SDConfig) -> Path:
    """Run the stages asked for (``config.stage``); returns OUT. Deterministic given ``config.seed``."""
    _check_config(config)
    device = resolve_device(config.device)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    log_file = out / "training_log.json"
    log = json.loads(log_file.read_text()) if log_file.exists() else {}
    # A run keeps the tokenizer it started with: its text encoder's embeddings are indexed by its ids.
    tokenizer_dir = out / "checkpoint-tokenizer"
    if not (tokenizer_dir / "vocab.json").is_file():
        captions.tokenizer_files(tokenizer_dir, max_length=MAX_TOKENS)
    vae_dir = out / "checkpoint-vae" / "finished"
    decoder_dir = out / "checkpoint-decoder" / "finished"
    finished = (vae_dir / "config.json").exists() and log.get("vae", {}).get("steps") == config.vae_steps
    if config.stage in ("vae", "all") and not finished:  # a finished VAE keeps its record; more --vae-steps resume it
        vae, log["vae"] = train_vae(config, device, torch.Generator().manual_seed(config.seed))
        log.setdefault("history", []).append({"stage": "vae", **log["vae"]})  # every run, resumed ones too
        vae.save_pretrained(vae_dir, safe_serialization=True)
        write_json(log_file, log)
    if config.stage in ("diffusion", "all"):
        if not (vae_dir / "config.json").exists():
            raise FileNotFoundError(f"no trained VAE in {vae_dir}: run the vae stage first (--stage vae)")
        vae = AutoencoderKL.from_pretrained(vae_dir, use_safetensors=True, low_cpu_mem_usage=False).to(device)
        unet, text_encoder, log["diffusion"] = train_diffusion(config, vae, tokenizer_dir, device,
                                                               torch.Generator().manual_seed(config.seed + 1))
        log.setdefault("history", []).append({"stage": "diffusion", **log["diffusion"]})
        if (decoder_dir / "config.json").exists():  # a fine-tuned decoder reads this encoder's latents too
            vae = AutoencoderKL.from_pretrained(decoder_dir, use_safetensors=True, low_cpu_mem_usage=False)
        save_pipeline(out, unet, vae, text_encoder, tokenizer_dir)
        log["parameters"] = {name: sum(p.numel() for p in net.parameters())
                             for name, net in (("unet", unet), ("vae", vae), ("text_encoder", text_encoder))}
        write_json(log_file, log)
    if config.stage == "decoder" or (config.stage == "all" and config.decoder_steps > 0):
        _decoder_stage(config, out, log, vae_dir, decoder_dir, tokenizer_dir, device)
    log.update(torch=torch.__version__, device=str(device), config=asdict(config))
    write_json(log_file, log)
    return out


def _decoder_stage(config: SDConfig, out: Path, log: dict, vae_dir: Path, decoder_dir: Path, tokenizer_dir: Path,
                   device: torch.device) -> None:
    """Stage 3 in OUT: fine-tune (or resume, or keep a finished) decoder, then put it in OUT's pipeline."""
    if not (vae_dir / "config.json").exists() or not (out / "model_index.json").is_file():
        raise FileNotFoundError(f"{out} holds no trained VAE and pipeline to fine-tune the decoder of: run the vae "
                                "and diffusion stages first (--stage all without --decoder-steps)")
    done = (decoder_dir / "config.json").exists() and log.get("decoder", {}).get("steps") == config.decoder_steps
    if not done:  # a finished decoder keeps its record; more --decoder-steps resume it
        vae = AutoencoderKL.from_pretrained(vae_dir, use_safetensors=True, low_cpu_mem_usage=False).to(device)
        vae, log["decoder"] = train_decoder(config, vae, device, torch.Generator().manual_seed(config.seed + 2))
        log.setdefault("history", []).append({"stage": "decoder", **log["decoder"]})
        vae.save_pretrained(decoder_dir, safe_serialization=True)
        write_json(out / "training_log.json", log)
    # only vae/ changes: the U-Net, text encoder and tokenizer files stay byte for byte; the manifest comes last
    vae = AutoencoderKL.from_pretrained(decoder_dir, use_safetensors=True)
    vae.save_pretrained(out / "vae", safe_serialization=True)
    pipeline_manifest(out)


def _out_arg(text: str) -> str:
    return str(out_dir_arg(text))  # a folder we can write into, kept as text (the log records it as JSON)


def _device_arg(text: str) -> str:
    device_arg(text)  # refused as a usage error; kept as text (the log records it as JSON)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m labkit.train sd", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=_out_arg, required=True, help="output folder (rerun the same command to resume)")
    parser.add_argument("--stage", default="all", choices=STAGES,
                        help="vae, diffusion, decoder (fine-tune the VAE's decoder of a trained run), or all (default)")
    for field, kind in (("vae_steps", int_arg(1, MAX_STEPS)), ("steps", int_arg(1, MAX_STEPS)),
                        ("decoder_steps", int_arg(0, MAX_STEPS)),
                        ("batch_size", int_arg(1, MAX_BATCH)), ("warmup", int_arg(0, MAX_STEPS)),
                        ("seed", int_arg(0, 2**63 - 1)), ("checkpoint_every", int_arg(1, MAX_STEPS))):
        parser.add_argument("--" + field.replace("_", "-"), type=kind, default=getattr(SDConfig, field))
    for field, kind in (("vae_lr", float_arg(0.0, 1.0, low_open=True)), ("lr", float_arg(0.0, 1.0, low_open=True)),
                        ("decoder_lr", float_arg(0.0, 1.0, low_open=True)),
                        ("ema_decay", float_arg(0.0, 1.0, high_open=True)), ("kl_weight", float_arg(0.0, 1.0)),
                        ("empty", float_arg(0.0, 1.0))):
        parser.add_argument("--" + field.replace("_", "-"), type=kind, default=getattr(SDConfig, field))
    parser.add_argument("--device", type=_device_arg, default="cpu", help="cpu or cuda")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--tiny", action="store_true", help="tiny networks, for a smoke run")
    parser.add_argument("--unet-widths", type=int_arg(16, 1024), nargs=2, default=list(UNET_WIDTHS),
                        metavar=("W1", "W2"), help=f"the U-Net's channels per level, multiples of 16 "
                        f"(default {UNET_WIDTHS[0]} {UNET_WIDTHS[1]})")
    args = parser.parse_args(argv)
    args.unet_widths = tuple(args.unet_widths)
    try:
        check_widths(args.unet_widths)  # the rule SDConfig.check applies, as a usage error
    except ValueError as error:
        parser.error(f"argument --unet-widths: {error}")
    print(train_sd(SDConfig(**vars(args))))


if __name__ == "__main__":
    main()
