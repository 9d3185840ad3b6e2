"""Mask NMS, hole filling and speck removal (``sam3lite.processing.mask_cleanup``) on hand-made masks.

SAM3's rules: a background component of at most ``max_area`` pixels becomes foreground (logit 0.1); then a
foreground component of at most min(``max_area``, half the mask's foreground) becomes background (logit
-0.1); components are 8-connected. NMS is greedy by score on mask IoU.
"""

from __future__ import annotations

import torch

from sam3lite.processing.mask_cleanup import (
    HOLE_LOGIT,
    SPECK_LOGIT,
    _areas_scipy,
    _areas_torch,
    clean_masks,
    component_areas,
    fill_holes,
    mask_iou,
    mask_nms,
    remove_specks,
)


def logits_of(mask: torch.Tensor) -> torch.Tensor:
    """bool [H, W] -> logits [1, H, W]: +5 inside, -5 outside."""
    return torch.where(mask, 5.0, -5.0)[None]


def square(size: int = 20) -> torch.Tensor:
    return torch.zeros(size, size, dtype=torch.bool)


def test_small_hole_filled_large_hole_kept():
    mask = square()
    mask[2:18, 2:18] = True
    mask[5:7, 5:7] = False  # a 4-pixel hole
    mask[10:15, 10:15] = False  # a 25-pixel hole
    out = fill_holes(logits_of(mask), max_area=10)[0]
    assert torch.all(out[5:7, 5:7] == HOLE_LOGIT)
    assert torch.all(out[10:15, 10:15] == -5.0)
    assert torch.all(out[~mask] != 5.0) and torch.all(out[mask] == 5.0)
    # The outer background (far larger than max_area) stays background.
    assert out[0, 0] == -5.0


def test_specks_removed_big_component_kept():
    mask = square()
    mask[2:12, 2:12] = True  # 100 pixels
    mask[15, 15] = True  # a 1-pixel speck
    mask[17:19, 2:4] = True  # a 4-pixel speck
    out = remove_specks(logits_of(mask), max_area=5)[0]
    assert out[15, 15] == SPECK_LOGIT and torch.all(out[17:19, 2:4] == SPECK_LOGIT)
    assert torch.all(out[2:12, 2:12] == 5.0)


def test_tiny_object_alone_is_not_erased():
    """A component is a speck only below half the mask's foreground: a lone small object stays."""
    mask = square()
    mask[3:5, 3:5] = True  # the whole object: 4 pixels, under max_area
    out = remove_specks(logits_of(mask), max_area=16)[0]
    assert torch.all(out[3:5, 3:5] == 5.0)
    # Two equal parts: each is exactly half the foreground, so both go (the limit is inclusive).
    mask[10:12, 10:12] = True
    out = remove_specks(logits_of(mask), max_area=16)[0]
    assert torch.all(out[mask] == SPECK_LOGIT)


def test_diagonal_pixels_are_one_component():
    mask = square(6)
    mask[1, 1] = mask[2, 2] = mask[3, 3] = True  # 8-connected: one component of 3
    mask[1, 4] = True  # alone
    areas = component_areas(mask[None])[0]
    assert areas[1, 1] == areas[2, 2] == areas[3, 3] == 3 and areas[1, 4] == 1 and areas[0, 0] == 0


def test_clean_fills_then_removes_per_mask():
    """Batch of two masks, cleaned independently; a hole is filled before specks are counted."""
    a = square()
    a[2:18, 2:18] = True
    a[9:11, 9:11] = False  # hole of 4
    b = square()
    b[0:10, 0:10] = True
    b[18, 18] = True  # speck
    out = clean_masks(torch.cat([logits_of(a), logits_of(b)]), max_area=6)
    assert torch.all(out[0, 9:11, 9:11] == HOLE_LOGIT)
    assert out[1, 18, 18] == SPECK_LOGIT and torch.all(out[1, 0:10, 0:10] == 5.0)
    assert torch.equal(clean_masks(out, max_area=0), out)  # 0 = off


def test_label_propagation_matches_scipy():
    """The device path (label propagation) gives scipy's component areas, spirals and random blobs included."""
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(6, 33, 47, generator=g) > 0.55
    spiral = torch.zeros(33, 47, dtype=torch.bool)
    for k in range(0, 15, 4):  # nested rings joined at one corner: long paths for propagation
        spiral[k, k : 47 - k] = spiral[32 - k, k : 47 - k] = True
        spiral[k : 33 - k, k] = spiral[k : 33 - k, 46 - k] = True
    masks = torch.cat([masks, spiral[None]])
    assert torch.equal(_areas_torch(masks), _areas_scipy(masks))


def test_mask_iou_and_nms():
    base = square(10)
    a, b, c = base.clone(), base.clone(), base.clone()
    a[0:5, 0:5] = True  # 25
    b[0:5, 0:4] = True  # 20, inside a: IoU 0.8
    c[6:10, 6:10] = True  # apart
    masks = torch.stack([a, b, c])
    iou = mask_iou(masks, masks)
    assert abs(iou[0, 1].item() - 0.8) < 1e-7 and iou[0, 2] == 0 and iou[2, 2] == 1
    logits = torch.where(masks, 1.0, -1.0)
    # b scores higher: a goes; c overlaps nothing and stays.
    assert mask_nms(torch.tensor([0.5, 0.9, 0.1]), logits, 0.5).tolist() == [False, True, True]
    assert mask_nms(torch.tensor([0.9, 0.5, 0.1]), logits, 0.5).tolist() == [True, False, True]
    # IoU 0.8 is not above a 0.8 threshold: both stay.
    assert mask_nms(torch.tensor([0.9, 0.5, 0.1]), logits, 0.8).tolist() == [True, True, True]
    # Equal scores: the earlier detection wins.
    assert mask_nms(torch.tensor([0.7, 0.7, 0.1]), logits, 0.5).tolist() == [True, False, True]
