"""Bad input at the command line: one line naming what is wrong, exit code 2, no traceback."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from dgi.cli import app
from dgi.training.run import RunDirectory


@pytest.fixture(scope="module")
def model_dir(trained_run):
    return str(RunDirectory(trained_run).model_dir)


def _run(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize("args, says", [
    (["--k", "0"], "--k"),
    (["--k", "-3"], "--k"),
    (["--beam", "0"], "--beam"),
    (["--rule", "best"], "unknown rule 'best'"),
    (["--history", "NO-SUCH-ITEM"], "NO-SUCH-ITEM"),
])
def test_bad_search_arguments(model_dir, args, says):
    result = _run("search", model_dir, "", *args)
    assert result.exit_code == 2, result.output
    assert says in result.output and "Traceback" not in result.output


def test_missing_or_wrong_directories(tmp_path, trained_run):
    for args, says in ((["search", str(tmp_path / "nowhere")], "not a dgi run directory"),
                       (["eval", str(tmp_path / "nowhere")], "not a dgi run directory"),
                       (["train", "--config", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "r")], "none.yaml"),
                       (["train", "--set", "train.batch_size=-1", "--out", str(tmp_path / "r")], "batch_size"),
                       (["data", "prepare", "amazon-beauty", "--source", str(tmp_path / "none"),
                         "--out", str(tmp_path / "d")], "none"),
                       (["train", "--resume", str(tmp_path)], str(tmp_path))):
        result = _run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert says in result.output and "Traceback" not in result.output, (args, result.output)
        assert result.output.count("\n") <= 2, result.output  # one line (click may wrap very long paths)


def test_debug_shows_the_original_error(model_dir):
    result = _run("--debug", "search", model_dir, "", "--history", "NO-SUCH-ITEM")
    assert isinstance(result.exception, KeyError)
    assert _run("search", model_dir, "", "--history", "NO-SUCH-ITEM").exit_code == 2  # debug does not stick


RUN_FILES = ["config.yaml", "run.json", "model.safetensors", "last.safetensors", "state.json",
             "sid_index.safetensors", "log.jsonl", "model/model.json", "model/weights.safetensors",
             "model/catalog.safetensors", "model/items.jsonl"]


def _damage(file, how: str) -> None:
    if how == "missing":
        file.unlink()
    elif how == "empty":
        file.write_bytes(b"")
    else:
        data = file.read_bytes()
        file.write_bytes(data[: max(1, len(data) // 3)])


@pytest.fixture(scope="module")
def finished_copy(trained_run, tmp_path_factory):
    """A pristine copy of the trained run; each case damages its own copy of it."""
    import shutil

    return shutil.copytree(trained_run, tmp_path_factory.mktemp("pristine") / "run")


@pytest.mark.parametrize("how", ["missing", "empty", "truncated"])
@pytest.mark.parametrize("name", RUN_FILES)
def test_a_damaged_run_directory_is_one_clear_line(finished_copy, tmp_path, name, how):
    import shutil

    run = shutil.copytree(finished_copy, tmp_path / "run")
    _damage(run / name, how)
    first_item = (finished_copy / "model" / "items.jsonl").read_text().split('"', 4)[3]
    command = (["search", str(run), "", "--history", first_item] if name.startswith("model/")
               else ["eval", str(run), "--split", "valid", "--limit", "20"]
               if name in ("model.safetensors", "sid_index.safetensors")
               else ["train", "--resume", str(run), "--quiet"])
    if (name, how) == ("log.jsonl", "truncated"):  # a torn last line: dropped on resume, with a warning
        with pytest.warns(UserWarning, match="unreadable log line dropped"):
            result = _run(*command)
    else:
        result = _run(*command)
    assert "Traceback" not in result.output and not isinstance(result.exception, Exception) or \
        isinstance(result.exception, SystemExit), (result.output, result.exception)
    if result.exit_code != 0:  # a file the command needed: named in one line
        assert result.exit_code == 2, result.output
        assert name.rsplit("/", 1)[-1] in result.output or "run directory" in result.output, result.output
