"""``sam3lite segment`` end to end: the command in a subprocess on a tiny checkpoint, checked against
the transformers pipeline (processor + model + post_process_instance_segmentation)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from oracles import reference_pipeline
from PIL import Image
from reference import save_reference, tiny_config_dict

from sam3lite.cli import main
from sam3lite.processing.rle import rle_to_masks

PROMPTS = ["ear", "yellow school bus"]
THRESHOLD = 0.55  # the tiny model's scores straddle it: some queries kept, some not
# (relative path, height, width): a/x and b/x share a stem, y is a JPEG.
IMAGES = [("a/x.png", 150, 203), ("b/x.png", 120, 90), ("b/y.jpg", 200, 160)]
NAMES = {"a/x.png": "a__x", "b/x.png": "b__x", "b/y.jpg": "b__y"}


def sam3lite_command() -> list[str]:
    """The installed console script beside this interpreter (``python -m sam3lite`` if absent)."""
    script = Path(sys.executable).with_name("sam3lite")
    return [str(script)] if script.exists() else [sys.executable, "-m", "sam3lite"]


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    # One thread: the tiny model gains nothing from more, and a busy 2-core machine loses a lot.
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [*sam3lite_command(), *args], capture_output=True, text=True, env=environment, cwd=cwd, timeout=300
    )


def write_images(root: Path, specs=IMAGES, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for rel, h, w in specs:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


@pytest.fixture()
def one_thread():
    """In-process runs on one thread, as the subprocesses."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny")
    return directory, save_reference(tiny_config_dict("s0"), directory, seed=11)


@pytest.fixture(scope="module")
def first_run(tiny, tmp_path_factory):
    """One folder run, shared by the tests that read its outputs."""
    root = tmp_path_factory.mktemp("run")
    write_images(root / "imgs")
    before = digest(root / "imgs")
    prompt_args = [a for p in PROMPTS for a in ("--prompt", p)]
    proc = run_cli(
        "segment", "imgs", *prompt_args, "--model", str(tiny[0]), "--out", "out", "--threshold", str(THRESHOLD),
        cwd=root,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert digest(root / "imgs") == before  # inputs never written
    return root, proc


def test_per_image_json_matches_transformers_pipeline(tiny, first_run):
    root, proc = first_run
    assert "3 images: 3 done, 0 skipped, 0 failed" in proc.stdout
    partial = False
    for rel, h, w in IMAGES:
        record = json.loads((root / "out" / f"{NAMES[rel]}.json").read_text())
        assert (record["image"], record["width"], record["height"]) == (os.path.join("imgs", rel), w, h)
        image = np.asarray(Image.open(root / "imgs" / rel).convert("RGB"))
        for category, prompt in enumerate(PROMPTS, start=1):
            ours = [d for d in record["detections"] if d["prompt"] == prompt]
            assert all(d["category_id"] == category for d in ours)
            theirs = reference_pipeline(tiny[1], image, prompt, THRESHOLD)
            assert len(ours) == len(theirs["scores"])
            partial |= 0 < len(ours) < 10
            if not ours:
                continue
            scores = torch.tensor([d["score"] for d in ours])
            torch.testing.assert_close(scores, theirs["scores"], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(torch.tensor([d["box"] for d in ours]), theirs["boxes"], rtol=1e-4, atol=1e-3)
            masks = rle_to_masks([d["mask"] for d in ours])
            assert masks.shape[1:] == (h, w)
            assert (masks != theirs["masks"].bool()).float().mean() < 1e-3
    assert partial, "the threshold should keep some queries and drop others"


def test_overlays_results_and_summary(first_run):
    from pycocotools.coco import COCO

    out = first_run[0] / "out"
    for rel, h, w in IMAGES:
        with Image.open(out / f"{NAMES[rel]}.overlay.png") as overlay:
            assert overlay.size == (w, h) and overlay.mode == "RGB"
    records = {NAMES[rel]: json.loads((out / f"{NAMES[rel]}.json").read_text()) for rel, _, _ in IMAGES}
    images = json.loads((out / "images.json").read_text())
    assert [(i["id"], i["name"]) for i in images["images"]] == [(0, "a__x"), (1, "b__x"), (2, "b__y")]
    assert images["categories"] == [{"id": 1, "name": PROMPTS[0]}, {"id": 2, "name": PROMPTS[1]}]
    results = json.loads((out / "results.json").read_text())
    expected = [(records[n]["image_id"], d) for n in ("a__x", "b__x", "b__y") for d in records[n]["detections"]]
    assert len(results) == len(expected)
    for result, (image_id, det) in zip(results, expected, strict=True):
        x1, y1, x2, y2 = det["box"]
        assert result["image_id"] == image_id and result["category_id"] == det["category_id"]
        assert result["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1])
        assert result["score"] == det["score"] and result["segmentation"] == det["mask"]
    assert len(COCO(str(out / "images.json")).loadRes(str(out / "results.json")).anns) == len(results)
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["images"], summary["done"], summary["failed"], summary["skipped"]) == (3, 3, 0, 0)
    assert sum(summary["detections_per_prompt"].values()) == len(results) == summary["detections"]
    assert (out / "errors.jsonl").read_text() == ""


def test_resume_glob_and_bad_images(tiny, first_run, tmp_path):
    """A rerun over a glob and a list with new, missing and broken images: old outputs are kept, new
    ones made, each bad image named on stderr and in errors.jsonl, exit code 1."""
    shutil.copytree(first_run[0] / "imgs", tmp_path / "imgs")
    shutil.copytree(first_run[0] / "out", tmp_path / "out")  # copy2 keeps modification times
    kept = {n: (tmp_path / "out" / f"{n}.json").stat().st_mtime_ns for n in NAMES.values()}
    write_images(tmp_path / "imgs", [("c/new.png", 70, 80)], seed=5)
    (tmp_path / "imgs/c/garbage.png").write_bytes(b"this is not an image")
    good_png = (tmp_path / "imgs/a/x.png").read_bytes()
    (tmp_path / "imgs/c/truncated.png").write_bytes(good_png[: len(good_png) // 2])
    before = digest(tmp_path / "imgs")
    (tmp_path / "list.txt").write_text("imgs/missing.png\n")  # listed images may be missing: they fail alone
    proc = run_cli(
        "segment", "imgs/**/*.png", "imgs/b/y.jpg", "list.txt", *("--prompt", PROMPTS[0]),
        *("--prompt", PROMPTS[1]), "--model", str(tiny[0]), "--out", "out", "--threshold", str(THRESHOLD),
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for bad in ("imgs/missing.png", "imgs/c/garbage.png", "imgs/c/truncated.png"):
        assert bad in proc.stderr
    assert "7 images: 1 done, 3 skipped, 3 failed" in proc.stdout
    assert {n: (tmp_path / "out" / f"{n}.json").stat().st_mtime_ns for n in NAMES.values()} == kept
    assert (tmp_path / "out/c__new.json").is_file() and (tmp_path / "out/c__new.overlay.png").is_file()
    errors = [json.loads(line) for line in (tmp_path / "out/errors.jsonl").read_text().splitlines()]
    assert sorted(e["image"] for e in errors) == ["imgs/c/garbage.png", "imgs/c/truncated.png", "imgs/missing.png"]
    results = json.loads((tmp_path / "out/results.json").read_text())
    images = {i["id"]: i["name"] for i in json.loads((tmp_path / "out/images.json").read_text())["images"]}
    assert {images[r["image_id"]] for r in results} <= {"a__x", "b__x", "b__y", "c__new"}
    assert digest(tmp_path / "imgs") == before
    assert not list((tmp_path / "out").glob(".*"))  # no temporary files left


@pytest.mark.filterwarnings("ignore:1 box")  # the box sticks out of the narrow image, as meant
def test_overwrite_boxes_and_out_in_input_folder(tiny, tmp_path, capsys, one_thread):
    """In process: --overwrite redoes images; --out may be the input folder (its overlays are not
    taken for inputs on the next run); text + box prompts match the reference pipeline."""
    write_images(tmp_path / "imgs")
    inputs = digest(tmp_path / "imgs")
    common = ["--model", str(tiny[0]), "--threshold", "0.2", "--workers", "0", "--no-progress"]
    box = [20.0, 30.0, 120.0, 110.0]
    args = ["segment", str(tmp_path / "imgs"), "--prompt", "dog", "--box", ",".join(map(str, box)), *common]
    assert main([*args, "--out", str(tmp_path / "imgs")]) == 0
    assert main([*args, "--out", str(tmp_path / "imgs")]) == 0
    assert "3 images: 0 done, 3 skipped" in capsys.readouterr().out
    current = digest(tmp_path / "imgs")
    assert all(current[k] == v for k, v in inputs.items())
    record = json.loads((tmp_path / "imgs/a__x.json").read_text())
    theirs = reference_pipeline(tiny[1], np.asarray(Image.open(tmp_path / "imgs/a/x.png")), "dog", 0.2, [box])
    assert len(record["detections"]) == len(theirs["scores"]) > 0
    torch.testing.assert_close(
        torch.tensor([d["score"] for d in record["detections"]]), theirs["scores"], rtol=1e-4, atol=1e-5
    )
    before = (tmp_path / "imgs/a__x.json").stat().st_mtime_ns
    assert main([*args, "--out", str(tmp_path / "imgs"), "--overwrite"]) == 0
    assert "3 images: 3 done, 0 skipped" in capsys.readouterr().out
    assert (tmp_path / "imgs/a__x.json").stat().st_mtime_ns != before


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--prompt", ""], "empty prompt"),
        (["--prompt", "   "], "empty prompt"),
        (["--prompt", "cat", "--prompt", "cat"], "more than once"),
        ([], "nothing to look for"),
        (["--prompt", "cat", "--box", "1,2,3"], "malformed --box"),
        (["--prompt", "cat", "--box", "a,b,c,d"], "malformed --box"),
        (["--prompt", "cat", "--box", "50,50,10,10"], "malformed --box"),
        (["--prompt", "cat", "--box", "1,2,30,40,maybe"], "'neg' or 'pos'"),
        (["--prompt", "cat", "--threshold", "1.5"], "--threshold"),
        (["--prompt", "cat", "--batch-size", "0"], "--batch-size"),
        (["--prompt", "cat", "--model", "no-such-model"], "unknown model"),
        (["--prompt", "cat", "--model", "./missing/dir"], "no such file"),
    ],
)
def test_usage_errors_are_one_line(tmp_path, capsys, extra, needle):
    write_images(tmp_path / "imgs", IMAGES[:1])
    assert main(["segment", str(tmp_path / "imgs"), "--out", str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sam3lite segment: error:") and needle in err and "\n" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("argument", "needle"),
    [
        ("imgs/missing.png", "imgs/missing.png: no such file or folder"),
        ("empty", "empty: no images in this folder"),
        ("imgs/*.webp", "imgs/*.webp: no images match this pattern"),
        ("empty.txt", "empty.txt: empty image list"),
    ],
)
def test_arguments_naming_no_image_are_usage_errors(tmp_path, capsys, monkeypatch, argument, needle):
    """Exit code 2 and nothing created, even beside good inputs (1 is for images that fail when read)."""
    monkeypatch.chdir(tmp_path)
    write_images(tmp_path / "imgs", IMAGES[:1])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty.txt").write_text("# nothing\n")
    assert main(["segment", "imgs/a/x.png", argument, "--prompt", "cat", "--out", "out"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"sam3lite segment: error: {needle}"
    assert not (tmp_path / "out").exists()


def test_no_network_download_is_one_line(tmp_path):
    write_images(tmp_path, IMAGES[:1])
    proc = run_cli(
        "segment", "a/x.png", "--prompt", "cat", "--out", "out", "--model", "s0",
        env={"HF_HOME": str(tmp_path / "hf")}, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "could not get model 's0'" in lines[0] and "Traceback" not in proc.stderr


def test_coco_dataset_input_keeps_its_ids(tiny, tmp_path, capsys, one_thread):
    """A COCO dataset json as input: its image ids and category names/ids go straight into
    results.json, which then loads against the dataset itself."""
    from pycocotools.coco import COCO

    write_images(tmp_path / "val", IMAGES[:2])
    dataset = {
        "images": [{"id": 139, "file_name": "a/x.png", "width": 203, "height": 150},
                   {"id": 285, "file_name": "b/x.png", "width": 90, "height": 120}],
        "categories": [{"id": 17, "name": "cat"}, {"id": 3, "name": "school_bus"}],
        "annotations": [],
    }  # fmt: skip
    (tmp_path / "instances.json").write_text(json.dumps(dataset))
    args = ["segment", str(tmp_path / "instances.json"), "--image-root", str(tmp_path / "val"), "--model",
            str(tiny[0]), "--out", str(tmp_path / "out"), "--threshold", "0.2", "--workers", "0",
            "--no-overlay"]  # fmt: skip
    assert main(args) == 0
    assert "2 images: 2 done" in capsys.readouterr().out
    results = json.loads((tmp_path / "out/results.json").read_text())
    assert {r["image_id"] for r in results} == {139, 285} and {r["category_id"] for r in results} == {17, 3}
    record = json.loads((tmp_path / "out/a__x.json").read_text())
    assert {d["prompt"] for d in record["detections"]} == {"cat", "school bus"}
    assert len(COCO(str(tmp_path / "instances.json")).loadRes(results).anns) == len(results)
    assert not list((tmp_path / "out").glob("*.png"))


def test_int8_image_encoder(tiny, tmp_path, capsys, one_thread):
    """--quantize int8 runs the float32 CPU model with the int8 ViT and says so in summary.json."""
    write_images(tmp_path / "imgs", IMAGES[:1])
    common = ["segment", str(tmp_path / "imgs"), "--prompt", "dog", "--model", str(tiny[0]), "--device", "cpu"]
    common += ["--threshold", "0.0", "--workers", "0", "--no-progress", "--no-overlay"]
    assert main([*common, "--out", str(tmp_path / "f32"), "--dtype", "float32"]) == 0
    assert main([*common, "--out", str(tmp_path / "int8"), "--quantize", "int8"]) == 0
    summary = json.loads((tmp_path / "int8/summary.json").read_text())
    assert (summary["quantize"], summary["dtype"], summary["done"]) == ("int8", "float32", 1)
    exact, int8 = (json.loads((tmp_path / d / "a__x.json").read_text())["detections"] for d in ("f32", "int8"))
    assert len(exact) == len(int8) > 0  # threshold 0 keeps every query
    scores = [torch.tensor([d["score"] for d in run]) for run in (exact, int8)]
    assert 0 < (scores[0] - scores[1]).abs().max() < 0.05
    capsys.readouterr()
    assert main([*common, "--out", str(tmp_path / "bf16"), "--quantize", "int8", "--dtype", "bfloat16"]) == 2
    assert "needs a float32 model on the CPU" in capsys.readouterr().err
