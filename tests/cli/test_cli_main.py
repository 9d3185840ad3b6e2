"""The ``sam3lite`` command itself: --version, usage of subcommands, option values that start with
a minus, a closed output pipe, one-line warnings and the offline message."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from reference import save_reference, tiny_config_dict

import sam3lite
from sam3lite.cli import build_parser, glue_dash_values, main


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(
        [sys.executable, "-m", "sam3lite", *args], capture_output=True, text=True, env=environment, timeout=300
    )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny")
    save_reference(tiny_config_dict("s0"), directory, seed=3)
    return directory


@pytest.fixture()
def one_thread():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"sam3lite {sam3lite.__version__}"


@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        (["info", "s0", "--bogus"], "usage: sam3lite info "),
        (["segment", "x.png", "--prompt", "cat", "--out", "o", "--bogus"], "usage: sam3lite segment "),
        (["distill", "eval", "--run", "r", "--cache", "c", "--bogus"], "usage: sam3lite distill eval "),
    ],
)
def test_unknown_flag_prints_the_subcommands_usage(argv, usage, capsys):
    with pytest.raises(SystemExit) as done:
        main(argv)
    err = capsys.readouterr().err
    assert done.value.code == 2 and err.startswith(usage), err
    assert "unrecognized arguments: --bogus" in err and "COMMAND" not in err


def test_negative_box_coordinates_parse():
    argv = ["segment", "x.png", "--prompt", "cat", "--out", "o", "--box", "-50,-20,200,220", "--box", "1,2,30,40,neg"]
    args = build_parser().parse_args(glue_dash_values(argv))
    assert args.box == ["-50,-20,200,220", "1,2,30,40,neg"]
    assert glue_dash_values(["--threshold", "-0.5", "-v", "-1,2"]) == ["--threshold", "-0.5", "-v", "-1,2"]
    assert glue_dash_values(["--box=-1,2,3,4"]) == ["--box=-1,2,3,4"]


def test_closed_output_pipe_ends_quietly(tiny):
    """``sam3lite info M --json | head -1``: the reader leaves before the output is written."""
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sam3lite", "info", str(tiny), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment,
    )
    proc.stdout.close()  # like `head` after its line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141, err
    assert err == ""


def test_info_json_through_a_pipe_still_works(tiny):
    proc = run_cli("info", str(tiny), "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["model_type"] == "sam3_lite_text"


def test_warnings_are_one_line_with_the_prompt_shortened(tiny, tmp_path, capsys, one_thread):
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "x.png")
    long_prompt = " ".join(["word"] * 500)
    argv = ["segment", str(tmp_path / "x.png"), "--prompt", long_prompt, "--model", str(tiny)]
    argv += ["--out", str(tmp_path / "out"), "--no-progress", "--workers", "0"]
    assert main(argv) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("sam3lite segment: warning: 1 prompt(s) longer than the context length")
    assert "'word word word word word word word word ...'" in err[0] and len(err[0]) < 200
    assert ".py" not in err[0] and "warnings.warn" not in err[0]


def test_offline_message_gives_the_download_command_and_the_flag(tmp_path):
    Image.new("RGB", (30, 20)).save(tmp_path / "x.png")
    image, out = str(tmp_path / "x.png"), str(tmp_path / "o")
    proc = run_cli("segment", image, "--prompt", "cat", "--out", out, HF_HOME=str(tmp_path / "hf"))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "hf download vil-uob/sam3-litetext-s0 --local-dir sam3-litetext-s0" in lines[0]
    assert lines[0].endswith("pass --model sam3-litetext-s0.") and "sam3lite.load" not in lines[0]
    assert "outgoing traffic has been disabled." in lines[0]  # the hub's sentence, whole
    proc = run_cli("info", "s1", HF_HOME=str(tmp_path / "hf"))
    assert "give sam3-litetext-s1 in place of 's1'" in proc.stderr and "--model" not in proc.stderr


def test_offline_message_for_python_users(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(sam3lite.CheckpointError) as err:
        sam3lite.load("l")
    message = str(err.value)
    assert "hf download vil-uob/sam3-litetext-l --local-dir sam3-litetext-l" in message
    assert message.endswith("load it with sam3lite.load('sam3-litetext-l').") and "--model" not in message
