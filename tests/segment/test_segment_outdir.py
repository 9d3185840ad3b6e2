"""``sam3lite segment`` and its output folder: settings recorded and enforced on resume, folders and
files that are not ours left alone, empty results that load in pycocotools, ``--box`` checked
against the images, and CPU threads + loader workers that fit the cores."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from reference import save_reference, tiny_config_dict

from sam3lite import runtime
from sam3lite.cli import main
from sam3lite.segment import load_results

SIZES = {"a.png": (150, 203), "b.png": (120, 90)}  # name: (height, width)


def write_images(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, (h, w) in SIZES.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / name)
    return folder


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    """Two tiny checkpoints of the same shapes (other weights)."""
    root = tmp_path_factory.mktemp("models")
    save_reference(tiny_config_dict("s0"), root / "m1", seed=11)
    save_reference(tiny_config_dict("s0"), root / "m2", seed=12)
    return root / "m1", root / "m2"


@pytest.fixture()
def one_thread():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def segment(images: Path, out: Path, model: Path, *extra: str) -> int:
    args = ["segment", str(images), "--model", str(model), "--out", str(out), "--no-progress", "--workers", "0"]
    return main([*args, *extra])


def test_rerun_with_other_settings_is_refused_naming_what_changed(models, tmp_path, capsys, one_thread):
    images, out = write_images(tmp_path / "imgs"), tmp_path / "out"
    assert segment(images, out, models[0], "--prompt", "cat", "--threshold", "0.1") == 0
    low = json.loads((out / "results.json").read_text())
    assert low and min(r["score"] for r in low) <= 0.55  # the low threshold kept low scores
    capsys.readouterr()
    before = digest(out)
    refused = [
        (("--prompt", "cat", "--threshold", "0.5"), "--threshold was 0.1, now 0.5"),
        (("--prompt", "cat", "--threshold", "0.1", "--mask-threshold", "0.7"), "--mask-threshold was 0.5, now 0.7"),
        (("--prompt", "dog", "--threshold", "0.1"), '--prompt was ["cat"], now ["dog"]'),
        (("--prompt", "cat", "--threshold", "0.1", "--dtype", "bfloat16"), "--dtype was float32, now bfloat16"),
        (("--prompt", "cat", "--threshold", "0.1", "--box", "1,2,30,40"), "--box was null, now [[1.0, 2.0, 30.0, 4"),
    ]
    for extra, needle in refused:
        assert segment(images, out, models[0], *extra) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and needle in err and "--overwrite" in err, err
    assert segment(images, out, models[1], "--prompt", "cat", "--threshold", "0.1") == 2
    assert f"--model (weights): other files than the run's {models[0]}" in capsys.readouterr().err
    assert digest(out) == before  # refused runs write nothing

    moved = tmp_path / "moved_model"
    shutil.copytree(models[0], moved)  # the same weights elsewhere are the same model
    assert segment(images, out, moved, "--prompt", "cat", "--threshold", "0.1") == 0
    assert "2 images: 0 done, 2 skipped" in capsys.readouterr().out

    assert segment(images, out, models[0], "--prompt", "cat", "--threshold", "0.55", "--overwrite") == 0
    assert "2 images: 2 done, 0 skipped" in capsys.readouterr().out
    high = json.loads((out / "results.json").read_text())
    assert all(r["score"] > 0.55 for r in high) and len(high) < len(low)
    assert json.loads((out / "run.json").read_text())["settings"]["threshold"] == 0.55
    assert json.loads((out / "summary.json").read_text())["threshold"] == 0.55
    assert sorted((out / "manifest.txt").read_text().split()) == ["a", "b"]  # redone images listed once


def test_folders_and_files_that_are_not_ours_are_never_replaced(models, tmp_path, capsys, one_thread):
    images = write_images(tmp_path / "imgs")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "results.json").write_text("[1, 2, 3]")
    (theirs / "a.overlay.png").write_bytes(b"their picture")
    for extra in ((), ("--overwrite",)):
        assert segment(images, theirs, models[0], "--prompt", "cat", *extra) == 2
        assert "is not empty and holds no sam3lite segment run" in capsys.readouterr().err
    assert sorted(p.name for p in theirs.iterdir()) == ["a.overlay.png", "results.json"]
    assert (theirs / "a.overlay.png").read_bytes() == b"their picture"

    # --out may be the input folder, but a file there named like an output is not replaced.
    (images / "b.overlay.png").write_bytes(b"their picture")
    before = digest(images)
    assert segment(images, images, models[0], "--prompt", "cat") == 2
    err = capsys.readouterr().err.strip()
    assert "holds b.overlay.png, which sam3lite did not write" in err and "\n" not in err
    assert digest(images) == before
    (images / "b.overlay.png").unlink()
    assert segment(images, images, models[0], "--prompt", "cat") == 0

    # In our own run folder too: a new image whose output name is taken by someone else's file.
    Image.new("RGB", (40, 30)).save(images / "c.png")
    (images / "c.json").write_text('{"labelme": "annotations"}')
    assert segment(images, images, models[0], "--prompt", "cat") == 2
    assert "holds c.json, which sam3lite did not write" in capsys.readouterr().err
    assert (images / "c.json").read_text() == '{"labelme": "annotations"}'

    hidden_only = tmp_path / "hidden_only"
    hidden_only.mkdir()
    (hidden_only / ".DS_Store").write_bytes(b"")
    assert segment(images / "a.png", hidden_only, models[0], "--prompt", "cat") == 0


def test_a_run_that_finds_nothing_loads_in_pycocotools(models, tmp_path, one_thread):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, out = write_images(tmp_path / "imgs"), tmp_path / "out"
    assert segment(images, out, models[0], "--prompt", "cat", "--threshold", "1.0") == 0  # keeps score > 1: none
    assert json.loads((out / "results.json").read_text()) == []
    gt = COCO(str(out / "images.json"))
    with pytest.raises(IndexError):  # pycocotools' own loader refuses an empty list: load_results does not
        gt.loadRes(str(out / "results.json"))
    results = load_results(gt, out / "results.json")
    assert len(results.anns) == 0 and sorted(results.imgs) == [0, 1] and len(results.cats) == 1
    evaluation = COCOeval(gt, results, "segm")
    evaluation.evaluate()  # scores the empty result set without an error


def test_box_outside_an_image_is_a_usage_error_naming_box(models, tmp_path, capsys, one_thread):
    images = write_images(tmp_path / "imgs")
    assert segment(images, tmp_path / "out", models[0], "--box", "100,130,140,150") == 2  # b.png is 90 wide
    err = capsys.readouterr().err.strip()
    expected = f"--box 100,130,140,150 lies outside image {images / 'b.png'} (90x120 pixels)"
    assert err == f"sam3lite segment: error: {expected}"
    assert not (tmp_path / "out").exists()

    assert main(["segment", str(images), "--model", str(models[0]), "--out", str(tmp_path / "out"), "--box",
                 "-50,-20,60,70", "--prompt", "cat", "--no-progress", "--workers", "0"]) == 0  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    expected = "--box -50,-20,60,70 extends past the edge of 2 of 2 image(s) and is clipped there"
    assert err == [f"sam3lite segment: warning: {expected}"]
    run = json.loads((tmp_path / "out/run.json").read_text())["settings"]
    assert run["boxes"] == [[-50.0, -20.0, 60.0, 70.0]] and run["box_labels"] == [1]


@pytest.fixture()
def many_threads():
    saved = torch.get_num_threads()
    torch.set_num_threads(16)  # what torch would use on a big machine
    yield
    torch.set_num_threads(saved)


@pytest.mark.parametrize(
    ("cores", "busy", "device", "ranks", "workers", "expected"),
    [
        (2, 0.0, "cpu", 1, None, (2, 0)),  # the model takes both cores; the main process decodes
        (2, 1.0, "cpu", 1, None, (1, 0)),  # one core busy with something else
        (2, 0.0, "cpu", 1, 1, (1, 1)),  # --workers 1: one thread left
        (16, 0.0, "cpu", 1, None, (12, 4)),
        (16, 0.0, "cuda", 1, None, (12, 4)),
        (16, 8.0, "cpu", 1, None, (6, 2)),  # half the machine busy: half the cores
        (8, 0.0, "cuda", 2, None, (1, 3)),  # two ranks share the machine
    ],
)
def test_threads_and_workers_never_exceed_the_cores(monkeypatch, many_threads, cores, busy, device, ranks, workers,
                                                     expected):  # fmt: skip
    monkeypatch.setattr(runtime, "available_cores", lambda: cores)
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    threads, loaders = runtime.cpu_budget(workers, torch.device(device), ranks, busy)
    assert (threads, loaders) == expected
    if workers is None:
        assert threads + loaders <= cores // ranks


def test_threads_follow_a_lower_torch_setting_and_busy_cores_sees_other_processes(monkeypatch, one_thread):
    monkeypatch.setattr(runtime, "available_cores", lambda: 8)
    assert runtime.cpu_budget(None, torch.device("cpu"), 1, 0.0) == (1, 2)  # OMP_NUM_THREADS=1 is kept
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        assert runtime.busy_cores() >= 1.0
    finally:
        spinner.kill()
        spinner.wait()


def test_the_run_sizes_threads_and_workers_to_the_cores(models, tmp_path, monkeypatch, many_threads):
    monkeypatch.setattr(runtime, "available_cores", lambda: 2)
    monkeypatch.setattr(runtime, "busy_cores", lambda: 0.0)
    images, out = write_images(tmp_path / "imgs"), tmp_path / "out"
    assert main(["segment", str(images), "--prompt", "cat", "--model", str(models[0]), "--out", str(out),
                 "--no-progress"]) == 0  # fmt: skip
    rank = json.loads((out / "summary.json").read_text())["ranks"][0]
    assert (rank["threads"], rank["workers"]) == (2, 0)  # was 16 threads + 1 worker on these 2 cores
    assert torch.get_num_threads() == 16  # the caller's setting is back
