"""Post-processing against transformers' Sam3ImageProcessor on the same outputs; RLE round trips."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from sam3lite.processing import postprocess as pp
from sam3lite.processing.rle import masks_to_rle, rle_to_masks

SIZES = [(480, 640), (37, 2000)]


@pytest.fixture(scope="module")
def reference():
    from transformers import Sam3ImageProcessor

    return Sam3ImageProcessor()


def fake_outputs(batch: int = 2, queries: int = 60, seed: int = 0, presence: bool = True, mask_side: int = 288):
    """Model-shaped outputs; logits spread so that thresholds keep some queries and drop others."""
    g = torch.Generator().manual_seed(seed)
    return SimpleNamespace(
        pred_logits=3 * torch.randn(batch, queries, generator=g),
        pred_boxes=torch.rand(batch, queries, 4, generator=g).sort(-1).values[..., [0, 1, 2, 3]],
        presence_logits=torch.randn(batch, 1, generator=g) if presence else None,
        pred_masks=4 * torch.randn(batch, queries, mask_side, mask_side, generator=g),
        semantic_seg=3 * torch.randn(batch, 1, mask_side, mask_side, generator=g),
    )


def assert_results_equal(ours, ref):
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].dtype == b[key].dtype, key
            if key == "masks" and len(b[key]) == 0:  # deliberate: ours is [0, H, W], the reference's [0, h, w]
                assert len(a[key]) == 0
                continue
            assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("target_sizes", [None, SIZES], ids=["native", "resized"])
@pytest.mark.parametrize("presence", [True, False])
@pytest.mark.parametrize("threshold,mask_threshold", [(0.3, 0.5), (0.1, 0.7)])
def test_instance_segmentation_matches_reference(reference, target_sizes, presence, threshold, mask_threshold):
    outputs = fake_outputs(presence=presence)
    ours = pp.post_process_instance_segmentation(outputs, threshold, mask_threshold, target_sizes)
    ref = reference.post_process_instance_segmentation(outputs, threshold, mask_threshold, target_sizes)
    assert_results_equal(ours, ref)
    assert all(len(r["scores"]) > 0 for r in ours)  # the comparison covered kept masks


@pytest.mark.parametrize("target_sizes", [None, SIZES, torch.tensor(SIZES)], ids=["native", "list", "tensor"])
def test_object_detection_matches_reference(reference, target_sizes):
    outputs = fake_outputs()
    for threshold in (0.0, 0.3, 0.9):
        ours = pp.post_process_object_detection(outputs, threshold, target_sizes)
        assert_results_equal(ours, reference.post_process_object_detection(outputs, threshold, target_sizes))


@pytest.mark.parametrize("target_sizes", [None, SIZES], ids=["native", "resized"])
@pytest.mark.parametrize("with_scores", [False, True])
def test_semantic_segmentation_matches_reference(reference, target_sizes, with_scores):
    outputs = fake_outputs()
    ours = pp.post_process_semantic_segmentation(outputs, target_sizes, 0.5, with_scores)
    ref = reference.post_process_semantic_segmentation(outputs, target_sizes, 0.5, with_scores)
    for a, b in zip(ours, ref, strict=True):
        if with_scores:
            assert torch.equal(a.segmentation, b.segmentation)
            assert torch.equal(a["segmentation_scores"], b.segmentation_scores)
        else:
            assert a.dtype == b.dtype and torch.equal(a, b)


def test_threshold_is_strict():
    outputs = fake_outputs(batch=1, queries=4, presence=False)
    outputs.pred_logits = torch.tensor([[0.0, 0.0, 1.0, -1.0]])  # sigmoid(0) == 0.5 exactly
    result = pp.post_process_object_detection(outputs, threshold=0.5)[0]
    assert result["scores"].tolist() == [torch.sigmoid(torch.tensor(1.0)).item()]


def test_only_kept_masks_are_resized(monkeypatch):
    outputs = fake_outputs(batch=1, queries=200)
    outputs.presence_logits = torch.full((1, 1), 3.0)
    kept = int((outputs.pred_logits.sigmoid() * outputs.presence_logits.sigmoid() > 0.3).sum())
    resized_channels = []
    interpolate = torch.nn.functional.interpolate

    def spy(x, *args, **kwargs):
        resized_channels.append(x.shape[1])
        return interpolate(x, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "interpolate", spy)
    result = pp.post_process_instance_segmentation(outputs, 0.3, 0.5, [(600, 800)])[0]
    assert 0 < kept < 200
    assert sum(resized_channels) == kept == len(result["masks"])


def test_empty_result_has_target_size():
    outputs = fake_outputs(batch=2)
    results = pp.post_process_instance_segmentation(outputs, threshold=1.0, target_sizes=SIZES)
    for result, size in zip(results, SIZES, strict=True):
        assert result["scores"].shape == (0,) and result["boxes"].shape == (0, 4)
        assert result["masks"].shape == (0, *size)  # the reference leaves these at the model's mask size


def test_single_target_size_is_shared_and_mismatch_raises(reference):
    outputs = fake_outputs(batch=3)
    shared = pp.post_process_instance_segmentation(outputs, 0.3, 0.5, [(50, 60)])
    assert all(r["masks"].shape[1:] == (50, 60) for r in shared)
    ref = reference.post_process_instance_segmentation(outputs, 0.3, 0.5, [(50, 60)] * 3)
    assert_results_equal(shared, ref)
    with pytest.raises(ValueError, match="target sizes"):
        pp.post_process_instance_segmentation(outputs, target_sizes=[(50, 60), (70, 80)])


def test_bool_masks_and_mapping_outputs():
    outputs = fake_outputs(batch=1)
    as_dict = vars(outputs)
    a = pp.post_process_instance_segmentation(outputs, target_sizes=[(100, 120)])[0]
    b = pp.post_process_instance_segmentation(as_dict, target_sizes=[(100, 120)], mask_dtype=torch.bool)[0]
    assert b["masks"].dtype == torch.bool and torch.equal(a["masks"].bool(), b["masks"])


def test_missing_output_field_raises():
    with pytest.raises(ValueError, match="pred_masks"):
        pp.post_process_instance_segmentation(
            SimpleNamespace(pred_logits=torch.zeros(1, 3), pred_boxes=torch.zeros(1, 3, 4))
        )
    with pytest.raises(ValueError, match="semantic_seg"):
        pp.post_process_semantic_segmentation({"pred_logits": torch.zeros(1, 3)})


# ---------------------------------------------------------------------------------------------
# RLE
# ---------------------------------------------------------------------------------------------


def random_masks(n: int = 5, h: int = 37, w: int = 53, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    masks = torch.rand(n, h, w, generator=g) > 0.6
    masks[0] = False  # empty
    masks[1] = True  # full
    return masks


def test_rle_round_trip_and_pycocotools_agreement():
    masks = random_masks()
    rles = masks_to_rle(masks)
    assert [r["size"] for r in rles] == [[37, 53]] * 5 and all(isinstance(r["counts"], str) for r in rles)
    assert torch.equal(rle_to_masks(rles), masks)
    # Same strings as pycocotools on its own layout, and areas agree.
    direct = mask_utils.encode(np.asfortranarray(masks.numpy().transpose(1, 2, 0).astype(np.uint8)))
    assert [r["counts"].encode() for r in rles] == [d["counts"] for d in direct]
    assert mask_utils.area(direct).tolist() == masks.sum((1, 2)).tolist()


def test_rle_accepts_single_masks_bytes_numpy_and_uncompressed():
    mask = random_masks(3, 20, 30, seed=3)[2]
    (rle,) = masks_to_rle(mask.numpy().astype(np.int64))
    assert torch.equal(rle_to_masks(rle)[0], mask)
    assert torch.equal(rle_to_masks({"size": rle["size"], "counts": rle["counts"].encode()})[0], mask)
    # Uncompressed column-major runs, starting with the background run.
    flat = mask.T.flatten().int().tolist()
    runs, current, length = [], 0, 0
    for v in flat:
        if v != current:
            runs.append(length)
            current, length = v, 0
        length += 1
    runs.append(length)
    assert torch.equal(rle_to_masks({"size": [20, 30], "counts": runs})[0], mask)


def test_rle_reads_reference_uncompressed_rle():
    from transformers.models.sam3.image_processing_sam3 import _mask_to_rle

    masks = random_masks()
    assert torch.equal(rle_to_masks(_mask_to_rle(masks)), masks)


def test_rle_bad_inputs():
    with pytest.raises(ValueError, match="N, H, W"):
        masks_to_rle(torch.zeros(2, 2, 3, 4))
    with pytest.raises(ValueError, match="same size"):
        rle_to_masks(masks_to_rle(torch.zeros(1, 4, 4)) + masks_to_rle(torch.zeros(1, 5, 4)))
    with pytest.raises(ValueError, match="sum to"):
        rle_to_masks({"size": [4, 4], "counts": [3, 2]})
    with pytest.raises(ValueError, match="no RLEs"):
        rle_to_masks([])
