"""The parts of ``sam3lite segment`` below the command: inputs, names, shards, prompts, writer, dtype."""

from __future__ import annotations

import json
import os

import pytest
import torch

from sam3lite import runtime
from sam3lite.segment.dataset import build_prompts, parse_box
from sam3lite.segment.inputs import coco_dataset, discover, glob_root, name_images, shard
from sam3lite.segment.writer import atomic_write, done_mask, remove_stale_temporaries


def touch(root, *rels: str) -> None:
    for rel in rels:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def test_folder_glob_list_and_file_inputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    touch(tmp_path, "d/a/x.jpg", "d/b/x.png", "d/b/x.JPG", "d/.hidden/h.png", "d/notes.txt", "d/c/y.webp", "d/scan.raw")
    touch(tmp_path, "more/z.png", "out/d__a__x.overlay.png")
    (tmp_path / "list.txt").write_text("# a comment\nmore/z.png\n\nd/c/y.webp\n")
    found = discover(["d"], "out")
    assert [(i.name, i.image_id) for i in found.items] == [
        ("a__x", 0), ("b__x.JPG", 1), ("b__x.png", 2), ("c__y", 3),
    ]  # fmt: skip
    assert found.items[0].path == os.path.join("d", "a", "x.jpg")
    mixed = discover(["d/a/x.jpg", "more/*.png", "list.txt", "d/scan.raw"], "out")
    assert [i.name for i in mixed.items] == ["d__a__x", "d__c__y", "d__scan", "more__z"]  # a named file is used
    with pytest.raises(ValueError) as err:  # arguments that name no image: every one, in one line
        discover(["d/a/x.jpg", "missing.png", "nothing/*.png"], "out")
    assert str(err.value) == "missing.png: no such file or folder; nothing/*.png: no images match this pattern"
    # --out inside the input folder: earlier overlays are not inputs.
    assert [i.name for i in discover(["."], "out").items][-1] == "more__z"
    assert "out__d__a__x.overlay" not in [i.name for i in discover(["."], "out").items]


def test_names_are_unique_and_deterministic():
    pairs = [("r/a/x.png", "r"), ("r/a__x.png", "r"), ("r/results.png", "r"), ("r/x.png", "r"), ("r/x.jpg", "r")]
    named = dict(name_images(pairs))
    assert len(set(named.values())) == len(pairs)
    assert named["r/results.png"] == "results.png"  # would clash with the run's results.json
    assert named["r/x.png"] == "x.png" and named["r/x.jpg"] == "x.jpg"
    assert named["r/a/x.png"].startswith("a__x.png-") and named["r/a__x.png"].startswith("a__x.png-")
    assert dict(name_images(reversed(pairs))) == named
    assert glob_root("data/**/*.jpg") == "data" and glob_root("*.png") == "."


def test_shards_are_disjoint_and_cover_everything():
    items = list(range(11))
    parts = [shard(items, r, 3) for r in range(3)]
    assert sorted(sum(parts, [])) == items and parts[0] == [0, 3, 6, 9]
    with pytest.raises(ValueError):
        shard(items, 3, 3)


def test_coco_dataset_input_and_category_prompts(tmp_path):
    touch(tmp_path, "images/sub/1.jpg", "images/2.jpg")
    dataset = {
        "images": [{"id": 42, "file_name": "sub/1.jpg"}, {"id": 7, "file_name": "2.jpg"}],
        "categories": [{"id": 3, "name": "school_bus"}, {"id": 9, "name": "ear"}],
    }
    (tmp_path / "ann.json").write_text(json.dumps(dataset))
    found = discover([str(tmp_path / "ann.json")], tmp_path / "out", image_root=str(tmp_path / "images"))
    assert [(i.name, i.image_id) for i in found.items] == [("2", 7), ("sub__1", 42)]
    prompts = build_prompts([], None, [], found.categories)
    assert prompts.texts == ["school bus", "ear"] and prompts.category_ids == [3, 9]
    given = build_prompts(["dog"], None, [], found.categories)  # explicit prompts win, numbered 1..
    assert given.texts == ["dog"] and given.category_ids == [1]
    with pytest.raises(ValueError, match="only input"):
        discover([str(tmp_path / "ann.json"), "x.png"], tmp_path / "out")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a COCO dataset"):
        coco_dataset(str(tmp_path / "bad.json"))


def test_prompts_file_and_boxes(tmp_path):
    (tmp_path / "prompts.txt").write_text("cat\n# skip me\n\nred car\n")
    prompts = build_prompts(["dog"], str(tmp_path / "prompts.txt"), ["1,2,30,40", "5,5,9,9,neg"], None)
    assert prompts.texts == ["dog", "cat", "red car"] and prompts.category_ids == [1, 2, 3]
    assert prompts.boxes == [[1.0, 2.0, 30.0, 40.0], [5.0, 5.0, 9.0, 9.0]] and prompts.box_labels == [1, 0]
    assert build_prompts([], None, ["1,2,3,4"], None).texts == ["visual"]
    assert parse_box(" 1.5, 2, 3 ,4,pos") == ([1.5, 2.0, 3.0, 4.0], 1)
    for bad in ("1,2,3", "1,2,3,4,5,6", "1,2,nan,4", "3,2,1,4", "1,2,3,4,no"):
        with pytest.raises(ValueError, match="--box"):
            parse_box(bad)


def test_atomic_writes_and_done_mask(tmp_path):
    from sam3lite.segment.inputs import ImageItem

    items = [ImageItem("a.png", "a", 0), ImageItem("b.png", "b", 1)]
    atomic_write(tmp_path / "a.json", b"{}")
    atomic_write(tmp_path / "a.overlay.png", b"png")
    atomic_write(tmp_path / "b.json", b"{}")
    assert done_mask(tmp_path, items, overlay=True) == [True, False]
    assert done_mask(tmp_path, items, overlay=False) == [True, True]
    (tmp_path / ".b.overlay.png.123.sam3lite-tmp").write_bytes(b"half")  # a killed writer's leftover
    assert remove_stale_temporaries(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.overlay.png", "b.json"]


def test_auto_dtype(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    assert runtime.select_dtype("auto", cpu) == torch.bfloat16
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert runtime.select_dtype("auto", cpu) == torch.float32
    assert runtime.select_dtype("float16", cpu) == torch.float16
    if torch.cuda.is_available():
        expected = torch.bfloat16 if torch.cuda.get_device_capability() >= (8, 0) else torch.float32
        assert runtime.fast_dtype(torch.device("cuda")) == expected
    monkeypatch.setattr(runtime, "mps_has_bf16", lambda: True)
    assert runtime.fast_dtype(torch.device("mps")) == torch.bfloat16
    monkeypatch.setattr(runtime, "mps_has_bf16", lambda: False)
    assert runtime.fast_dtype(torch.device("mps")) == torch.float32
    assert runtime.select_device("cpu") == cpu
    with pytest.raises(ValueError):
        runtime.select_device("tpu")


def test_a_failing_batch_is_retried_image_by_image():
    from types import SimpleNamespace

    from sam3lite.modeling.vision import VisionFeatures
    from sam3lite.segment.runner import _encode_batch

    class Model:  # runs out of memory on batches, and fails on one image
        device = torch.device("cpu")

        def get_vision_features(self, pixels):
            if pixels.shape[0] > 1:
                raise RuntimeError("out of memory")
            if pixels.min() < 0:
                raise ValueError("bad image")
            return VisionFeatures((pixels,), (pixels,), pixels.flatten(2))

    pixels = torch.ones(3, 3, 4, 4)
    pixels[1] = -1
    features = _encode_batch(SimpleNamespace(model=Model()), pixels)
    assert features[1] == "ValueError: bad image"
    assert [f.fpn_hidden_states[0].shape[0] for f in (features[0], features[2])] == [1, 1]


def test_boxes_are_checked_against_upright_image_sizes(tmp_path):
    from PIL import Image

    from sam3lite.processing.images import image_size, load_image
    from sam3lite.segment.dataset import check_boxes

    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40 wide and 20 high, shown turned: 20 wide and 40 high
    Image.new("RGB", (40, 20)).save(tmp_path / "turned.jpg", exif=exif)
    Image.new("RGB", (40, 20)).save(tmp_path / "plain.png")
    assert image_size(tmp_path / "turned.jpg") == (40, 20) == load_image(tmp_path / "turned.jpg").size[::-1]
    paths = [str(tmp_path / "plain.png"), str(tmp_path / "turned.jpg"), str(tmp_path / "missing.png")]
    assert check_boxes(build_prompts(["cat"], None, ["1,1,10,10"], None), paths) == []
    warnings = check_boxes(build_prompts(["cat"], None, ["1,1,10,10", "5,5,30,15,neg"], None), paths)
    assert warnings == ["--box 5,5,30,15,neg extends past the edge of 1 of 3 image(s) and is clipped there"]
    with pytest.raises(ValueError, match=r"--box 25,1,30,10 lies outside image .*turned.jpg \(20x40 pixels\)"):
        check_boxes(build_prompts(["cat"], None, ["25,1,30,10"], None), paths)
