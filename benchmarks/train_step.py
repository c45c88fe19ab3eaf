"""Benchmark: seconds per training step of the embedded MNIST model, float32 against bfloat16.

    python benchmarks/train_step.py                       # CPU, batch 64, the shipped architecture
    python benchmarks/train_step.py --device cuda

Side by side in one process: ``labkit.train.train_ddpm`` itself (data, U-Net forward and backward,
AdamW, EMA) with ``precision="fp32"`` and ``precision="bf16"``, each run twice, for --short and
--long steps into a fresh folder. The time per step is the slope (T_long − T_short) / (long − short),
so model set-up and the final checkpoint cancel out; the median of --repeats interleaved repeats
is reported, with the range. Prints a table and writes JSON (--out).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from labkit.checks import check_out_dir, device_arg, int_arg
from labkit.files import write_json
from labkit.train import PRECISIONS, TrainConfig, train_ddpm

MIN_GAP = 10  # --long − --short: a slope over fewer steps is within the timing noise of one run


def cpu_has_bf16() -> bool:
    """Whether the CPU advertises AVX512-BF16 (Linux only; False where /proc/cpuinfo is absent)."""
    try:
        return "avx512_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def seconds_for(steps: int, precision: str, device: str, folder: Path) -> float:
    config = TrainConfig(out=str(folder), steps=steps, precision=precision, device=device,
                         checkpoint_every=steps, warmup=0)
    start = time.perf_counter()
    train_ddpm(config)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", type=device_arg, default="cpu")
    parser.add_argument("--short", type=int_arg(1, 10_000), default=10)
    parser.add_argument("--long", type=int_arg(1 + MIN_GAP, 10_000), default=50)
    parser.add_argument("--repeats", type=int_arg(1, 100), default=3)
    parser.add_argument("--out", default="benchmarks/results/train_step_cpu.json")
    args = parser.parse_args(argv)
    if args.long - args.short < MIN_GAP:
        parser.error(f"argument --long: must be at least --short + {MIN_GAP} = {args.short + MIN_GAP} (a slope over "
                     f"fewer steps is timing noise, and can come out negative), got {args.long}")
    try:  # the report's folder, before any work
        check_out_dir("--out", Path(args.out).parent)
    except (TypeError, PermissionError) as err:
        parser.error(f"argument --out: {err}")
    args.device = str(args.device)

    load_before = os.getloadavg()
    # Interleaved repeats: the machine's speed drifts (shared cores), and each precision should
    # see the same drift. The median over repeats is reported, with the range.
    per_step: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for precision in PRECISIONS:
                folder = Path(tmp) / f"{precision}-{repeat}"
                short = seconds_for(args.short, precision, args.device, folder / "short")
                long = seconds_for(args.long, precision, args.device, folder / "long")
                per_step[precision].append((long - short) / (args.long - args.short))
    slow = {p: v for p, v in per_step.items() if min(v) <= 0}
    if slow:
        raise SystemExit(f"a time per step came out ≤ 0 ({slow}): the machine's speed varied more than "
                         f"{args.long - args.short} steps take; nothing written. Widen --long − --short or "
                         "rerun on a quieter machine")
    rows = [{"precision": p, "seconds_per_step": round(statistics.median(v), 4),
             "min": round(min(v), 4), "max": round(max(v), 4), "repeats": [round(x, 4) for x in v]}
            for p, v in per_step.items()]
    base = rows[0]["seconds_per_step"]
    for row in rows:
        row["speedup_vs_fp32"] = round(base / row["seconds_per_step"], 2)

    print(f"{'precision':10} {'s/step':>8} {'range':>15} {'speed-up':>9}")
    for row in rows:
        print(f"{row['precision']:10} {row['seconds_per_step']:8.3f} {row['min']:7.3f}–{row['max']:.3f} "
              f"{row['speedup_vs_fp32']:8.2f}×")
    report = {
        "what": "seconds per step of labkit.train.train_ddpm, embedded MNIST architecture, batch 64",
        "steps": [args.short, args.long], "repeats": args.repeats, "device": args.device, "rows": rows,
        "machine": {"cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "avx512_bf16": cpu_has_bf16(), "processor": platform.processor(),
                    "torch": torch.__version__,
                    "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)]},
    }
    print(f"wrote {write_json(args.out, report)}")


if __name__ == "__main__":
    main()
