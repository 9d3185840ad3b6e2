"""Opt-in int8 image encoder: close to float32, inference only, clear errors where it cannot run."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from reference import rel_err, save_reference, tiny_config_dict

import sam3lite
from sam3lite.checkpoints import CheckpointError
from sam3lite.modeling.quantize import Int8Linear, is_quantized

OUTPUTS = ("pred_logits", "pred_boxes", "presence_logits", "pred_masks", "semantic_seg")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny")
    save_reference(tiny_config_dict("s0"), directory, seed=3)
    return sam3lite.load(directory)


def test_int8_linear_per_token_scaling():
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)  # nn.Linear's own init
    linear = torch.nn.Linear(64, 48)
    x = torch.randn(5, 7, 64, generator=gen)
    x[0, 0] *= 100  # one loud token must not coarsen the others
    with torch.no_grad():
        expected, got = linear(x), Int8Linear.from_linear(linear)(x)
    assert got.shape == (5, 7, 48) and got.dtype == torch.float32
    quiet = (got - expected)[1:].abs().max() / expected[1:].abs().max()
    # 7-bit inputs: an error of about 1% of the output scale, per token.
    assert quiet < 3e-2 and rel_err(got, expected) < 3e-2
    # More rows than one kernel call takes: every chunk, the short last one too, is as accurate.
    many = torch.randn(Int8Linear.ROWS_PER_CALL * 2 + 3, 64, generator=gen)
    with torch.no_grad():
        expected, got = linear(many), Int8Linear.from_linear(linear)(many)
    for start in range(0, many.shape[0], Int8Linear.ROWS_PER_CALL):
        chunk = slice(start, start + Int8Linear.ROWS_PER_CALL)
        assert rel_err(got[chunk], expected[chunk]) < 3e-2


def test_quantized_model_close_to_float32(model):
    quantized = copy.deepcopy(model).quantize_image_encoder()
    assert is_quantized(quantized) and not is_quantized(model)
    linears = [m for m in quantized.vision_encoder.backbone.modules() if isinstance(m, torch.nn.Linear)]
    assert linears == []  # every ViT product went int8; the heads keep their float layers
    gen = torch.Generator().manual_seed(1)
    inputs = dict(
        pixel_values=torch.randn(2, 3, 112, 112, generator=gen),
        input_ids=torch.randint(1, 1000, (2, 6), generator=gen),
        attention_mask=torch.ones(2, 6, dtype=torch.long),
    )
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecation noise reaches the user
        expected, got = model(**inputs), quantized(**inputs)
    for name in OUTPUTS:
        err = rel_err(getattr(got, name), getattr(expected, name))
        assert 0 < err < 1e-1, f"{name}: {err:.2e}"  # int8 is not exact, and not far off
    assert rel_err(got.pred_boxes, expected.pred_boxes) < 2e-2


def test_quantized_model_cannot_be_saved(model, tmp_path):
    quantized = copy.deepcopy(model).quantize_image_encoder()
    with pytest.raises(CheckpointError, match="int8-quantized; save the model before"):
        quantized.save_pretrained(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_only_float32_cpu_models(model):
    with pytest.raises(ValueError, match="needs a float32 model on the CPU, got torch.bfloat16"):
        copy.deepcopy(model).to(torch.bfloat16).quantize_image_encoder()
