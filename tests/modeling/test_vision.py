"""Parity of the ViT + FPN image encoder with the transformers reference (``vision_encoder``)."""

from __future__ import annotations

import copy

import pytest
import torch
from reference import hf_model, randomize_, rel_err, tiny_config_dict

from sam3lite.modeling.config import VisionConfig
from sam3lite.modeling.vision import VisionEncoder, VisionFeatures, rope_tables

TOL = 1e-4


def _ours(vision_dict: dict, state_dict: dict[str, torch.Tensor]) -> VisionEncoder:
    model = VisionEncoder(VisionConfig.from_dict(vision_dict)).eval()
    model.load_state_dict(state_dict, strict=True)
    return model


def _pixels(image_size: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, image_size, image_size, generator=torch.Generator().manual_seed(seed))


def _assert_parity(ours: VisionFeatures, ref, num_levels: int) -> None:
    ref_levels = ref.fpn_hidden_states[:-1]  # the detector drops the coarsest level
    assert len(ours.fpn_hidden_states) == len(ours.fpn_position_encoding) == len(ref_levels) == num_levels
    for i, (a, b) in enumerate(zip(ours.fpn_hidden_states, ref_levels, strict=True)):
        assert a.shape == b.shape, f"level {i}"
        assert rel_err(a, b) < TOL, f"level {i}: {rel_err(a, b)}"
    for i, (a, b) in enumerate(zip(ours.fpn_position_encoding, ref.fpn_position_encoding[:-1], strict=True)):
        assert a.shape == b.shape, f"position level {i}"
        assert rel_err(a, b) < TOL, f"position level {i}: {rel_err(a, b)}"
    assert ours.last_hidden_state.shape == ref.last_hidden_state.shape
    assert rel_err(ours.last_hidden_state, ref.last_hidden_state) < TOL


@pytest.fixture(scope="module")
def tiny():
    """(config dict, reference vision encoder, its state dict as found in the full detector)."""
    config = tiny_config_dict()
    full = hf_model(config)
    prefix = "vision_encoder."
    state = {k[len(prefix) :]: v for k, v in full.state_dict().items() if k.startswith(prefix)}
    return config["vision_config"], full.vision_encoder, state


def test_state_dict_keys_match_reference(tiny):
    vision, _, state = tiny
    ours = VisionEncoder(VisionConfig.from_dict(vision))
    ours_state = ours.state_dict()
    assert list(ours_state) == list(state)
    assert all(ours_state[k].shape == v.shape for k, v in state.items())


def test_parity_tiny(tiny):
    vision, ref, state = tiny
    ours = _ours(vision, state)
    pixels = _pixels(vision["backbone_config"]["image_size"])
    with torch.no_grad():
        out, expected = ours(pixels), ref(pixels)
    _assert_parity(out, expected, num_levels=3)
    grid = 112 // 14
    assert [tuple(f.shape) for f in out.fpn_hidden_states] == [
        (2, 32, 4 * grid, 4 * grid),
        (2, 32, 2 * grid, 2 * grid),
        (2, 32, grid, grid),
    ]
    assert out.last_hidden_state.shape == (2, grid * grid, 64)


def test_parity_other_layout():
    """Other window/global layout, head count, a pretraining grid that does not divide the patch grid
    (tiling then cropping), and fewer FPN levels."""
    from transformers.models.sam3.configuration_sam3 import Sam3VisionConfig
    from transformers.models.sam3.modeling_sam3 import Sam3VisionModel

    vision = copy.deepcopy(tiny_config_dict()["vision_config"])
    vision["backbone_config"].update(
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=3,
        window_size=2,
        global_attn_indexes=[0],
        pretrain_image_size=42,
    )
    vision.update(fpn_hidden_size=16, scale_factors=[2.0, 1.0, 0.5])
    torch.manual_seed(1)
    ref = randomize_(Sam3VisionModel(Sam3VisionConfig(**{k: v for k, v in vision.items() if k != "model_type"})), 1)
    ref.eval()
    ours = _ours(vision, ref.state_dict())
    pixels = _pixels(112, batch=3, seed=1)
    with torch.no_grad():
        out, expected = ours(pixels), ref(pixels)
    _assert_parity(out, expected, num_levels=2)


def test_bfloat16_close_to_float32(tiny):
    vision, _, state = tiny
    pixels = _pixels(112)
    model = _ours(vision, state)
    with torch.no_grad():
        fp32 = model(pixels)
        model.to(torch.bfloat16)
        bf16 = model(pixels)  # float32 pixels are cast by the patch embedding
    for a, b in zip(bf16.fpn_hidden_states, fp32.fpn_hidden_states, strict=True):
        assert a.dtype == torch.bfloat16 and torch.isfinite(a).all()
        assert rel_err(a, b) < 5e-2
    for a, b in zip(bf16.fpn_position_encoding, fp32.fpn_position_encoding, strict=True):
        assert a.dtype == torch.bfloat16
        assert rel_err(a, b) < 1e-2
    assert rel_err(bf16.last_hidden_state, fp32.last_hidden_state) < 5e-2


def test_tables_are_cached_and_float32(tiny):
    vision, _, state = tiny
    cos, sin = rope_tables(4, 1.0, 16)
    assert cos.dtype == sin.dtype == torch.float32 and cos.shape == (16, 8)
    assert rope_tables(4, 1.0, 16)[0] is cos
    model = _ours(vision, state)
    assert not list(model.buffers())  # only derived tables, and those live in caches
    with torch.no_grad():
        first, second = model(_pixels(112)), model(_pixels(112, seed=1))
    for a, b in zip(first.fpn_position_encoding, second.fpn_position_encoding, strict=True):
        assert a.data_ptr() == b.data_ptr()


@pytest.mark.parametrize(
    "pixels",
    [
        torch.zeros(3, 112, 112),  # no batch dim
        torch.zeros(1, 1, 112, 112),  # wrong channel count
        torch.zeros(1, 3, 224, 224),  # wrong size
        torch.zeros(1, 3, 112, 98),  # not square
        torch.zeros(1, 3, 112, 112, dtype=torch.uint8),  # not float
    ],
)
def test_bad_pixel_values(tiny, pixels):
    vision, _, state = tiny
    model = _ours(vision, state)
    with pytest.raises(ValueError, match=r"pixel_values.*\[batch, 3, 112, 112\]"):
        model(pixels)


def test_built_under_inference_mode(tiny):
    """A model built under inference_mode (parameters without version counters) runs and matches."""
    config, ref, state = tiny
    pixels = _pixels(config["backbone_config"]["image_size"], batch=1)
    with torch.inference_mode():
        ours = _ours(config, state)
        _assert_parity(ours(pixels), ref(pixels), num_levels=3)


def test_apply_rope_complex_form_equals_the_pairwise_rotation(monkeypatch):
    """The complex multiply (CPU/CUDA) gives the bits of the real-valued rotation (kept for tracing/export),
    for float32 and bfloat16, contiguous or strided inputs."""
    from sam3lite.modeling import vision

    cos, sin = rope_tables(6, 1.0, 16)
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        x = (10 * torch.randn(2, 3, 36, 16, generator=g)).to(dtype)
        for t in (x, x.transpose(0, 1)):
            fast = vision.apply_rope(t, cos, sin)
            with monkeypatch.context() as m:
                m.setattr(vision, "_tracing", lambda: True)
                real = vision.apply_rope(t, cos, sin)
            assert fast.dtype == dtype and torch.equal(fast, real)
    x = torch.randn(2, 36, 16, generator=g)
    x0, x1 = x[..., 0], x[..., 1]  # the first pair turns by the angle of cos/sin[:, 0]
    assert torch.equal(
        vision.apply_rope(x, cos, sin)[..., :2],
        torch.stack((x0 * cos[:, 0] - x1 * sin[:, 0], x1 * cos[:, 0] + x0 * sin[:, 0]), -1),
    )
