"""The distillation pipeline end to end, on a tiny random SAM3 teacher and real prompts.

cache -> train (cosine rises; exact resume; torchrun with 2 processes = 1 process) -> eval -> export
(loads in sam3lite and transformers with the student's features), plus the bad-input contract:
clear one-line errors, exit code 2, nothing in an existing cache or run overwritten.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from reference import TEXT_S0, randomize_, rel_err, tiny_config_dict

import sam3lite
from sam3lite.cli import main
from sam3lite.distill import TrainConfig, build_cache, build_student, export, load_run, resolve_config, train
from sam3lite.distill.cache import PROGRESS, open_cache
from sam3lite.distill.student import student_config
from sam3lite.distill.tower import load_tower
from sam3lite.processing.tokenizer import Tokenizer

PROMPTS = Path(__file__).resolve().parents[1] / "data/prompts"  # samples: see its README.md
# 1.3k prompts: LVIS, ImageNet-21k and ADE20K names and synonyms (nouns), Ref-YouTube-VOS expressions
# (sentences, some truncated).
PROMPT_FILES = [PROMPTS / name for name in ("lvis_v1_synonyms.txt", "refytvos_valid_expressions.txt",
                                            "lvis_v1.txt", "detic_lvis_in21k_22k.txt", "ade20k847.txt")]  # fmt: skip
CONTEXT = 16
QUIET = {"log": lambda _msg: None}

# The "about a minute" run: validation token cosine from ~0 to above COSINE_REACHED.
STEPS, BATCH, LR = 80, 64, 6e-3
COSINE_REACHED = 0.8


def _save_detector(directory: Path, seed: int) -> Path:
    """A tiny random SAM3 (CLIP text) checkpoint in the HF layout."""
    torch.manual_seed(seed)
    config = sam3lite.Sam3LiteTextConfig.from_dict(tiny_config_dict("sam3"))
    randomize_(sam3lite.Sam3LiteTextModel(config), seed).save_pretrained(directory)
    return directory


def _rows(path: Path) -> list[dict[str, float]]:
    with path.open(newline="") as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def _snapshot(directory: Path) -> dict[str, str]:
    """sha256 of every file under ``directory``: to show a failed command changed nothing."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.rglob("*")
            if p.is_file()}  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads, and spinning threads stall on a busy machine."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("distill")


@pytest.fixture(scope="module")
def teacher(work) -> Path:
    return _save_detector(work / "teacher", seed=0)


@pytest.fixture(scope="module")
def cache(work, teacher):
    return build_cache(str(teacher), PROMPT_FILES, work / "cache", context_length=CONTEXT, progress=False, **QUIET)


@pytest.fixture(scope="module")
def student_json(work) -> Path:
    """A tiny S0-shaped student (RepMixer + 2 layers + RepMixer, width 64), as a --student config file."""
    path = work / "student.json"
    path.write_text(json.dumps({k: v for k, v in TEXT_S0.items() if k != "max_position_embeddings"}))
    return path


@pytest.fixture(scope="module")
def run(work, cache, student_json) -> Path:
    out = work / "run"
    cfg = TrainConfig(
        cache=str(cache.path),
        student=str(student_json),
        out=str(out),
        steps=STEPS,
        batch_size=BATCH,
        lr=LR,
        eval_every=STEPS // 4,
        log_every=5,
        save_every=STEPS,
        device="cpu",
    )
    train(cfg, **QUIET)
    return out


# ---------------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------------


def test_cache_holds_deduped_split_prompts_and_teacher_targets(cache, teacher):
    meta = cache.meta
    assert meta["context_length"] == CONTEXT and meta["width"] == 32 and meta["complete"]
    assert meta["prompts"]["read"] == 300 + 300 + 300 + 200 + 200 and meta["prompts"]["duplicates"] > 0
    assert meta["prompts"]["truncated"] > 0  # long referring expressions
    assert len(cache.train) + len(cache.val) == meta["prompts"]["read"] - meta["prompts"]["duplicates"]
    assert not set(cache.train.prompts) & set(cache.val.prompts)
    assert 0.015 < len(cache.val) / (len(cache.train) + len(cache.val)) < 0.025  # --val-fraction 0.02
    tower, _, _ = load_tower(teacher)
    assert meta["teacher"]["fingerprint"] == tower.fingerprint()
    index = np.array([0, 5, len(cache.train) - 1])
    ids, mask, targets = cache.train.batch(index)
    expected_ids, expected_mask = Tokenizer(CONTEXT)([cache.train.prompts[i] for i in index])
    assert torch.equal(ids, expected_ids) and torch.equal(mask, expected_mask)
    with torch.no_grad():
        expected = tower(ids, mask)
    torch.testing.assert_close(targets, expected, atol=2e-3, rtol=2e-3)  # float16 storage
    assert cache.train.targets.dtype == np.float16 and isinstance(cache.train.targets, np.memmap)


def test_interrupted_cache_resumes_without_recomputing(cache, teacher, work):
    """A cache stopped after 256 prompts finishes from there: the done rows are left as they are."""
    copy = work / "cache_interrupted"
    copy.mkdir()
    for path in cache.path.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    meta = json.loads((copy / "meta.json").read_text())
    (copy / "meta.json").write_text(json.dumps({**meta, "complete": False}))
    (copy / PROGRESS).write_text(json.dumps({"train": 256, "val": 0}))
    targets = np.load(copy / "train_targets.npy", mmap_mode="r+")
    targets[:256] = 7.0  # marks rows "done before the interruption"
    targets[256:] = 0.0
    targets.flush()
    np.load(copy / "val_targets.npy", mmap_mode="r+")[:] = 0.0
    with pytest.raises(ValueError, match="incomplete"):
        open_cache(copy)
    resumed = build_cache(str(teacher), PROMPT_FILES, copy, context_length=CONTEXT, progress=False, **QUIET)
    assert np.all(resumed.train.targets[:256] == 7.0)
    assert np.array_equal(resumed.train.targets[256:], cache.train.targets[256:])
    assert np.array_equal(resumed.val.targets, cache.val.targets)


def test_cache_refuses_another_context_or_teacher_and_bad_prompts(cache, work, capsys):
    before = _snapshot(cache.path)
    common = ["distill", "cache", "--prompts", *map(str, PROMPT_FILES), "--out", str(cache.path), "--no-progress"]
    assert main([*common, "--teacher", str(work / "teacher"), "--context-length", "32"]) == 2
    assert "made for context length 16, not 32" in capsys.readouterr().err
    other = _save_detector(work / "other_teacher", seed=1)
    assert main([*common, "--teacher", str(other)]) == 2
    assert "a cache holds one teacher" in capsys.readouterr().err
    assert _snapshot(cache.path) == before

    empty = work / "empty.txt"
    empty.write_text("\n \n")
    out = work / "never_made"
    assert main(["distill", "cache", "--teacher", str(other), "--prompts", str(empty), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "empty.txt: no prompts" in err and err.count("\n") == 1 and not out.exists()
    assert (
        main(["distill", "cache", "--teacher", str(other), "--prompts", str(work / "nope.txt"), "--out", str(out)]) == 2
    )
    assert "prompts file not found" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def test_training_raises_token_cosine_and_lowers_loss(run):
    val, losses = _rows(run / "val.csv"), _rows(run / "train.csv")
    assert [row["step"] for row in val] == [0, 20, 40, 60, 80]
    assert val[0]["token_cos"] < 0.2  # a random student points anywhere
    assert val[-1]["token_cos"] > COSINE_REACHED
    assert val[-1]["pooled_cos"] > val[0]["pooled_cos"] + 0.3 and val[-1]["mse"] < 0.5 * val[0]["mse"]
    assert losses[-1]["loss"] < 0.4 * losses[0]["loss"]
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == STEPS and ckpt["val"]["token_cos"] == pytest.approx(val[-1]["token_cos"], rel=1e-5)
    config = json.loads((run / "run.json").read_text())
    assert config["loss_weights"] == {"cos": 2.0, "cons": 0.1}  # an S0-shaped config takes S0's recipe


def _small_config(cache, student_json, out: Path, **overrides) -> TrainConfig:
    base = dict(steps=8, batch_size=32, eval_every=4, save_every=3, log_every=1, device="cpu")
    return TrainConfig(cache=str(cache.path), student=str(student_json), out=str(out), **{**base, **overrides})


def test_interrupted_run_resumes_to_the_same_weights(cache, student_json, work, monkeypatch):
    straight = work / "straight"
    train(_small_config(cache, student_json, straight), **QUIET)

    # A crash in the middle of step 7 (the optimizer raises); the last checkpoint is at step 6.
    crashed = work / "crashed"
    real_step, calls = torch.optim.AdamW.step, []

    def failing_step(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 7:
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", failing_step)
    with pytest.raises(KeyboardInterrupt):
        train(_small_config(cache, student_json, crashed), **QUIET)
    monkeypatch.setattr(torch.optim.AdamW, "step", real_step)
    assert torch.load(crashed / "checkpoint.pt", weights_only=True)["step"] == 6

    # Resume in two invocations: --until 7, then to the end.
    train(resolve_config({"out": str(crashed), "until": 7}, resume=True), resume=True, **QUIET)
    assert torch.load(crashed / "checkpoint.pt", weights_only=True)["step"] == 7
    train(resolve_config({"out": str(crashed)}, resume=True), resume=True, **QUIET)

    a = torch.load(straight / "checkpoint.pt", weights_only=True)
    b = torch.load(crashed / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == 8
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    for key, value in a["optimizer"]["state"].items():
        for name, tensor in value.items():
            assert torch.equal(tensor, b["optimizer"]["state"][key][name]), (key, name)
    drop_time = lambda rows: [{k: v for k, v in r.items() if k != "ms_per_step"} for r in rows]  # noqa: E731
    assert drop_time(_rows(straight / "train.csv")) == drop_time(_rows(crashed / "train.csv"))
    assert _rows(straight / "val.csv") == _rows(crashed / "val.csv")


def test_resume_refuses_changed_settings_and_new_runs_refuse_existing_dirs(run, cache, student_json, capsys):
    before = _snapshot(run)
    assert main(["distill", "train", "--out", str(run), "--resume", "--lr", "0.1"]) == 2
    assert "--lr 0.1 (run: 0.006)" in capsys.readouterr().err
    args = ["distill", "train", "--cache", str(cache.path), "--student", str(student_json), "--out", str(run)]
    assert main(args) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert _snapshot(run) == before


def test_torchrun_two_processes_reach_the_one_process_weights(cache, student_json, work):
    args = ["--cache", str(cache.path), "--student", str(student_json), "--steps", "6", "--batch-size", "32",
            "--eval-every", "100", "--log-every", "1", "--device", "cpu"]  # fmt: skip
    one, two = work / "one_process", work / "two_processes"
    assert main(["distill", "train", *args, "--out", str(one)]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "sam3lite", "distill", "train", *args, "--out", str(two)]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "on 2 process(es)" in done.stdout

    a = torch.load(one / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(two / "checkpoint.pt", weights_only=True)["model"]
    for key, value in a.items():
        if key.endswith("k_proj.bias"):
            # Its gradient is zero in exact arithmetic (softmax ignores a shift shared by all keys), so Adam
            # turns rounding noise into steps there; it changes no output. Outputs are compared below.
            continue
        torch.testing.assert_close(b[key], value, atol=1e-5, rtol=1e-4, msg=key)
    student_one, _ = load_run(one)
    student_two, _ = load_run(two)
    ids, mask, _ = cache.val.batch(np.arange(len(cache.val)))
    with torch.no_grad():
        assert rel_err(student_two(ids, mask), student_one(ids, mask)) < 1e-5
    losses_one, losses_two = _rows(one / "train.csv"), _rows(two / "train.csv")
    assert len(losses_one) == len(losses_two) == 6
    for x, y in zip(losses_one, losses_two, strict=True):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-5) and y["cons"] == pytest.approx(x["cons"], rel=1e-4)


def test_init_from_a_run_and_width_mismatch(run, cache, student_json, work, capsys):
    student, ckpt = load_run(run)
    config = student_config(student_json, CONTEXT)
    finetune = build_student(config, cache.width, init=run).eval()
    ids, mask, _ = cache.val.batch(np.arange(16))
    with torch.no_grad():
        assert torch.equal(finetune(ids, mask), student(ids, mask))
    out = work / "wide"
    args = ["distill", "train", "--cache", str(cache.path), "--student", "s1", "--init", str(run), "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "hidden_size (width): --init 64, student 512" in err and not out.exists()


# ---------------------------------------------------------------------------------------------
# Evaluation and export
# ---------------------------------------------------------------------------------------------


def test_eval_prints_the_validation_metrics(run, cache, teacher, work, capsys):
    assert main(["distill", "eval", "--run", str(run), "--cache", str(cache.path), "--json", "--device", "cpu"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    stored = torch.load(run / "checkpoint.pt", weights_only=True)["val"]
    assert metrics["step"] == STEPS and metrics["prompts"] == len(cache.val)
    for key in ("token_cos", "mse", "pooled_cos"):
        assert metrics[key] == pytest.approx(stored[key], rel=1e-6)
    assert main(["distill", "eval", "--run", str(run), "--cache", str(cache.path), "--device", "cpu"]) == 0
    assert f"token cos {stored['token_cos']:.4f}" in capsys.readouterr().out

    short = build_cache(
        str(teacher), [PROMPTS / "coco80.txt"], work / "cache8", context_length=8, progress=False, **QUIET
    )
    assert main(["distill", "eval", "--run", str(run), "--cache", str(short.path)]) == 2
    assert "made for another teacher or context length" in capsys.readouterr().err


@pytest.fixture(scope="module")
def exported(run, teacher, work) -> Path:
    return export(run, teacher, work / "export", **QUIET)


def test_export_loads_in_sam3lite_with_the_student_features(exported, run, teacher, cache):
    student, _ = load_run(run)
    ids, mask, _ = cache.val.batch(np.arange(len(cache.val)))
    model = sam3lite.load(exported)
    assert model.config.model_type == "sam3_lite_text" and model.config.text_config.max_position_embeddings == 16
    with torch.no_grad():
        assert torch.equal(model.get_text_features(ids, mask).pooler_output, student(ids, mask))
        out = model(pixel_values=torch.randn(1, 3, 112, 112), input_ids=ids[:2], attention_mask=mask[:2])
    assert out.pred_masks.shape[:2] == (2, 10) and torch.isfinite(out.pred_logits).all()
    base = sam3lite.load(teacher).state_dict()
    for key, value in model.state_dict().items():
        if not key.startswith(("text_encoder.", "text_projection.")):
            assert torch.equal(value, base[key]), key  # vision, geometry, DETR, mask, scoring: the base's


def test_export_loads_in_transformers_with_the_student_features(exported, run, cache):
    from transformers import AutoModel, AutoTokenizer

    model, info = AutoModel.from_pretrained(exported, output_loading_info=True)
    assert type(model).__name__ == "Sam3LiteTextModel"
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    student, _ = load_run(run)
    prompts = cache.val.prompts[:8]
    ids, mask = Tokenizer(CONTEXT)(prompts)
    with torch.no_grad():
        ours = student(ids, mask)
        theirs = model.eval().get_text_features(input_ids=ids, attention_mask=mask).pooler_output
    assert rel_err(theirs, ours) < 1e-5
    tokenizer = AutoTokenizer.from_pretrained(exported)
    encoded = tokenizer(prompts, padding="max_length", max_length=CONTEXT, truncation=True, return_tensors="pt")
    assert torch.equal(encoded["input_ids"], ids) and torch.equal(encoded["attention_mask"], mask)


def test_export_refuses_a_base_that_is_not_the_teacher_and_existing_dirs(run, exported, work, capsys):
    other = work / "other_teacher"
    if not other.exists():
        _save_detector(other, seed=1)
    out = work / "export_other"
    assert main(["distill", "export", "--run", str(run), "--base", str(other), "--out", str(out)]) == 2
    assert "is not the teacher the student learned from" in capsys.readouterr().err and not out.exists()
    before = _snapshot(exported)
    assert main(["distill", "export", "--run", str(run), "--base", str(work / "teacher"), "--out", str(exported)]) == 2
    assert "never overwrites" in capsys.readouterr().err
    assert _snapshot(exported) == before
