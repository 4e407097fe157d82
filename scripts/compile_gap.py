"""Where segtrain's training step loses to the hand-written loop (issue 27; benchmarks/gpu.md): each candidate
the issue names, timed as one change to the hand-written loop or to segtrain's, on the same model, batches,
device, precision and memory format as ``segtrain bench``. A candidate that costs the hand-written loop what
segtrain loses, or that gives it back to segtrain, is the cause.

    python scripts/compile_gap.py OUT_DIR [segtrain bench overrides ...] [--cfg job]

Rows (each compiled when ``runtime.compile.enable=true``), each with the frames torch.compile compiled in it
and the full garbage collections that fell in its timed steps:
- the hand-written loop, as ``segtrain bench`` times it;
- + autocast without its weight cache (Lightning 2.6's ``MixedPrecision`` turns it off);
- + forward and backward inside ``optimizer.step(closure)`` (Lightning's automatic optimization);
- + the device-side non-finite loss record segtrain keeps each step;
- with torch.compile over the loss too (model and criterion), not the model alone;
- with the three of Lightning at once;
- segtrain (Lightning's hooks, callbacks and loggers around the step);
- segtrain with autocast's weight cache on (Lightning 2.5's autocast).
Writes ``compile_gap.json`` and prints a markdown table; ``bench.profile=N`` adds both loops' profiles
(``profile_plain.txt``, ``profile_segtrain.txt``), as in ``segtrain bench``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import statistics
import sys
from pathlib import Path
from unittest import mock

import torch
from omegaconf import OmegaConf, open_dict
from pytorch_lightning.plugins.precision import MixedPrecision

from segtrain.commands.bench import (
    Departure,
    plain_loop,
    prepare,
    profile_loops,
    segtrain_loop,
)
from segtrain.config import compose
from segtrain.runtime.profiling import compile_counts, time_rounds
from segtrain.validation import validate


@contextlib.contextmanager
def lightning_autocast_cached():
    """Lightning's mixed precision with autocast's default weight cache, as before Lightning 2.6."""

    def cached(plugin: MixedPrecision) -> torch.autocast:
        dtype = torch.bfloat16 if plugin.precision == "bf16-mixed" else torch.half
        return torch.autocast(plugin.device, dtype=dtype)

    with mock.patch.object(MixedPrecision, "autocast_context_manager", cached):
        yield


def main() -> None:
    out, overrides = Path(sys.argv[1]), sys.argv[2:]
    only_config = overrides[-2:] == ["--cfg", "job"]  # as segtrain's --cfg job: compose, check, print
    if only_config:
        overrides = overrides[:-2]
    out.mkdir(parents=True, exist_ok=True)
    cfg = compose("bench", [*overrides, f"paths.output_dir={out}"], with_hydra=True)
    with open_dict(cfg):
        del cfg["hydra"]  # as in a job Hydra runs: ${hydra:...} reads the config compose registered
    validate(cfg)
    if only_config:
        print(OmegaConf.to_yaml(cfg))
        return
    cfg, reference, batches = prepare(cfg)
    warmup, compiled = cfg.bench.warmup, reference.compile_enabled

    def hand(departure: Departure = Departure()):
        def run() -> tuple[float, float]:
            return plain_loop(cfg, copy.deepcopy(reference), batches, warmup, compiled, None, departure), 0.0

        return run

    def ours(patch=contextlib.nullcontext):
        def run() -> tuple[float, float]:
            with patch():
                return segtrain_loop(cfg, copy.deepcopy(reference), batches, warmup)

        return run

    rows = {
        "hand-written": hand(),
        "+ autocast without its cache": hand(Departure(autocast_cache=False)),
        "+ step inside optimizer.step(closure)": hand(Departure(closure=True)),
        "+ non-finite loss record": hand(Departure(nonfinite_flag=True)),
        "compiled with its loss": hand(Departure(compile_loss=True)),
        "+ Lightning's three at once": hand(
            Departure(autocast_cache=False, closure=True, nonfinite_flag=True)
        ),
        "segtrain": ours(),
        "segtrain, autocast with its cache": ours(lightning_autocast_cached),
    }
    measured = time_rounds(rows, cfg.bench.rounds)
    seconds = {name: rounds.seconds for name, rounds in measured.items()}
    pauses = {name: rounds.pauses for name, rounds in measured.items()}
    if cfg.bench.get("profile"):
        profile_loops(cfg, reference, batches, compiled)
    images = (len(batches) - warmup) * cfg.data.batch_size
    rates = {name: images / statistics.median(values) for name, values in seconds.items()}
    result = {
        "device": torch.cuda.get_device_name() if cfg.trainer.accelerator in ("gpu", "cuda") else "cpu",
        "precision": str(cfg.trainer.precision),
        "channels_last": bool(reference.channels_last),
        "compile": compiled,
        "rounds": cfg.bench.rounds,
        "images_per_s": rates,
        "rounds_s": seconds,
        "torch_compile": {name: compile_counts(rounds.compiles) for name, rounds in measured.items()},
        "gc_in_timed_steps": pauses,
        "overrides": overrides,
    }
    (out / "compile_gap.json").write_text(json.dumps(result, indent=2))
    print(
        f"{result['device']}, {result['precision']}, channels_last={result['channels_last']}, "
        f"compile={compiled}, median of {cfg.bench.rounds} rounds"
    )
    print(
        "| loop | images/s | / hand-written | frames compiled | full gc passes in the timed steps (s) |\n"
        "|---|---|---|---|---|"
    )
    for name, rate in rates.items():
        frames = result["torch_compile"][name]["frames_compiled"]
        full = sum(timed["full_collections"] for timed in pauses[name])
        stalled = sum(timed["seconds"] for timed in pauses[name] if timed["full_collections"])
        relative = rate / rates["hand-written"]
        print(f"| {name} | {rate:.2f} | {relative:.3f} | {frames} | {full} ({stalled:.2f}) |")


if __name__ == "__main__":
    main()
