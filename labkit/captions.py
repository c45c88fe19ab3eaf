"""The shapes world in words: captions made from a scene's factors, read back, and the tokenizer of its words.

A caption names some of the seven factors of ``labkit.worlds`` and leaves the others free:

    "a small red square tilted left on the right, on a blue wall above a green floor"   (all seven)
    "a triangle tilted right, above a cyan floor"                                       (three)
    "an object"                                                                          (none)

Each factor is named by the side or the range it lies in:

- a hue by the nearest of six colours, centred at k/6 on the wheel of ``worlds.hue_colour``
  (red 0, yellow 1/6, green 1/3, cyan 1/2, blue 2/3, magenta 5/6), so a colour's range is ±1/12;
- scale: "small" below the middle of its range, "large" above;
- rotation: "tilted left" for θ > 0 (counter-clockwise: the top leans left), "tilted right" for θ < 0;
- x_position: "on the left" for x < 0, "on the right" for x > 0;
- shape: its name, or "object" when it is left free.

``parse_caption`` reads back which factors a caption names and how; ``faithful`` checks factors
(read from an image) against them, the test of a text-conditioned model's samples.
``tokenizer_files`` builds the vocabulary and merges of a CLIP tokenizer whose tokens are these
words (each word one token), offline.

Explained in: book/part2-diffusion/09_text_conditioned.ipynb (the world itself: 08_known_factors.ipynb)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from labkit.checks import check_float, check_int, check_path, show
from labkit.worlds import FACTORS, SHAPES, check_factors

COLOURS = ("red", "yellow", "green", "cyan", "blue", "magenta")  # hue k/6 is COLOURS[k]
SIZES = ("small", "large")
TILTS = ("left", "right")  # θ > 0, θ < 0
SIDES = ("left", "right")  # x < 0, x > 0
# Every word a caption uses; the tokenizer knows these and nothing else.
WORDS = ("a", "an", "object", "tilted", "on", "the", "wall", "above", "floor", ",", *COLOURS, *SIZES, *TILTS, *SHAPES)
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# the words that can name each factor
WORDS_OF = {"object_hue": COLOURS, "wall_hue": COLOURS, "floor_hue": COLOURS, "scale": SIZES, "x_position": SIDES,
            "rotation": TILTS, "shape": SHAPES}


def colour_name(hue: float) -> str:
    """The colour whose centre k/6 is nearest to the hue (circularly)."""
    hue = check_float("hue", hue, hint="a hue on the wheel [0, 1) (any real number: it wraps)")
    return COLOURS[int(round(hue % 1.0 * 6)) % 6]


def _check_words(name: str, words: object) -> dict[str, str]:
    """{factor: word}: factor names of FACTORS, each with one of its words (WORDS_OF)."""
    if not isinstance(words, dict):
        raise TypeError(f"{name} must be a dict {{factor: word}}, e.g. {{'shape': 'square'}}, got {show(words)}")
    unknown = sorted(map(str, set(words) - set(FACTORS)))
    if unknown:
        raise ValueError(f"{name}: unknown factor name(s) {unknown}; the factors are {list(FACTORS)}")
    for factor, word in words.items():
        if word not in WORDS_OF[factor]:
            raise ValueError(f"{name}[{factor!r}] = {show(word)} is not a word for {factor}; use one of "
                             f"{', '.join(WORDS_OF[factor])}")
    return words


def _middle(name: str) -> float:
    return (FACTORS[name].low + FACTORS[name].high) / 2


def describe(factors: dict[str, Tensor], i: int) -> dict[str, str]:
    """Scene i's seven factors in words: {factor name: word}."""
    n = check_factors(factors)
    return _describe(factors, check_int("i", i, 0, n - 1, hint=f"the index of one of the factors' {n} scenes"))


def _describe(factors: dict[str, Tensor], i: int) -> dict[str, str]:
    f = {name: value[i].item() for name, value in factors.items()}
    return {"object_hue": colour_name(f["object_hue"]), "wall_hue": colour_name(f["wall_hue"]),
            "floor_hue": colour_name(f["floor_hue"]), "scale": SIZES[f["scale"] > _middle("scale")],
            "x_position": SIDES[f["x_position"] > 0], "rotation": TILTS[f["rotation"] < 0],
            "shape": SHAPES[int(f["shape"])]}


def caption(words: dict[str, str]) -> str:
    """The caption naming exactly the factors in ``words`` ({factor: word}, any subset of the seven)."""
    _check_words("words", words)
    noun = [w for w in (words.get("scale"), words.get("object_hue"), words.get("shape", "object")) if w]
    text = ("an " if noun[0][0] in "aeiou" else "a ") + " ".join(noun)
    if "rotation" in words:
        text += f" tilted {words['rotation']}"
    if "x_position" in words:
        text += f" on the {words['x_position']}"
    scene = []
    if "wall_hue" in words:
        scene.append(f"on a {words['wall_hue']} wall")
    if "floor_hue" in words:
        scene.append(f"above a {words['floor_hue']} floor")
    return text + (", " + " ".join(scene) if scene else "")


def random_captions(factors: dict[str, Tensor], generator: torch.Generator, empty: float = 0.1) -> list[str]:
    """One caption per scene, naming a random subset of its factors: the number named is uniform on
    0..7, then which ones uniformly; with probability ``empty`` the caption is "" instead (the
    classifier-free-guidance dropout)."""
    n = check_factors(factors)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator (seeded: torch.Generator().manual_seed(0)), got "
                        f"{type(generator).__name__}; without one the captions could not be drawn again")
    check_float("empty", empty, 0.0, 1.0, hint="the share of empty captions, e.g. 0.1")
    names = list(FACTORS)
    out = []
    for i in range(n):
        if torch.rand((), generator=generator).item() < empty:
            out.append("")
            continue
        count = int(torch.randint(0, len(names) + 1, (), generator=generator))
        chosen = torch.randperm(len(names), generator=generator)[:count].tolist()
        words = _describe(factors, i)  # checked once above
        out.append(caption({names[j]: words[names[j]] for j in sorted(chosen)}))
    return out


def parse_caption(text: str) -> dict[str, str]:
    """Which factors a caption names, and how: the inverse of ``caption``. "" names none.

    Raises ValueError for text that is not a caption of this world."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if text.strip() == "":
        return {}
    words = text.lower().replace(",", " , ").split()
    named: dict[str, str] = {}

    def fail(why: str) -> ValueError:
        return ValueError(f"{text!r} is not a caption of the shapes world ({why}); write one like "
                          "'a small red square tilted left on the right, on a blue wall above a green floor'")

    if words[:1] not in (["a"], ["an"]):
        raise fail("it starts with 'a' or 'an'")
    i = 1
    if i < len(words) and words[i] in SIZES:
        named["scale"], i = words[i], i + 1
    if i < len(words) and words[i] in COLOURS:
        named["object_hue"], i = words[i], i + 1
    if i < len(words) and words[i] in SHAPES:
        named["shape"], i = words[i], i + 1
    elif i < len(words) and words[i] == "object":
        i += 1
    else:
        raise fail("a shape or 'object' comes after the size and colour")
    if words[i:i + 1] == ["tilted"] and i + 1 < len(words) and words[i + 1] in TILTS:
        named["rotation"], i = words[i + 1], i + 2
    if words[i:i + 2] == ["on", "the"] and i + 2 < len(words) and words[i + 2] in SIDES:
        named["x_position"], i = words[i + 2], i + 3
    if i < len(words):
        if words[i] != ",":
            raise fail(f"unexpected {words[i]!r}")
        i += 1
        if words[i:i + 2] == ["on", "a"] and i + 3 < len(words) + 1 and words[i + 3:i + 4] == ["wall"]:
            if words[i + 2] not in COLOURS:
                raise fail(f"{words[i + 2]!r} is not a colour")
            named["wall_hue"], i = words[i + 2], i + 4
        if words[i:i + 2] == ["above", "a"] and words[i + 3:i + 4] == ["floor"]:
            if words[i + 2] not in COLOURS:
                raise fail(f"{words[i + 2]!r} is not a colour")
            named["floor_hue"], i = words[i + 2], i + 4
        if i != len(words) or not ({"wall_hue", "floor_hue"} & set(named)):
            raise fail("after the comma: 'on a COLOUR wall', 'above a COLOUR floor', or both")
    if caption(named) != " ".join(words).replace(" ,", ","):
        raise fail(f"its words are out of order; the caption of the same factors is {caption(named)!r}")
    return named


def faithful(named: dict[str, str], factors: dict[str, Tensor]) -> dict[str, Tensor]:
    """For each named factor, whether each scene's factor (n,) agrees with its word: a hue within ±1/12
    of the colour's centre, the shape exact, scale, rotation and x_position on the named side.
    On a boundary the word ``describe`` gives is accepted (a hue on a float32 boundary, θ = 0: left),
    so a scene is always faithful to its own description. Returns {factor: (n,) bool}."""
    _check_words("named", named)
    check_factors(factors)
    out = {}
    for name, word in named.items():
        value = factors[name]
        if name.endswith("_hue"):
            k, hue = COLOURS.index(word), value.double()  # float64, as colour_name rounds it
            nearest = torch.remainder(torch.round(torch.remainder(hue, 1.0) * 6), 6) == k
            out[name] = nearest | ((torch.remainder(hue - k / 6 + 0.5, 1.0) - 0.5).abs() <= 1 / 12)
        elif name == "shape":
            out[name] = value == SHAPES.index(word)
        elif name == "scale":
            out[name] = (value > _middle("scale")) == (word == "large")
        elif name == "rotation":
            out[name] = (value >= 0) == (word == "left")
        else:
            out[name] = (value > 0) == (word == "right")
    return out


def tokenizer_files(folder: str | Path, max_length: int = 32) -> Path:
    """Write a CLIP tokenizer for WORDS into ``folder``: vocab.json, merges.txt, tokenizer_config.json,
    special_tokens_map.json (the files of a Stable Diffusion checkpoint's tokenizer/), built offline.

    CLIP's BPE starts from a word's letters (the last one marked "</w>") and applies the merges in
    order of rank. The merges are learnt by the tokenizers library's BPE trainer on the word list,
    run until no pair is left, so that every word becomes one token; the vocabulary holds the two
    special tokens, the words, the letters and the partial words, numbered in that order, so that
    every run gives each word the same id. ``max_length``: the padded length of an encoded prompt
    (start and end included).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    folder = check_path("folder", folder)
    check_int("max_length", max_length, 4, 1024)
    folder.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    bpe.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # no limit on the vocabulary: training merges until every word is a single token
    trainer = trainers.BpeTrainer(vocab_size=1_000_000, min_frequency=1, special_tokens=[BOS, EOS],
                                  end_of_word_suffix="</w>", show_progress=False)
    bpe.train_from_iterator([" ".join(WORDS)], trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [" ".join(pair) for pair in model["merges"]]
    # The trainer breaks ties between equally frequent pairs in hash order, which changes from one
    # process to the next, and numbers its tokens in that order. A text encoder's embeddings are
    # indexed by these ids, so they are renumbered in a fixed order: the special tokens, the world's
    # words, then the letters and partial words by length and text.
    words = [word + "</w>" for word in WORDS]
    missing = [word for word in words if word not in model["vocab"]]
    if missing:
        raise RuntimeError(f"the BPE trainer left {missing} as more than one token; every word must be one")
    rest = sorted((t for t in model["vocab"] if t not in (BOS, EOS, *words)), key=lambda t: (len(t), t))
    vocab = {token: i for i, token in enumerate([BOS, EOS, *words, *rest])}
    (folder / "vocab.json").write_text(json.dumps(vocab, indent=0, ensure_ascii=False) + "\n")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=1) + "\n")
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": max_length, "do_lower_case": True, **special}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=1) + "\n")
    return folder
