"""Processor inputs against transformers' Sam3Processor: pixels, ids, boxes; bad inputs; loading."""

from __future__ import annotations

import io
import json
import pickle
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import PIL.Image
import pytest
import torch
from oracles import clip_oracle
from reference import png_header

from sam3lite.processing.images import (
    MAX_IMAGE_PIXELS,
    ImageSettings,
    ImageTooLargeError,
    load_image,
    open_image,
    preprocess_images,
)
from sam3lite.processing.processor import BatchInputs, Processor

LEVEL = 1 / 127.5  # one uint8 level in pixel_values units


@pytest.fixture(scope="module")
def reference():
    from transformers import Sam3ImageProcessor, Sam3Processor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Sam3Processor(Sam3ImageProcessor(), clip_oracle())


@pytest.fixture(scope="module")
def processor() -> Processor:
    return Processor()


def rgb(h: int, w: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, channels), dtype=np.uint8)


def ref_pixels(reference, image) -> tuple[torch.Tensor, torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the reference's torchvision-decoder deprecation notice
        out = reference(images=image, return_tensors="pt")
    return out["pixel_values"], out["original_sizes"]


def assert_pixels_match(ours, ref, exact: bool = True):
    (pv, sizes), (ref_pv, ref_sizes) = ours, ref
    assert pv.dtype == torch.float32 and pv.shape == ref_pv.shape
    assert torch.equal(sizes, ref_sizes)
    if exact:
        assert torch.equal(pv, ref_pv)
    else:
        assert (pv - ref_pv).abs().max() <= LEVEL + 1e-6


# ---------------------------------------------------------------------------------------------
# Pixels
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(1, 1), (2000, 37), (37, 2000), (480, 640), (1008, 1008), (1536, 1200)])
@pytest.mark.parametrize("kind", ["pil", "numpy", "torch"])
def test_pixels_match_reference(processor, reference, size, kind):
    array = rgb(*size, seed=sum(size))
    image = {
        "pil": PIL.Image.fromarray(array),
        "numpy": array,
        "torch": torch.from_numpy(array).permute(2, 0, 1).contiguous(),
    }[kind]
    # The reference reads a 1x1x3 array as CHW (ambiguous layout); feed it the unambiguous PIL image.
    ref_input = PIL.Image.fromarray(array) if kind == "numpy" else image
    assert_pixels_match(preprocess_images(image), ref_pixels(reference, ref_input))


@pytest.mark.parametrize("mode", ["L", "LA", "P", "PA", "RGBA", "CMYK", "1", "I", "F", "YCbCr", "HSV", "RGBX"])
def test_pil_modes_match_reference(reference, mode):
    base = PIL.Image.fromarray(rgb(45, 67, seed=1, channels=4), "RGBA")
    image = base.convert(mode)
    assert_pixels_match(preprocess_images(image), ref_pixels(reference, image))


def test_palette_with_transparency_matches_reference(reference):
    image = PIL.Image.fromarray(rgb(30, 40, seed=2)).convert("P")
    image.info["transparency"] = 7
    assert_pixels_match(preprocess_images(image), ref_pixels(reference, image))


def test_sixteen_bit_is_scaled_not_saturated(reference):
    wide = np.random.default_rng(3).integers(0, 65536, (40, 50)).astype(np.uint16)
    eight = ((wide.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)  # round(v / 257)
    expected = ref_pixels(reference, PIL.Image.fromarray(eight))
    assert_pixels_match(preprocess_images(PIL.Image.fromarray(wide)), expected)  # mode I;16
    assert_pixels_match(preprocess_images(wide), expected)
    assert_pixels_match(preprocess_images(torch.from_numpy(wide)), expected)


def test_float_images_in_unit_range(reference):
    array = rgb(33, 71, seed=4)
    expected = ref_pixels(reference, PIL.Image.fromarray(array))
    unit = array.astype(np.float32) / 255
    assert_pixels_match(preprocess_images(unit), expected, exact=False)
    assert_pixels_match(preprocess_images(torch.from_numpy(unit).permute(2, 0, 1)), expected, exact=False)
    assert_pixels_match(preprocess_images(unit.astype(np.float64)), expected, exact=False)


def test_rgba_and_grayscale_arrays(reference):
    rgba = rgb(30, 50, seed=5, channels=4)
    expected = ref_pixels(reference, PIL.Image.fromarray(rgba, "RGBA"))  # composited on white
    assert_pixels_match(preprocess_images(rgba), expected, exact=False)
    assert_pixels_match(preprocess_images(torch.from_numpy(rgba).permute(2, 0, 1)), expected, exact=False)
    gray = rgb(30, 50, seed=6, channels=1)
    expected = ref_pixels(reference, PIL.Image.fromarray(gray[..., 0]))
    for image in (gray, gray[..., 0], torch.from_numpy(gray[..., 0]), torch.from_numpy(gray).permute(2, 0, 1)):
        assert_pixels_match(preprocess_images(image), expected)


def _jpeg_with_orientation(path: Path, orientation: int, array: np.ndarray) -> Path:
    image = PIL.Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(path, exif=exif, quality=92)
    return path


@pytest.mark.parametrize("orientation", [1, 2, 3, 5, 6, 8])
def test_files_apply_exif_orientation_like_reference(tmp_path, reference, orientation):
    path = _jpeg_with_orientation(tmp_path / f"o{orientation}.jpg", orientation, rgb(40, 64, seed=orientation))
    ours = preprocess_images(str(path))
    assert_pixels_match(ours, ref_pixels(reference, str(path)), exact=False)
    rotated = orientation in (5, 6, 7, 8)
    assert ours[1].tolist() == ([[64, 40]] if rotated else [[40, 64]])
    assert torch.equal(preprocess_images(path)[0], ours[0])  # pathlib.Path too


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P"])
def test_png_files_match_reference(tmp_path, reference, mode):
    path = tmp_path / f"{mode}.png"
    PIL.Image.fromarray(rgb(35, 47, seed=7, channels=4), "RGBA").convert(mode).save(path)
    # Files drop alpha, as the reference's file decoder (and PIL's convert("RGB")) does.
    assert_pixels_match(preprocess_images(str(path)), ref_pixels(reference, str(path)), exact=False)
    assert load_image(path).mode == "RGB"


def test_batches_of_mixed_inputs(processor, reference):
    arrays = [rgb(40, 60, seed=8), rgb(91, 33, seed=9), rgb(40, 60, seed=10)]
    images = [PIL.Image.fromarray(arrays[0]), arrays[1], torch.from_numpy(arrays[2]).permute(2, 0, 1)]
    expected = ref_pixels(reference, [PIL.Image.fromarray(a) for a in arrays])
    assert_pixels_match(preprocess_images(images), expected)
    stacked = torch.from_numpy(np.stack([arrays[0], arrays[2]])).permute(0, 3, 1, 2)
    expected = ref_pixels(reference, [PIL.Image.fromarray(arrays[0]), PIL.Image.fromarray(arrays[2])])
    assert_pixels_match(preprocess_images(stacked), expected)
    assert_pixels_match(preprocess_images(np.stack([arrays[0], arrays[2]])), expected)


def test_custom_size_and_normalization():
    settings = ImageSettings(size=(112, 140), image_mean=(0.485, 0.456, 0.406), image_std=(0.229, 0.224, 0.225))
    pv, sizes = preprocess_images(rgb(50, 70), settings)
    assert pv.shape == (1, 3, 112, 140) and sizes.tolist() == [[50, 70]]
    from transformers import Sam3ImageProcessor

    ref = Sam3ImageProcessor(
        size={"height": 112, "width": 140}, image_mean=list(settings.image_mean), image_std=list(settings.image_std)
    )
    assert torch.allclose(pv, ref(rgb(50, 70), return_tensors="pt")["pixel_values"], atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Bad images
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "image,error,match",
    [
        (42, TypeError, r"images: unsupported image type int"),
        ({"pixels": 1}, TypeError, "unsupported image type dict"),
        (np.zeros((4, 4, 5), np.uint8), ValueError, "1, 3 or 4 channels"),
        (np.zeros((4, 4, 2), np.uint8), ValueError, "1, 3 or 4 channels"),
        (torch.zeros(5, 4, 4, dtype=torch.uint8), ValueError, "1, 3 or 4 channels"),
        (np.zeros(7, np.uint8), ValueError, "HW or HWC"),
        (torch.zeros(1, 1, 1, 2, 2), ValueError, "HW or CHW"),
        (np.zeros((0, 5, 3), np.uint8), ValueError, "zero size"),
        (np.full((4, 4, 3), 2.0, np.float32), ValueError, r"\[0, 1\]"),
        (np.full((4, 4, 3), -0.5, np.float32), ValueError, r"\[0, 1\]"),
        (np.full((4, 4, 3), np.nan, np.float32), ValueError, r"\[0, 1\]"),
        (np.zeros((4, 4, 3), np.int64), TypeError, "unsupported dtype int64"),
        (torch.zeros(3, 4, 4, dtype=torch.bool), TypeError, "unsupported dtype torch.bool"),
        ([], ValueError, "empty list"),
        ("https://example.com/cat.jpg", ValueError, "URLs are not fetched"),
    ],
)
def test_bad_images_raise_clear_errors(processor, image, error, match):
    with pytest.raises(error, match=match):
        processor(images=image, text="cat")


def test_bad_image_in_a_list_is_named(processor):
    with pytest.raises(TypeError, match=r"images\[1\]"):
        processor(images=[rgb(4, 4), None], text="cat")


def test_bad_files_raise_clear_errors(tmp_path, processor):
    missing = tmp_path / "missing.png"
    with pytest.raises(FileNotFoundError, match="missing.png"):
        processor(images=str(missing), text="cat")
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x89PNG not really an image" * 10)
    with pytest.raises(ValueError, match="cannot read image file .*garbage.png"):
        processor(images=garbage, text="cat")
    buffer = io.BytesIO()
    PIL.Image.fromarray(rgb(64, 64)).save(buffer, format="JPEG")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ValueError, match="cannot read image file .*truncated.jpg"):
        processor(images=[rgb(8, 8), str(truncated)], text="cat")
    with pytest.raises(FileNotFoundError):
        processor(images=str(tmp_path), text="cat")  # a directory


def test_huge_images_are_refused_by_size_without_pil_warnings(tmp_path):
    """PIL warns above 89 M pixels and raises above 179 M; load_image reads up to the latter without
    the warning and refuses larger images with a message giving their size."""
    big = tmp_path / "big.png"
    big.write_bytes(png_header(12000, 12000))  # 144 M pixels: accepted (this one has no pixel data)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header(20000, 20000))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        with pytest.raises(ValueError, match="cannot read image file .*big.png") as err:
            load_image(big)
        assert "pixels" not in str(err.value)
        with pytest.raises(ImageTooLargeError) as err:
            load_image(bomb)
    message = str(err.value)
    assert "bomb.png" in message and "400,000,000 pixels" in message and f"{MAX_IMAGE_PIXELS:,}" in message
    with pytest.raises(ImageTooLargeError, match="12000x12000 = 144,000,000 pixels; at most 1,000,000"):
        open_image(big, max_pixels=1_000_000)


# ---------------------------------------------------------------------------------------------
# Text and boxes against the reference
# ---------------------------------------------------------------------------------------------

IMAGES = [rgb(50, 70, seed=11), rgb(33, 91, seed=12)]

PARITY_CASES = {
    "text only": dict(text=["a cat", "the dog on the left"]),
    "boxes and text": dict(text=["a cat", "dog"], input_boxes=[[[1, 2, 30, 40]], [[3, 4, 20, 30], [5, 6, 7, 8]]]),
    "labels": dict(
        text=["a cat", "dog"],
        input_boxes=[[[1, 2, 30, 40]], [[3, 4, 20, 30], [5, 6, 7, 8]]],
        input_boxes_labels=[[0], [1, 0]],
    ),
    "visual default": dict(input_boxes=[[[1, 2, 30, 40]], [[3, 4, 20, 30]]]),
    "image without boxes": dict(input_boxes=[[[1, 2, 30, 40]], None]),
    "text none entry": dict(text=[None, "dog"], input_boxes=[[[1.5, 2.25, 30.1, 40.7]], [[3, 4, 20, 30]]]),
    "tensor boxes": dict(text="x", input_boxes=torch.tensor([[[1, 2, 30, 40.0]], [[3, 4, 20, 30]]])),
    "array boxes and labels": dict(
        text="x",  # a list of texts with array boxes trips the reference (array truthiness)
        input_boxes=np.array([[[1, 2, 30, 40.0], [0, 0, 70, 33]], [[3, 4, 20, 30], [1, 1, 2, 2]]]),
        input_boxes_labels=np.array([[1, 0], [0, 1]]),
    ),
}


@pytest.mark.parametrize("case", PARITY_CASES)
def test_inputs_match_reference(processor, reference, case):
    kwargs = PARITY_CASES[case]
    images = [PIL.Image.fromarray(a) for a in IMAGES]
    ours = processor(images=images, return_tensors="pt", **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = reference(images=images, return_tensors="pt", **kwargs)
    assert sorted(ours) == sorted(ref)
    for key in ref:
        assert ours[key].dtype == ref[key].dtype, key
        assert torch.equal(ours[key], ref[key]), key


def test_text_only_and_original_sizes(processor, reference):
    ours = processor(text="hello there")
    assert sorted(ours) == ["attention_mask", "input_ids"]
    assert torch.equal(ours["input_ids"], reference(text="hello there", return_tensors="pt")["input_ids"])
    boxes = [[[1, 2, 30, 40]], [[3, 4, 20, 30]]]
    ours = processor(text=["a", "b"], input_boxes=boxes, original_sizes=[[50, 70], [33, 91]])
    full = processor(images=IMAGES, text=["a", "b"], input_boxes=boxes)
    assert torch.equal(ours["input_boxes"], full["input_boxes"])
    assert torch.equal(ours["original_sizes"], full["original_sizes"])


def test_one_image_many_prompts_is_not_copied(processor):
    out = processor(images=IMAGES[0], text=["ear", "cat", "dog"])
    assert out["pixel_values"].shape == (1, 3, 1008, 1008) and out["original_sizes"].shape == (1, 2)
    assert out["input_ids"].shape == (3, 32)
    # Box lists for each prompt are all placed in the single image.
    boxes = [[[0, 0, 70, 50]], [[35, 25, 70, 50]], [[0, 0, 7, 5]]]
    out = processor(images=IMAGES[0], text=["ear", "cat", "dog"], input_boxes=boxes)
    expected = torch.tensor([[0.5, 0.5, 1, 1], [0.75, 0.75, 0.5, 0.5], [0.05, 0.05, 0.1, 0.1]])
    assert torch.allclose(out["input_boxes"][:, 0], expected)
    one_prompt_many_images = processor(images=IMAGES, text="cat")
    assert one_prompt_many_images["input_ids"].shape == (1, 32)


def test_boxes_outside_the_image_are_clipped_with_a_warning(processor):
    with pytest.warns(UserWarning, match="clipped"):
        out = processor(images=IMAGES[0], input_boxes=[[[-10.5, 5, 80, 60], [10, 10, 20, 20]]])
    inside = processor(images=IMAGES[0], input_boxes=[[[0, 5, 70, 50], [10, 10, 20, 20]]])
    assert torch.equal(out["input_boxes"], inside["input_boxes"])


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(input_boxes=[[[1, 2, 3]]]), ValueError, r"input_boxes\[0\]\[0\] must be 4 numbers"),
        (dict(input_boxes=[[["a", 2, 3, 4]]]), ValueError, "must be 4 numbers"),
        (dict(input_boxes=[[[1, 2, float("nan"), 4]]]), ValueError, "non-finite"),
        (dict(input_boxes=[[[1, 2, float("inf"), 4]]]), ValueError, "non-finite"),
        (dict(input_boxes=[[[30, 2, 10, 40]]]), ValueError, "x2 > x1"),
        (dict(input_boxes=[[[1, 40, 30, 40]]]), ValueError, "y2 > y1"),
        (dict(input_boxes=[[[100, 60, 120, 80]]]), ValueError, "outside the 70x50 image"),
        (dict(input_boxes=[[[1, 2, 30, 40]]], input_boxes_labels=[[2]]), ValueError, "1 .positive. or 0"),
        (dict(input_boxes=[[[1, 2, 30, 40]]], input_boxes_labels=[[1, 0]]), ValueError, "1 boxes but"),
        (dict(input_boxes=[[[1, 2, 30, 40]]], input_boxes_labels=[[1], [1]]), ValueError, "1 entries but"),
        (dict(input_boxes_labels=[[1]]), ValueError, "without input_boxes"),
        (dict(input_boxes=[]), ValueError, "input_boxes is empty"),
        (dict(input_boxes=[[1, 2, 3, 4]]), ValueError, r"input_boxes\[0\]\[0\] must be 4 numbers"),
        (dict(input_boxes=torch.zeros(2, 4)), ValueError, "3 dimensions"),
        (dict(input_boxes="box"), TypeError, "nested list"),
        (dict(input_boxes=[[[1, 2, 3, 4]]] * 3), ValueError, "3 box lists for 2 images"),
    ],
)
def test_bad_boxes_raise(processor, kwargs, error, match):
    images = IMAGES[:1] if "3 box lists" not in match else IMAGES
    with pytest.raises(error, match=match):
        processor(images=images, text=None if "input_boxes" in kwargs else "x", **kwargs)


def test_boxes_need_a_size(processor):
    with pytest.raises(ValueError, match="need images or original_sizes"):
        processor(text="x", input_boxes=[[[1, 2, 3, 4]]])
    with pytest.raises(ValueError, match="original_sizes"):
        processor(text="x", input_boxes=[[[1, 2, 3, 4]]], original_sizes=[[0, 5]])


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(text=""), ValueError, "empty or whitespace"),
        (dict(text=["cat", "   "]), ValueError, r"text\[1\] is empty"),
        (dict(text=[]), ValueError, "empty list"),
        (dict(text=["cat", None]), ValueError, r"text\[1\] is None"),
        (dict(text=["cat", 3]), TypeError, r"text\[1\] must be a str"),
        (dict(text=7), TypeError, "text must be a str"),
        (dict(images=[rgb(4, 4)] * 2, text=["a", "b", "c"]), ValueError, "do not pair up"),
        (dict(text="x", return_tensors="np"), ValueError, "return_tensors"),
    ],
)
def test_bad_text_and_batches_raise(processor, kwargs, error, match):
    with pytest.raises(error, match=match):
        processor(**kwargs)


def test_long_prompts_are_truncated_with_a_warning(processor):
    with pytest.warns(UserWarning, match="truncated"):
        out = processor(text="a very long prompt about many things " * 8)
    assert out["input_ids"].shape == (1, 32) and out["input_ids"][0, -1] == 49407


# ---------------------------------------------------------------------------------------------
# The returned batch, loading and saving
# ---------------------------------------------------------------------------------------------


def test_batch_inputs_behave_like_batch_encoding(processor):
    inputs = processor(images=IMAGES[0], text="ear", input_boxes=[[[1, 2, 30, 40]]])
    assert isinstance(inputs, dict) and inputs.get("original_sizes").tolist() == [[50, 70]]
    assert inputs.pixel_values is inputs["pixel_values"]
    with pytest.raises(AttributeError):
        _ = inputs.labels
    half = inputs.to("cpu", dtype=torch.float16)
    assert isinstance(half, BatchInputs) and half["pixel_values"].dtype == torch.float16
    assert half["input_boxes"].dtype == torch.float16 and half["input_ids"].dtype == torch.int64
    assert inputs["pixel_values"].dtype == torch.float32  # .to returns a copy
    restored = pickle.loads(pickle.dumps(inputs))  # DataLoader workers send batches between processes
    assert isinstance(restored, BatchInputs) and torch.equal(restored.input_ids, inputs.input_ids)

    def model(pixel_values, input_ids, attention_mask, input_boxes, input_boxes_labels, original_sizes):
        return pixel_values.shape[0], input_ids.shape[0]

    assert model(**inputs) == (1, 1)


def test_model_card_flow_with_a_tiny_model():
    """The transformers model card example with only the imports changed (a tiny random model)."""
    from reference import tiny_config_dict

    from sam3lite import Sam3LiteTextConfig, Sam3LiteTextModel

    config = Sam3LiteTextConfig.from_dict(tiny_config_dict())
    model = Sam3LiteTextModel(config).eval()
    processor = Processor(image_size=config.vision_config.backbone_config.image_size)
    image = PIL.Image.fromarray(rgb(50, 80, seed=13))
    inputs = processor(images=image, text="ear", return_tensors="pt").to(model.device)
    with torch.no_grad():
        outputs = model(**inputs)
    results = processor.post_process_instance_segmentation(
        outputs, threshold=0.0, mask_threshold=0.5, target_sizes=inputs.get("original_sizes").tolist()
    )[0]
    assert results["masks"].shape == (10, 50, 80) and results["boxes"].shape == (10, 4)
    many = processor(images=image, text=["ear", "cat", "dog"])
    with torch.no_grad():
        outputs = model(**many)
    results = processor.post_process_instance_segmentation(outputs, 0.0, target_sizes=many["original_sizes"])
    assert len(results) == 3 and all(r["masks"].shape[1:] == (50, 80) for r in results)


def test_post_processing_wrappers_delegate(processor):
    outputs = SimpleNamespace(
        pred_logits=torch.tensor([[2.0, -2.0]]),
        pred_boxes=torch.tensor([[[0.1, 0.2, 0.5, 0.6], [0, 0, 1, 1]]]),
        presence_logits=torch.tensor([[5.0]]),
        pred_masks=torch.randn(1, 2, 8, 8),
        semantic_seg=torch.randn(1, 1, 8, 8),
    )
    det = processor.post_process_object_detection(outputs, threshold=0.5, target_sizes=[(100, 200)])[0]
    assert torch.allclose(det["boxes"], torch.tensor([[20.0, 20.0, 100.0, 60.0]]))
    inst = processor.post_process_instance_segmentation(outputs, 0.5, 0.5, [(16, 16)], mask_dtype=torch.bool)[0]
    assert inst["masks"].shape == (1, 16, 16) and inst["masks"].dtype == torch.bool
    assert processor.post_process_semantic_segmentation(outputs, [(4, 4)])[0].shape == (4, 4)


def test_from_pretrained_local_dirs(tmp_path, reference):
    assert Processor.from_pretrained(tmp_path).image_settings == ImageSettings()  # nothing there: defaults
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"size": {"height": 112, "width": 112}}))
    loaded = Processor.from_pretrained(tmp_path, context_length=16)
    assert loaded.image_settings.size == (112, 112) and loaded.context_length == 16
    assert loaded(images=rgb(20, 30), text="x")["pixel_values"].shape == (1, 3, 112, 112)
    # transformers >= 5 layout: settings nested in processor_config.json, as Sam3Processor saves them.
    saved = tmp_path / "hf"
    reference.image_processor.save_pretrained(saved)
    reference.save_pretrained(saved)
    assert Processor.from_pretrained(saved).image_settings == ImageSettings()


def test_save_pretrained_round_trip(tmp_path):
    from transformers import Sam3ImageProcessor

    processor = Processor(image_size=224)
    processor.save_pretrained(tmp_path)
    assert Processor.from_pretrained(tmp_path).image_settings == processor.image_settings
    ref = Sam3ImageProcessor.from_pretrained(tmp_path)
    image = rgb(40, 60, seed=14)
    assert torch.equal(processor(images=image)["pixel_values"], ref(image, return_tensors="pt")["pixel_values"])


def test_unsupported_configs_raise(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"resample": 3}))
    with pytest.raises(ValueError, match="bilinear"):
        Processor.from_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read processor config"):
        Processor.from_pretrained(tmp_path)


def test_from_pretrained_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError):
        Processor.from_pretrained(tmp_path / "does" / "not" / "exist")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(FileNotFoundError):
        Processor.from_pretrained(tmp_path / "file.txt")


def test_hub_name_offline_falls_back_to_defaults(monkeypatch):
    import huggingface_hub

    calls = []

    def unreachable(*args, **kwargs):
        raise ConnectionError("Name or service not known")

    def download(repo_id, filename, **kwargs):
        calls.append(kwargs["local_files_only"])
        raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", unreachable)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    processor = Processor.from_pretrained("facebook/sam3")
    assert processor.image_settings == ImageSettings() and processor.context_length == 32
    assert calls == [True, True, True]  # only the cache was read after the hub proved unreachable (3 files)


def test_hub_name_online_downloads_processor_files(monkeypatch, tmp_path):
    import huggingface_hub

    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"size": {"height": 336, "width": 336}}))

    def download(repo_id, filename, **kwargs):
        assert not kwargs["local_files_only"]
        path = tmp_path / filename
        if not path.exists():
            raise huggingface_hub.errors.EntryNotFoundError(f"{filename} not in {repo_id}")
        return str(path)

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", lambda *a, **k: None)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    assert Processor.from_pretrained("org/model").image_settings.size == (336, 336)


def test_hub_name_without_network_is_quiet_and_fast(monkeypatch):
    import time

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        processor = Processor.from_pretrained("facebook/sam3-nonexistent-test-repo")
    assert processor.image_settings == ImageSettings()
    assert time.perf_counter() - start < 5
