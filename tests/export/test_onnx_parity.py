"""The exported graphs compute what the PyTorch model computes (ONNX Runtime CPU, float32, 1e-4 relative)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from reference import rel_err, text_inputs

from sam3lite.export.graphs import HEADS_INPUTS, HEADS_OUTPUTS

TOL = 1e-4
BOXES = [[0.5, 0.5, 0.3, 0.3], [0.3, 0.6, 0.2, 0.4], [0.7, 0.2, 0.1, 0.2]]  # normalized cxcywh


@pytest.fixture(scope="module")
def sessions(tiny_export):
    _, out, _ = tiny_export
    return {
        name: ort.InferenceSession(str(out / f"{name}.onnx")) for name in ("image_encoder", "text_encoder", "heads")
    }


def _close(got: np.ndarray, expected: torch.Tensor, what: str) -> None:
    assert tuple(got.shape) == tuple(expected.shape), what
    assert rel_err(torch.from_numpy(np.asarray(got)), expected) < TOL, what


@pytest.mark.parametrize("batch", [1, 3])
def test_image_encoder_matches(tiny_export, sessions, batch):
    _, _, model = tiny_export
    pixels = torch.randn(batch, 3, 112, 112, generator=torch.Generator().manual_seed(batch))
    got = sessions["image_encoder"].run(None, {"pixel_values": pixels.numpy()})
    with torch.inference_mode():
        expected = model.get_vision_features(pixels).fpn_hidden_states
    for i, (a, b) in enumerate(zip(got, expected, strict=True)):
        _close(a, b, f"fpn_{i}")


@pytest.mark.parametrize("prompts", [1, 8])
def test_text_encoder_matches(tiny_export, sessions, prompts):
    _, _, model = tiny_export
    ids, mask = text_inputs(prompts, 32, lengths=[3 + 2 * i for i in range(prompts)])
    tokens, token_mask = sessions["text_encoder"].run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    with torch.inference_mode():
        expected = model.get_text_features(ids, mask).pooler_output
    _close(tokens, expected, "text_tokens")
    assert np.array_equal(token_mask, mask.numpy())


@pytest.mark.parametrize("prompts", [1, 8])
@pytest.mark.parametrize("boxes", ["none", "positive", "mixed"])
def test_heads_match_the_whole_model(tiny_export, sessions, prompts, boxes):
    """Image encoder -> text encoder -> heads in ONNX Runtime against one PyTorch forward."""
    _, _, model = tiny_export
    pixels = torch.randn(1, 3, 112, 112, generator=torch.Generator().manual_seed(7))
    ids, mask = text_inputs(prompts, 32, seed=prompts, lengths=[4 + i for i in range(prompts)])
    levels = sessions["image_encoder"].run(None, {"pixel_values": pixels.numpy()})
    tokens, token_mask = sessions["text_encoder"].run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    kwargs = {}
    if boxes == "none":  # one padding row: no geometry prompt at all
        box_array, labels = torch.zeros(prompts, 1, 4), torch.full((prompts, 1), -10)
    else:
        count = 1 if boxes == "positive" else 3
        box_array = torch.tensor([BOXES[:count]]).expand(prompts, -1, -1).contiguous()
        labels = torch.tensor([[1, 0, 1][:count]]).expand(prompts, -1).contiguous()
        kwargs = {"input_boxes": box_array, "input_boxes_labels": labels}
    feed = dict(zip(HEADS_INPUTS, [*levels, tokens, token_mask, box_array.numpy(), labels.numpy()], strict=True))
    got = sessions["heads"].run(None, feed)
    with torch.inference_mode():
        expected = model(pixel_values=pixels, input_ids=ids, attention_mask=mask, **kwargs)
    for name, value in zip(HEADS_OUTPUTS, got, strict=True):
        _close(value, getattr(expected, name), name)


def test_padding_boxes_are_ignored(tiny_export, sessions):
    """A real box followed by padding rows gives the outputs of the real box alone."""
    _, _, model = tiny_export
    levels = sessions["image_encoder"].run(None, {"pixel_values": np.zeros((1, 3, 112, 112), np.float32)})
    ids, mask = text_inputs(1, 32)
    tokens, token_mask = sessions["text_encoder"].run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    one = np.array([[BOXES[0]]], np.float32)
    padded = np.array([[BOXES[0], [0, 0, 0, 0], [0, 0, 0, 0]]], np.float32)
    outs = [
        sessions["heads"].run(None, dict(zip(HEADS_INPUTS, [*levels, tokens, token_mask, b, lab], strict=True)))
        for b, lab in ((one, np.array([[1]])), (padded, np.array([[1, -10, -10]])))
    ]
    for a, b in zip(*outs, strict=True):
        assert rel_err(torch.from_numpy(a), torch.from_numpy(b)) < TOL


def test_graphs_are_standard_onnx(tiny_export):
    """Checker and shape inference pass; every op is from the default ONNX domain; boxes use RoiAlign."""
    _, out, _ = tiny_export
    for name in ("image_encoder", "text_encoder", "heads"):
        path = out / f"{name}.onnx"
        onnx.checker.check_model(str(path), full_check=True)
        graph = onnx.load(str(path), load_external_data=False).graph
        domains = {node.domain for node in graph.node}
        assert domains <= {"", "ai.onnx"}, (name, domains)
        if name == "heads":
            assert "RoiAlign" in {node.op_type for node in graph.node}


def test_manifest_describes_the_graphs(tiny_export):
    _, out, model = tiny_export
    manifest = json.loads((out / "sam3lite_onnx.json").read_text())
    assert manifest["format"] == "sam3lite-onnx" and manifest["dtype"] == "float32" and manifest["opset"] == 18
    image = manifest["graphs"]["image_encoder"]
    assert image["inputs"] == [{"name": "pixel_values", "shape": ["batch", 3, 112, 112], "dtype": "float32"}]
    assert [o["shape"] for o in image["outputs"]] == [["batch", 32, 32, 32], ["batch", 32, 16, 16], ["batch", 32, 8, 8]]
    heads = {t["name"]: t for t in manifest["graphs"]["heads"]["inputs"]}
    assert heads["text_tokens"]["shape"] == ["prompts", 32, 32]
    assert heads["input_boxes"]["shape"] == ["prompts", "boxes", 4]
    assert heads["fpn_0"]["shape"] == [1, 32, 32, 32]  # one image, broadcast over the prompts
    masks = {t["name"]: t for t in manifest["graphs"]["heads"]["outputs"]}["pred_masks"]
    assert masks["shape"] == ["prompts", 10, 32, 32]
    text = manifest["text"]
    assert (text["context_length"], text["pad_id"], text["text_mode"]) == (32, 49407, "transformers")
    assert manifest["image"]["size"] == [112, 112] and manifest["image"]["image_mean"] == [0.5, 0.5, 0.5]
    assert manifest["config"]["model_type"] == model.config.to_dict()["model_type"]
    assert (out / "tokenizer.json").is_file() and (out / "heads.onnx.data").is_file()
