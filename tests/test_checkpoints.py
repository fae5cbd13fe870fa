"""Kill training at each write point of an epoch, resume: the same final metrics as an uninterrupted run."""

from __future__ import annotations

import json
from contextlib import contextmanager

import pytest

from dgi import io, pipeline

from dgi.training import trainer as train


class Killed(BaseException):
    """What kill -9 looks like to the code after it: nothing more runs (BaseException: no handler catches it)."""


@pytest.fixture(scope="module")
def small_config(tiny_config):
    config = tiny_config.model_copy(deep=True)
    config.train.eval_examples, config.train.joint_epochs = 100, 2
    return config


def _writes_recorded(monkeypatch, kill_at: int | None = None) -> list[str]:
    """Record every file write (atomic files and log lines); raise Killed right after write `kill_at`."""
    written: list[str] = []
    atomic, append = io.atomic_path, train.append_jsonl

    def after_write(name: str) -> None:
        written.append(name)
        if len(written) == kill_at:
            raise Killed(name)

    @contextmanager
    def recording_atomic_path(path):
        with atomic(path) as tmp:
            yield tmp
        after_write(str(path))

    def recording_append(path, record):
        append(path, record)
        after_write(str(path))

    monkeypatch.setattr(io, "atomic_path", recording_atomic_path)
    monkeypatch.setattr(train, "append_jsonl", recording_append)
    return written


def _outcome(run) -> tuple:
    state = run.state()
    log = [json.loads(line) for line in run.log_file.read_text().splitlines()]
    return state["best_epoch"], state["best_score"], [(r["epoch"], r["valid"]) for r in log]


def test_resume_after_a_kill_at_every_write_point_of_an_epoch(small_config, tiny_corpus, tmp_path, monkeypatch):
    with monkeypatch.context() as patch:
        writes = _writes_recorded(patch)
        reference = _outcome(pipeline.train(small_config, tmp_path / "whole", tiny_corpus, progress=False))
    names = [w.rsplit("/", 1)[-1] for w in writes]
    # The first joint epoch's writes: its log line, best weights, SID index, checkpoint, state copy.
    first_checkpoint = names.index("last.safetensors")
    epoch_two = list(range(first_checkpoint + 2, names.index("last.safetensors", first_checkpoint + 1) + 2))
    assert {names[i] for i in epoch_two} >= {"log.jsonl", "model.safetensors", "sid_index.safetensors",
                                             "last.safetensors", "state.json"}
    for point in epoch_two:
        run_dir = tmp_path / f"killed-after-{point}-{names[point]}"
        with monkeypatch.context() as patch:
            _writes_recorded(patch, kill_at=point + 1)
            with pytest.raises(Killed):
                pipeline.train(small_config, run_dir, tiny_corpus, progress=False)
        assert _outcome(pipeline.resume(run_dir, progress=False)) == reference, names[point]


def test_the_same_seed_twice_gives_identical_metrics(tiny_config, tiny_corpus, trained_run, tmp_path):
    from dgi.training.run import RunDirectory

    again = pipeline.train(tiny_config, tmp_path / "again", tiny_corpus, progress=False)
    assert _outcome(again) == _outcome(RunDirectory(trained_run))


def test_a_resumed_run_takes_rates_and_weight_decay_from_its_config_not_the_checkpoint(trained_run, tiny_config,
                                                                                      tiny_corpus, tmp_path):
    """A variant that copies a run and edits its config (benchmarks/decoder_experiments.py) must train with
    the edited optimizer settings: the optimizer state restored from the checkpoint keeps its moments only."""
    import shutil

    from dgi.training.run import RunDirectory

    copy = tmp_path / "variant"
    shutil.copytree(trained_run, copy)
    config = tiny_config.model_copy(deep=True)
    config.train.weight_decay, config.train.lr = 0.3, 5e-3
    trainer = train.Trainer(config, tiny_corpus, RunDirectory(copy), progress=False)
    trainer.resume()
    decay, no_decay, _quantizer = trainer.optimizer.param_groups[:3]
    assert decay["weight_decay"] == 0.3 and no_decay["weight_decay"] == 0.0
    assert decay["base_lr"] == no_decay["base_lr"] == 5e-3
    assert trainer.optimizer.state  # the moments were restored


def test_joint_decoder_lr_gives_the_decoder_and_heads_their_own_scheduled_rate(tiny_config, tiny_corpus, tmp_path):
    from dgi.training.run import RunDirectory

    config = tiny_config.model_copy(deep=True)
    config.train.lr, config.train.joint_decoder_lr = 1e-3, 4e-3
    trainer = train.Trainer(config, tiny_corpus, RunDirectory(tmp_path / "run"), progress=False)
    groups = trainer.optimizer.param_groups
    decoder = {id(p) for module in (trainer.model.decoder, trainer.model.heads) for p in module.parameters()}
    own = [{id(p) for p in group["params"]} for group in groups[-2:]]
    assert own[0] | own[1] == decoder and not own[0] & own[1]
    assert [g["base_lr"] for g in groups[-2:]] == [4e-3, 4e-3] and groups[-1]["weight_decay"] == 0.0
    assert all(not decoder & {id(p) for p in group["params"]} for group in groups[:-2])
    trainer.state["step"] = config.train.warmup_steps  # the peak of the schedule
    trainer._set_learning_rate("joint")
    assert groups[0]["lr"] == pytest.approx(1e-3) and groups[-1]["lr"] == pytest.approx(4e-3)


def test_resuming_with_joint_decoder_lr_switched_on_names_the_knob(trained_run, tiny_config, tiny_corpus, tmp_path):
    """Its own decoder groups change the optimizer's layout: a copy of a run trained without them cannot resume
    with them, and says why instead of failing inside torch."""
    import shutil

    from dgi.training.run import RunDirectory

    copy = tmp_path / "variant"
    shutil.copytree(trained_run, copy)
    config = tiny_config.model_copy(deep=True)
    config.train.joint_decoder_lr = 4e-3
    trainer = train.Trainer(config, tiny_corpus, RunDirectory(copy), progress=False)
    with pytest.raises(ValueError, match=r"has \d+ parameter groups but this config builds \d+; train.joint_decoder_lr"):
        trainer.resume()
