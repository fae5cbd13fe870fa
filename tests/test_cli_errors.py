"""Bad input at the command line: one line naming what is wrong, exit code 2, no traceback."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from dgi.cli import app
from dgi.run import RunDirectory


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
