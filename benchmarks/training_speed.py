"""Seconds per training epoch, per phase, and per validation pass, of one config on this machine.

Usage:
  python benchmarks/training_speed.py --config configs/amazon-beauty.yaml --data data/amazon-beauty \
      --label after [--steps 120] [--set key=value ...] [--out benchmarks/results/training-speed.json]

Each phase (dense, then joint after the k-means index, then the decoder alone) runs `--steps` optimizer
steps after 5 warm-up steps and is extrapolated to a full epoch, or runs whole epochs with `--steps 0`. The validation pass
is the trainer's own per-epoch record (every ranking rule, beam recall, invalid SIDs, teacher-forced
NTP) on `train.eval_examples` users. Results are merged into the JSON file under `--label`, with the
command, git commit, machine (`dgi.provenance.machine`: CPU, vector extensions, load average after) and the
load average before, torch threads and dtype, so one file holds the before/after pair. It only uses the
Trainer's long-standing methods, so the same script times an older checkout (PYTHONPATH=OLD/src).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

from dgi.io import write_json
from dgi.provenance import git_commit, machine
from dgi.config import load_config
from dgi.pipeline import prepare_corpus
from dgi.training.run import RunDirectory
from dgi.training.trainer import Trainer

RESULTS = Path(__file__).parent / "results" / "training-speed.json"
WARMUP_STEPS = 5


def time_phase(trainer: Trainer, phase: str, steps: int) -> dict:
    """Wall and CPU seconds of `steps` optimizer steps (or one whole epoch when steps is 0), and of the
    phase's one-off preparation (the k-means index; the decoder phase's frozen-context cache)."""
    prepared = time.perf_counter()
    trainer._prepare(phase)
    prepare_seconds = time.perf_counter() - prepared
    n_batches = trainer._steps_per_epoch(phase)
    if steps:
        trainer._batches = _first_batches(trainer._batches, WARMUP_STEPS)
        trainer._run_epoch(phase, 0, 1)
        trainer._batches = _first_batches(Trainer._batches.__get__(trainer), steps)  # a fresh shuffle
    started, cpu = time.perf_counter(), time.process_time()
    trainer._run_epoch(phase, 0, 1)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    measured = steps or n_batches
    return {"steps_timed": measured, "steps_per_epoch": n_batches, "seconds_per_step": wall / measured,
            "epoch_seconds": wall / measured * n_batches, "cpu_seconds_per_step": cpu / measured,
            "extrapolated": bool(steps), "prepare_seconds": prepare_seconds}


def _first_batches(batches, n: int):
    return lambda phase, epoch: itertools.islice(batches(phase, epoch), n)


def time_validation(trainer: Trainer) -> dict:
    started = time.perf_counter()
    record = trainer._epoch_record(0, "joint", {}, 0.0)
    return {"seconds": time.perf_counter() - started, "examples": trainer.config.train.eval_examples,
            "valid": record["valid"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--label", required=True, help="e.g. before / after")
    parser.add_argument("--steps", type=int, default=120, help="timed steps per phase (0 = whole epochs)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--phases", default="dense,joint,decoder", help="the phases timed, in this order")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    overrides = [f"data.path={args.data}", f"train.threads={args.threads}", *args.overrides]
    config = load_config(args.config, overrides)
    load_before = os.getloadavg()[0]
    corpus = prepare_corpus(config)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(config, corpus, RunDirectory(Path(run_dir)), progress=False)
        phases = {phase: time_phase(trainer, phase, args.steps) for phase in args.phases.split(",")}
        validation = time_validation(trainer)
    result = {
        "command": " ".join(["python", *map(shlex.quote, sys.argv)]),
        "git_commit": git_commit(), "config": config.model_dump(mode="json"),
        "threads": torch.get_num_threads(), "dtype": str(next(trainer.model.parameters()).dtype).removeprefix("torch."),
        "autocast": getattr(trainer, "autocast_dtype", None) and str(trainer.autocast_dtype).removeprefix("torch."),
        "phases": phases, "validation": validation,
        "machine": {**machine(), "load_average_1min_before": load_before},  # its load_average_1min: after
    }
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results[args.label] = result
    write_json(args.out, results)
    for phase, timing in phases.items():
        print(f"{args.label} {phase}: {timing['seconds_per_step']:.3f} s/step, {timing['epoch_seconds']:.1f} s/epoch "
              f"({timing['steps_per_epoch']} steps{', extrapolated' if timing['extrapolated'] else ''})")
    print(f"{args.label} validation: {validation['seconds']:.1f} s for {validation['examples']} examples; "
          f"wrote {args.out}")


if __name__ == "__main__":
    main()
