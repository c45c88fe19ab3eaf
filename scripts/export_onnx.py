"""Export what the web book's live explorers run in the reader's browser (`make live`, run by `make book`).

    python scripts/export_onnx.py        # -> book/_static/live/generated/

The chapters' explorers (labkit.widgets) reach the web book as static players; the book's
JavaScript (book/_static/live/*.js) makes them live with onnxruntime-web, from these files only:

- ``<model>.onnx``: each embedded U-Net (MNIST, shapes), inputs x (B, C, H, W) and t (1,), outputs
  the U-Net's raw output (ε, v or x₀, as the manifest's prediction_type says) and h, the
  mid-block output (as labkit.diffusion.h_space defines it); its upsamplers are rewritten as
  sub-pixel convolutions (``subpixel_upsamplers``: the same sums in fewer multiply-adds, for the
  reader's CPU); ``readout.onnx``: the shapes world's
  factor read-out (labkit.readout), raw outputs (N, 12), decoded in JavaScript;
- ``<model>-noise.f32``: for each shipped seed, the first draws of ``torch.randn(latent shape)`` from
  ``torch.Generator().manual_seed(seed)``, float32. Draw 0 is labkit's x_T for that seed
  (``sample_noise``); draws 0, 1, … are the η = 1 noise of the quality-boost tail, in order
  (``ddim_sample(..., seed=seed, shared_noise=True)``). torch's generator cannot be replayed in
  JavaScript, so its numbers are shipped instead;
- ``<model>-bases.f16``: the top-k local bases (``labkit.editing.sample_basis``, krylov) of the
  samples the chapters' explorers offer, float16 (k, C, H, W) each;
- the text-conditioned miniature (``load_model("shapes-sd")``, labkit.latent), exported only once its folder
  ships with a manifest (``export_miniature``), for a live explorer to come: ``shapes-sd-unet.onnx``, inputs
  z (B, 4, 8, 8), t (1,) and the prompt's embeddings c (B, L, D), outputs the raw output (v) under c, without
  guidance, and h, the mid-block output under c; ``shapes-sd-text.onnx``, the CLIP text encoder,
  input_ids (1, L) int64 → c (1, L, D), as ``encode_prompt``; ``shapes-sd-vae-decoder.onnx``, the diffusion
  latent z → images (B, 3, 32, 32), as ``decode`` (z / s inside); ``shapes-sd-unet-noise.f32``, its noise as
  above; and in the manifest its tokenizer as a word table (the vocabulary is a closed list of words, one
  token each: ``word_table``);
- ``manifest.json``: the schedules (ᾱ_t, the DDIM timesteps), shapes, and where each array lies;
- ``ort/``: onnxruntime-web's ES module and wasm files, from node_modules (``npm ci``).

The generated folder is a build output (git-ignored). It is rebuilt only when its content key
changes (labkit's sources, this script, the weights and tokenizers, package-lock.json); the bases are also
cached one by one under .cache/live-bases, keyed by content (``sample_basis``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "book" / "_static" / "live" / "generated"
CACHE = REPO / ".cache" / "live-bases"
ORT = REPO / "node_modules" / "onnxruntime-web" / "dist"
# the wasm-only build of onnxruntime-web and the one wasm binary it loads (SIMD; threads are used
# only on cross-origin-isolated pages, which a static book is not)
ORT_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")

# What the chapters' explorers offer. A live explorer goes live only with bases shipped for
# exactly its (model, num_steps, seed, t, k); tests/test_web_live_explorers.py checks every explorer
# in the built book against this list.
MODELS = {  # model name -> (load_model argument, noise seeds shipped, DDIM schedules shipped)
    "embedded": (None, tuple(range(8)), (20, 25)),
    "embedded:shapes": ("shapes", tuple(range(4)), (20,)),
}
# The text-conditioned miniature (labkit.latent), exported once its folder ships with a manifest: (load_model
# argument and file stem, noise seeds shipped, DDIM schedules shipped). Prompts whose input_ids the manifest
# carries, from the tokenizer itself, to check the browser's tokenization against (``word_table``).
MINIATURE = ("shapes-sd", tuple(range(4)), (20,))
MINIATURE_FOLDER = REPO / "labkit" / "embedded" / "shapes" / "sd"
MINIATURE_PROMPTS = ("", "a red square",
                     "a small red square tilted left on the right, on a blue wall above a green floor")
BASES = [  # (model, num_steps, seeds, t as fractions of T, k)
    ("embedded", 25, (0, 1, 2, 3), (0.6, 0.8, 1.0), 4),       # 05_editing
    ("embedded", 20, (0, 1, 2, 3, 4, 5), (0.6,), 5),          # 07_semantic
    ("embedded:shapes", 20, (1, 2), (0.6, 0.8), 3),           # 08_known_factors
]


# the labkit modules whose code the generated files depend on (part of the content key)
LABKIT_USED = ("models", "diffusion", "editing", "spectral", "krylov", "geometry", "cache", "checks", "readout",
               "worlds", "latent")


class UNetWithH(nn.Module):
    """(x, t[, c]) -> (the U-Net's raw output, h = the mid-block output): one forward pass gives both. For a
    text-conditioned U-Net (labkit.latent), c = encoder_hidden_states (B, L, D), and h is the mid-block output
    under c, as labkit.diffusion.h_space takes it for a model bound to that prompt."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x: Tensor, t: Tensor, encoder_hidden_states: Tensor | None = None) -> tuple[Tensor, Tensor]:
        kept = {}
        context = {} if encoder_hidden_states is None else {"encoder_hidden_states": encoder_hidden_states}
        hook = self.unet.mid_block.register_forward_hook(lambda module, args, output: kept.setdefault("h", output))
        try:
            out = self.unet(x, t.expand(x.shape[0]), **context).sample
        finally:
            hook.remove()  # the model is left as it was
        return out, kept["h"]


def onnx_export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str],
                batched: tuple[str, ...]) -> Path:
    """``module`` traced on ``args`` and written to ONNX at ``path`` (opset 17), the ``batched`` inputs and outputs
    with a dynamic first axis. Traced with the attention's math kernel, as labkit runs it, and its upsamplers
    written as sub-pixel convolutions (``subpixel_upsamplers``)."""
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    # warnings.catch_warnings: the tracer's notes on diffusers' shape asserts, and the legacy exporter's notice
    with sdpa_kernel([SDPBackend.MATH]), torch.no_grad(), warnings.catch_warnings(action="ignore"):
        torch.onnx.export(module.eval(), args, str(path), input_names=inputs, output_names=outputs,
                          dynamic_axes={name: {0: "batch"} for name in batched}, dynamo=False, opset_version=17)
    graph = onnx.load(str(path))
    subpixel_upsamplers(graph.graph)
    onnx.checker.check_model(graph)
    onnx.save(graph, str(path))
    return path


def export_unet(model, path: Path) -> Path:
    """Write ``model``'s U-Net (a labkit DiffusionModel) to ONNX at ``path``: x (B, C, H, W), t (1,) float32 →
    out (B, C, H, W), h (B, c_h, H_h, W_h) (``onnx_export``). For a text-conditioned model (labkit.latent) the
    inputs are z (B, 4, 8, 8), t (1,) and encoder_hidden_states c (B, L, D), one prompt's embeddings per latent
    (the browser runs ∅ and c as a batch of 2 for classifier-free guidance); out is the U-Net's raw output under
    c, without guidance (``model.conditioned(prompt_embeds=c, guidance_scale=1).output``), and h the mid-block
    output under c (``h_space`` of that model)."""
    from labkit.latent import LatentDiffusionModel

    x, t = torch.zeros(2, *model.sample_shape), torch.tensor([500.0])
    if isinstance(model, LatentDiffusionModel):
        c = model.prompt_embeds.expand(2, -1, -1)
        return onnx_export(UNetWithH(model.unet), (x, t, c), path, ["z", "t", "encoder_hidden_states"], ["out", "h"],
                           ("z", "encoder_hidden_states", "out", "h"))
    return onnx_export(UNetWithH(model.unet), (x, t), path, ["x", "t"], ["out", "h"], ("x", "out", "h"))


# Row (and column) folds of a 3×3 kernel for nearest ×2 upsampling: output row 2i + a of the upsampled
# image reads, through kernel rows 0, 1, 2, input rows (i-1, i, i) for a = 0 and (i, i, i+1) for a = 1,
# so it is a 2-row kernel over input rows (i-1, i) or (i, i+1) whose rows are sums of the 3×3 kernel's.
SUBPIXEL_FOLDS = (np.array([[1, 0, 0], [0, 1, 1]]), np.array([[1, 1, 0], [0, 0, 1]]))


def subpixel_upsamplers(graph) -> int:
    """Rewrite, in place, each nearest ×2 Resize followed by a 3×3 Conv (stride 1, padding 1) as four 2×2 Convs
    of the small input, one per output phase (a, b), interleaved by DepthToSpace. The same sums, float rounding
    aside (kernel weights are added before they multiply), in 4·4 = 16 multiply-adds per 2×2 block of output
    pixels (and channel pair) where the upsampled convolution does 4·9 = 36. The upsamplers are among the U-Net's
    costliest layers in the browser, where every network run is on the reader's CPU. Returns the number rewritten.
    """
    from onnx import helper, numpy_helper

    initializers = {i.name: i for i in graph.initializer}
    constants = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
                 if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"}
    users: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)

    def attribute(node, name, default=None):
        found = [a for a in node.attribute if a.name == name]
        return helper.get_attribute_value(found[0]) if found else default

    def rewritable(resize) -> bool:
        after = users.get(resize.output[0], [])
        if len(after) != 1 or after[0].op_type != "Conv":
            return False
        conv, scales = after[0], constants.get(resize.input[2]) if len(resize.input) > 2 else None
        return (attribute(resize, "mode") == b"nearest" and attribute(resize, "nearest_mode") == b"floor"
                and attribute(resize, "coordinate_transformation_mode") == b"asymmetric"
                and scales is not None and scales.tolist() == [1, 1, 2, 2]
                and conv.input[0] == resize.output[0] and len(conv.input) == 3 and conv.input[1] in initializers
                and attribute(conv, "kernel_shape") == [3, 3] and attribute(conv, "pads") == [1, 1, 1, 1]
                and attribute(conv, "strides", [1, 1]) == [1, 1] and attribute(conv, "dilations", [1, 1]) == [1, 1]
                and attribute(conv, "group", 1) == 1)

    resizes = [r for r in graph.node if r.op_type == "Resize" and rewritable(r)]
    upsampled = {users[r.output[0]][0].output[0]: r for r in resizes}  # the Conv (by its output) → its Resize
    nodes = []
    for node in graph.node:
        if node.op_type == "Resize" and any(node is r for r in resizes):
            continue  # its Conv below reads its input instead
        if node.op_type != "Conv" or node.output[0] not in upsampled:
            nodes.append(node)
            continue
        small, weight = upsampled[node.output[0]].input[0], numpy_helper.to_array(initializers[node.input[1]])
        phases = []
        for a in (0, 1):
            for b in (0, 1):
                name = f"{node.name}/phase{a}{b}"
                folded = np.einsum("ry,oiyx,cx->oirc", SUBPIXEL_FOLDS[a], weight.astype(np.float64), SUBPIXEL_FOLDS[b])
                graph.initializer.append(numpy_helper.from_array(folded.astype(np.float32), f"{name}/weight"))
                # rows (i-1, i) for a = 0: one row of zeros above; rows (i, i+1) for a = 1: one below
                nodes.append(helper.make_node("Conv", [small, f"{name}/weight", node.input[2]], [f"{name}/output"],
                                              name=name, kernel_shape=[2, 2], pads=[1 - a, 1 - b, a, b]))
                phases.append(f"{name}/output")
        nodes.append(helper.make_node("Concat", phases, [f"{node.name}/phases"], name=f"{node.name}/concat", axis=1))
        # DCR: channel (2a + b)·C + c goes to channel c, pixel (2i + a, 2j + b)
        nodes.append(helper.make_node("DepthToSpace", [f"{node.name}/phases"], node.output, name=f"{node.name}/d2s",
                                      blocksize=2, mode="DCR"))
    used = {name for node in nodes for name in node.input}
    nodes = [n for n in nodes if n.op_type != "Constant" or n.output[0] in used]  # the Resizes' scales
    del graph.node[:]
    graph.node.extend(nodes)
    unused = [i for i in graph.initializer if i.name not in used]  # the upsamplers' 3×3 weights
    for initializer in unused:
        graph.initializer.remove(initializer)
    return len(resizes)


class TextEncoder(nn.Module):
    """input_ids (1, L) int64 → c (1, L, D): the text encoder's first output, its last hidden state (after the final
    layer norm), which labkit.latent's ``encode_prompt`` takes as the prompt's embeddings."""

    def __init__(self, text_encoder: nn.Module) -> None:
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.text_encoder(input_ids)[0]


class LatentDecoder(nn.Module):
    """z (B, 4, 8, 8) → images D(z / s) (B, 3, 32, 32): labkit.latent's ``decode``. z is the diffusion model's latent
    (what DDIM sampling returns, s·E(x)); the division by the VAE's scaling factor s happens inside. Not clamped
    (``to_pixels`` clamps to [-1, 1] for display)."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae, self.scaling_factor = vae, float(vae.config.scaling_factor)

    def forward(self, z: Tensor) -> Tensor:
        return self.vae.decode(z / self.scaling_factor).sample


def export_text_encoder(model, path: Path) -> Path:
    """Write a text-conditioned model's (labkit.latent) text encoder to ONNX: input_ids (1, L) int64, L the
    tokenizer's padded length → c (1, L, D), as ``model.encode_prompt`` computes it (``TextEncoder``)."""
    if getattr(model.text_encoder.config, "use_attention_mask", False):
        raise ValueError(f"{model.name!r}: its text encoder reads an attention mask, which the exported graph "
                         "does not take; export only CLIP text encoders without one (SD 1.x/2.x, the miniature)")
    ids = model.tokenizer("", padding="max_length", max_length=model.tokenizer.model_max_length,
                          return_tensors="pt").input_ids
    return onnx_export(TextEncoder(model.text_encoder), (ids,), path, ["input_ids"], ["c"], ())


def export_vae_decoder(model, path: Path) -> Path:
    """Write a text-conditioned model's (labkit.latent) VAE decoder to ONNX: z (B, *sample_shape), the diffusion
    latent → images (B, *image_shape), ``model.decode(z)`` (``LatentDecoder``; its upsamplers sub-pixel)."""
    return onnx_export(LatentDecoder(model.vae), (torch.zeros(2, *model.sample_shape),), path, ["z"], ["images"],
                       ("z", "images"))


def word_table(model) -> dict:
    """The miniature's tokenizer as a table small enough for the manifest (its vocabulary is a closed list of about
    a hundred words, each one token; labkit.latent.CLOSED_VOCABULARY): ``words`` maps each word to its token id.
    A prompt's input_ids, as ``model.tokenizer(prompt, padding="max_length")`` gives them, are then: bos, the
    words of ``prompt.lower()`` (split at white space, each comma a word of its own), eos, and pad up to
    ``max_length`` — rules a few lines of JavaScript follow, with no BPE. ``examples``: a few prompts' input_ids
    from the tokenizer itself, for a browser test of those rules. An open tokenizer (SD's 49,408 sub-words) is
    refused: its vocab and merges would be shipped instead."""
    from labkit.latent import CLOSED_VOCABULARY, closed_vocabulary

    tokenizer = model.tokenizer
    if len(tokenizer) >= CLOSED_VOCABULARY:
        raise ValueError(f"{model.name!r}: its tokenizer has {len(tokenizer)} tokens, not a closed list of words "
                         f"(fewer than {CLOSED_VOCABULARY}); a word table cannot stand in for its BPE")
    length = tokenizer.model_max_length
    examples = {}
    for prompt in MINIATURE_PROMPTS:
        model.check_prompt(prompt, "MINIATURE_PROMPTS")
        examples[prompt] = tokenizer(prompt, padding="max_length", max_length=length).input_ids
    return {"bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id, "pad": tokenizer.pad_token_id,
            "max_length": length,  # the world's words only: labkit.latent refuses BPE fragments in a prompt
            "words": {word: tokenizer.convert_tokens_to_ids(word + "</w>") for word in closed_vocabulary(tokenizer)},
            "examples": examples}


def export_readout(readout: nn.Module, path: Path) -> Path:
    """Write the factor read-out (labkit.readout.FactorReadout) to ONNX: images (N, 3, 32, 32) → outputs (N, D)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings(action="ignore"):
        torch.onnx.export(readout.eval(), (torch.zeros(2, 3, 32, 32),), str(path), input_names=["images"],
                          output_names=["outputs"], dynamic_axes={"images": {0: "batch"}, "outputs": {0: "batch"}},
                          dynamo=False, opset_version=17)
    return path


def readout_factors() -> list[dict]:
    """The read-out's output layout, for decoding in JavaScript as labkit.readout.decode does: each factor's
    kind, range, class names and the slice of the output vector it occupies (2 for a hue, 1, or one per class)."""
    from labkit.worlds import FACTORS

    factors, start = [], 0
    for name, f in FACTORS.items():
        width = {"circular": 2, "continuous": 1, "categorical": len(f.values)}[f.kind]
        factors.append({"name": name, "kind": f.kind, "low": f.low, "high": f.high, "values": list(f.values),
                        "slice": [start, start + width]})
        start += width
    return factors


def noise_draws(shape: tuple[int, ...], seed: int, draws: int) -> Tensor:
    """The first ``draws`` calls of torch.randn((1, *shape)) on Generator(seed): (draws, *shape) float32."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.randn((1, *shape), generator=g) for _ in range(draws)])


def content_key() -> str:
    """SHA-256 over everything the generated files depend on."""
    digest = hashlib.sha256()
    files = [Path(__file__), REPO / "package-lock.json", *(REPO / "labkit" / f"{name}.py" for name in LABKIT_USED),
             # the weights, configs and tokenizers (the miniature's merges.txt), not training state (checkpoint*/)
             *(path for path in sorted((REPO / "labkit" / "embedded").rglob("*"))
               if path.suffix in (".safetensors", ".json", ".txt")
               and not any(part.startswith("checkpoint") for part in path.relative_to(REPO).parts))]
    for file in files:
        if file.is_file():
            digest.update(str(file.relative_to(REPO)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def up_to_date(out: Path, key: str) -> bool:
    manifest = out / "manifest.json"
    if not manifest.is_file():
        return False
    data = json.loads(manifest.read_text())
    files = [entry["file"] for m in data["models"].values() for entry in (m, m["noise"], m["bases"])]
    files += [data["readout"]["file"], *(f"ort/{name}" for name in ORT_FILES)]
    if "miniature" in data:
        mini = data["miniature"]
        files += [mini["unet"]["file"], mini["unet"]["noise"]["file"], mini["text_encoder"]["file"],
                  mini["vae_decoder"]["file"]]
    return data.get("key") == key and all((out / file).is_file() for file in files)


def export_denoiser(model, stem: str, seeds: tuple[int, ...], schedules: tuple[int, ...], out: Path) -> dict:
    """Export ``model``'s U-Net (``export_unet``) and its noise for ``seeds`` into ``out``; returns its manifest
    entry: the U-Net's file and shapes, the schedules, and where the noise lies."""
    from labkit.cache import weights_fingerprint
    from labkit.diffusion import QUALITY_BOOST, h_space

    export_unet(model, out / f"{stem}.onnx")
    with torch.no_grad():
        h_shape = list(h_space(model, 0)(torch.zeros(1, *model.sample_shape)).shape[1:])
    T = model.num_train_timesteps
    boost_below = int(QUALITY_BOOST * T)  # labkit.editing.edit's eta_below
    # enough draws for the longest shipped schedule: x_T, then one per η = 1 step
    draws = max(sum(1 for t in model.timesteps(n) if t <= boost_below) for n in schedules) + 1
    noise = torch.stack([noise_draws(model.sample_shape, seed, draws) for seed in seeds])
    (out / f"{stem}-noise.f32").write_bytes(noise.numpy().astype("<f4").tobytes())
    scheduler = model.ddim(schedules[0])
    return {
        "file": f"{stem}.onnx", "weights": weights_fingerprint(model.unet)[:16],
        "sample_shape": list(model.sample_shape), "h_shape": h_shape,
        "prediction_type": model.prediction_type, "num_train_timesteps": T, "boost_below": boost_below,
        # DDIM's ᾱ_t (float32, as diffusers' DDIMScheduler holds them) and ᾱ after the last step
        "alphas_cumprod": [float(a) for a in scheduler.alphas_cumprod],
        "final_alpha_cumprod": float(scheduler.final_alpha_cumprod),
        "schedules": {str(n): model.timesteps(n) for n in schedules},
        "noise": {"file": f"{stem}-noise.f32", "seeds": list(seeds), "draws": draws},
    }


def export_model(name: str, out: Path) -> dict:
    """Export one model, its noise and its bases into ``out``; returns its manifest entry."""
    from labkit.diffusion import sample_at, timestep_at
    from labkit.editing import sample_basis
    from labkit.models import load_model

    source, seeds, schedules = MODELS[name]
    model = load_model() if source is None else load_model(source)
    stem = name.replace(":", "-")
    entry = export_denoiser(model, stem, seeds, schedules, out)
    entries, arrays, offset = [], [], 0
    for model_name, num_steps, basis_seeds, fractions, k in BASES:
        if model_name != name:
            continue
        for fraction in fractions:
            t = timestep_at(model, fraction, num_steps)
            for seed in basis_seeds:
                sample = sample_at(model, seed, t, num_steps)
                v = sample_basis(model, sample, k, cache_dir=CACHE).v.reshape(k, -1)
                arrays.append(v.numpy().astype("<f2"))
                entries.append({"num_steps": num_steps, "seed": seed, "t": t, "k": k, "offset": offset})
                offset += k * v.shape[1]
    (out / f"{stem}-bases.f16").write_bytes(np.concatenate(arrays).tobytes() if arrays else b"")
    return {**entry, "bases": {"file": f"{stem}-bases.f16", "entries": entries}}


def export_miniature(model, out: Path) -> dict:
    """Export the text-conditioned miniature (a labkit.latent LatentDiffusionModel) into ``out``: its U-Net with h
    and its noise (``export_denoiser``, as ``shapes-sd-unet.onnx``), text encoder (``export_text_encoder``), VAE
    decoder (``export_vae_decoder``) and word table (``word_table``); returns its manifest entry."""
    from labkit.cache import weights_fingerprint
    from labkit.latent import LatentDiffusionModel

    if not isinstance(model, LatentDiffusionModel):
        raise TypeError(f"model must be a text-conditioned LatentDiffusionModel (load_model('shapes-sd')), got "
                        f"{type(model).__name__} {model.name!r}")
    stem, seeds, schedules = MINIATURE
    export_text_encoder(model, out / f"{stem}-text.onnx")
    export_vae_decoder(model, out / f"{stem}-vae-decoder.onnx")
    return {
        "unet": export_denoiser(model, f"{stem}-unet", seeds, schedules, out),
        "text_encoder": {"file": f"{stem}-text.onnx", "weights": weights_fingerprint(model.text_encoder)[:16],
                         "hidden_size": int(model.prompt_embeds.shape[-1])},
        "vae_decoder": {"file": f"{stem}-vae-decoder.onnx", "weights": weights_fingerprint(model.vae)[:16],
                        "image_shape": list(model.image_shape),
                        "scaling_factor": float(model.vae.config.scaling_factor)},
        "tokenizer": word_table(model),
    }


def copy_ort(out: Path) -> None:
    missing = [name for name in ORT_FILES if not (ORT / name).is_file()]
    if missing:
        raise SystemExit(f"onnxruntime-web is not installed ({ORT} lacks {missing}): run `npm ci` "
                         "(make book does; it needs Node.js and npm, Debian: sudo apt-get install nodejs npm)")
    (out / "ort").mkdir(parents=True, exist_ok=True)
    for name in ORT_FILES:
        shutil.copy2(ORT / name, out / "ort" / name)


def build(out: Path, force: bool = False) -> bool:
    """Write every generated file into ``out`` unless it is up to date; True if anything was written."""
    key = content_key()
    if not force and up_to_date(out, key):
        return False
    from labkit.files import write_json
    from labkit.readout import load_readout

    torch.set_num_threads(min(2, torch.get_num_threads()))
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    copy_ort(out)
    models = {name: export_model(name, out) for name in MODELS}
    export_readout(load_readout(), out / "readout.onnx")
    manifest = {"key": key, "models": models,
                "readout": {"file": "readout.onnx", "model": "embedded:shapes", "factors": readout_factors()}}
    if MINIATURE_FOLDER.joinpath("manifest.json").is_file():  # once the miniature ships; make live runs without it
        from labkit.models import load_model

        manifest["miniature"] = export_miniature(load_model(MINIATURE[0]), out)
    write_json(out / "manifest.json", manifest)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"output folder (default: {OUT.relative_to(REPO)})")
    parser.add_argument("--force", action="store_true", help="rebuild even when the content key matches")
    args = parser.parse_args(argv)
    started = time.monotonic()
    if build(args.out, args.force):
        size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file()) / 1e6
        print(f"live explorers: {args.out} written ({size:.1f} MB, {time.monotonic() - started:.0f} s)")
    else:
        print(f"live explorers: {args.out} is up to date ({time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
