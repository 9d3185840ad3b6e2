"""The torch-free helpers (sam3lite.portable) compute what the PyTorch path computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as tvF

from sam3lite.portable.boxes import normalize_boxes
from sam3lite.portable.images import ImageSettings, preprocess_image, resize_rgb
from sam3lite.portable.postprocess import binarize_masks, sigmoid
from sam3lite.portable.tokenizer import encode_batch
from sam3lite.processing.images import preprocess_images
from sam3lite.processing.postprocess import binarize_masks as torch_binarize
from sam3lite.processing.processor import prepare_boxes
from sam3lite.processing.tokenizer import Tokenizer


@pytest.mark.parametrize(
    ("shape", "size"),
    [
        ((150, 203), (112, 112)),
        ((480, 640), (1008, 1008)),
        ((1080, 1920), (1008, 1008)),
        ((3000, 2000), (1008, 1008)),
        ((50, 60), (1008, 1008)),
        ((7, 900), (100, 100)),
        ((333, 777), (100, 2000)),
    ],
)
def test_uint8_resize_is_bit_identical_to_torchvision(shape, size):
    image = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)
    expected = tvF.resize(
        torch.from_numpy(image).permute(2, 0, 1), list(size), interpolation=InterpolationMode.BILINEAR, antialias=True
    )
    assert np.array_equal(resize_rgb(image, size).astype(np.uint8), expected.permute(1, 2, 0).numpy())


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_preprocessing_matches(dtype):
    rng = np.random.default_rng(3)
    image = rng.random((90, 130, 4)) if dtype == np.float32 else rng.integers(0, np.iinfo(dtype).max, (90, 130, 4))
    image = image.astype(dtype)
    settings = ImageSettings(size=(112, 112))
    expected, sizes = preprocess_images(image, settings)
    got, size = preprocess_image(image, settings)
    assert size == tuple(sizes[0].tolist()) == (90, 130)
    # uint8 / uint16 are exact; float images are resized in float32 by both, in a different order
    tol = 1e-4 if dtype == np.float32 else 0.0
    assert np.abs(got - expected.numpy()).max() <= tol


def test_tokenizer_matches():
    prompts = ["a dog", "YELLOW   school bus", "Ünïcödé café", "x " * 40]
    ids, mask = Tokenizer(32)(prompts)
    got_ids, got_mask, truncated = encode_batch(prompts, 32)
    assert np.array_equal(got_ids, ids.numpy()) and np.array_equal(got_mask, mask.numpy()) and truncated == [3]


def test_boxes_match():
    boxes, labels = [[10.0, 20.0, 110.0, 90.0], [0.0, 0.0, 30.5, 40.0]], [1, 0]
    expected, expected_labels = prepare_boxes([boxes], [labels], torch.tensor([[100, 200]]))
    got, got_labels = normalize_boxes(boxes, labels, (100, 200))
    assert np.allclose(got, expected[0].numpy(), atol=1e-7) and np.array_equal(got_labels, expected_labels[0])
    with pytest.raises(ValueError, match="x2 > x1"):
        normalize_boxes([[5, 5, 1, 1]], None, (100, 200))


@pytest.mark.parametrize("size", [(150, 203), (20, 25), (288, 288), (1080, 1920)])
def test_mask_resize_matches_torch(size):
    logits = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(0)) * 4
    expected = torch_binarize(logits.sigmoid(), size, 0.5, torch.bool).numpy()
    got = binarize_masks(sigmoid(logits.numpy()), size, 0.5)
    assert got.shape == expected.shape and (got != expected).mean() < 1e-4
