"""Original EfficientSAM3 / SAM3 ``.pt`` files: 77-row position tables, the projection's orientation,
an unconvertible tracker reported, SAM 3.1 files recognised."""

from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch
import torch.nn.functional as F
from original_layout import to_original
from reference import hf_model, tiny_config_dict

import sam3lite
from sam3lite.checkpoints import read_contents
from sam3lite.processing.tokenizer import Tokenizer

POS = "text_encoder.embeddings.position_embedding.position_embedding"
ORIGINAL_POS = "detector.backbone.language_backbone.encoder.positional_embedding.pos_embed.pos_embed"
ORIGINAL_PROJECTION = "detector.backbone.language_backbone.encoder.projection_layer"


def _pt(tmp_path, state, name="model.pt"):
    path = tmp_path / name
    torch.save({"model": state}, path)
    return path


@pytest.fixture(scope="module")
def l_reference():
    """Tiny L: a 77-row MobileCLIP position table, as older ctx16 files store it."""
    ref = hf_model(tiny_config_dict("l"), seed=2)
    assert ref.state_dict()[POS].shape[2] == 77
    return ref


def test_77_row_table_is_sliced_to_16_as_the_original_does(l_reference, tmp_path):
    stored = l_reference.state_dict()[POS]
    path = _pt(tmp_path, to_original(l_reference.state_dict(), "l"))
    model = sam3lite.load(path)
    assert model.config.text_config.max_position_embeddings == 16
    assert torch.equal(model.state_dict()[POS], stored[:, :, :16])
    assert model.config.text_config.extra["position_table"] == {"stored_rows": 77, "method": "slice"}
    model.save_pretrained(tmp_path / "saved")  # the choice is recorded in the config we write
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert saved["text_config"]["position_table"] == {"stored_rows": 77, "method": "slice"}
    assert saved["text_config"]["max_position_embeddings"] == 16


def test_interpolated_table_on_request(l_reference, tmp_path):
    stored = l_reference.state_dict()[POS]
    path = _pt(tmp_path, to_original(l_reference.state_dict(), "l"))
    model = sam3lite.load(path, position_table="interpolate")
    expected = F.interpolate(stored, size=(16, stored.shape[3]), mode="bilinear", align_corners=False)
    assert torch.allclose(model.state_dict()[POS], expected)
    assert model.config.text_config.extra["position_table"]["method"] == "interpolate"
    assert sam3lite.load(path, context_length=20).config.text_config.max_position_embeddings == 20
    with pytest.raises(ValueError, match="position_table"):
        sam3lite.load(path, position_table="nearest")
    with pytest.raises(ValueError, match="longer than the stored"):
        sam3lite.load(path, context_length=100)


def test_sliced_77_row_file_equals_a_16_row_file(l_reference, tmp_path):
    """Where the first 16 rows are the same, a 77-row file and a 16-row file are the same model."""
    long = to_original(l_reference.state_dict(), "l")
    short = dict(long)
    short[ORIGINAL_POS] = long[ORIGINAL_POS][:, :, :16].clone()
    a = sam3lite.load(_pt(tmp_path, long, "long.pt"), text_mode="original")
    b = sam3lite.load(_pt(tmp_path, short, "short.pt"), text_mode="original")
    assert "position_table" not in b.config.text_config.extra
    ids, mask = Tokenizer(16, "original")(["yellow school bus", "ear"])
    with torch.no_grad():
        assert torch.equal(a.get_text_features(ids, mask).pooler_output, b.get_text_features(ids, mask).pooler_output)


def test_projection_routes_agree(tmp_path):
    """The same weights from the .pt and from a hub conversion (transformers' converter copies MobileCLIP's
    ``projection_layer`` P as stored) give the same tensors and the same sentence embedding; in
    ``original`` mode that embedding is EfficientSAM3's ``x @ P``."""
    config = copy.deepcopy(tiny_config_dict("s0"))
    config["text_config"]["projection_dim"] = config["text_config"]["hidden_size"]  # square, as released
    ref = hf_model(config, seed=4)
    original = to_original(ref.state_dict(), "s0")
    p_matrix = original[ORIGINAL_PROJECTION]  # [H, D], used as x @ P
    ref.config.to_json_file(tmp_path / "config.json")  # heads are not in any tensor shape
    from_pt = sam3lite.load(_pt(tmp_path, original))
    hub = {k: v.clone() for k, v in ref.state_dict().items()}
    hub["text_encoder.projection.weight"] = p_matrix.contiguous()  # what the hub converter writes
    hub_dir = tmp_path / "hub"
    from safetensors.torch import save_file

    hub_dir.mkdir()
    save_file(hub, str(hub_dir / "model.safetensors"))
    ref.config.to_json_file(hub_dir / "config.json")
    from_hub = sam3lite.load(hub_dir)
    assert torch.equal(from_pt.state_dict()["text_encoder.projection.weight"], p_matrix)
    ids, mask = Tokenizer(16, "original")(["ear", "yellow school bus"])
    with torch.no_grad():
        for original_mode in (False, True):
            a = from_pt.text_encoder(ids, mask, original=original_mode)
            b = from_hub.text_encoder(ids, mask, original=original_mode)
            assert torch.allclose(a.pooler_output, b.pooler_output, atol=1e-6)  # same tensors, maybe other strides
        eot = a.last_hidden_state[torch.arange(2), ids.argmax(-1)]
        assert torch.allclose(a.pooler_output, eot @ p_matrix, atol=1e-6)


def test_an_incomplete_original_tracker_is_reported_not_dropped(tmp_path):
    """A tracker that cannot be converted (here two stray tensors) stays visible: listed as not loaded,
    its reason kept; the detector still loads with tracker=False. Whole trackers: test_convert_tracker.py."""
    ref = hf_model(tiny_config_dict("s0"), seed=1)
    original = to_original(ref.state_dict(), "s0")
    original["tracker.sam_mask_decoder.iou_token.weight"] = torch.randn(1, 32)
    original["detector.backbone.vision_backbone.sam2_convs.0.conv_1x1.weight"] = torch.randn(32, 16, 1, 1)
    contents = read_contents(_pt(tmp_path, original))
    assert contents.has_tracker and not contents.tracker
    assert contents.unused["tracker"][0] == 2 and "not converted" in contents.unused["tracker"][1]
    assert "missing" in contents.tracker_error
    with pytest.raises(sam3lite.CheckpointError, match="tracker=False"):
        sam3lite.load(tmp_path / "model.pt")
    with pytest.warns(UserWarning, match="tracker: 2 tensors"):
        assert not sam3lite.load(tmp_path / "model.pt", tracker=False).has_tracker


def test_sam31_file_loads_its_detector_and_says_what_is_not_loaded(tmp_path, capsys):
    ref = hf_model(tiny_config_dict("s0"), seed=1)
    original = to_original(ref.state_dict(), "s0")
    neck = "detector.backbone.vision_backbone.{}.0.conv_1x1.weight"
    original[neck.format("interactive_convs")] = torch.randn(32, 64, 1, 1)
    original[neck.format("propagation_convs")] = torch.randn(32, 64, 1, 1)
    original["tracker.model.transformer.layers.0.weight"] = torch.randn(4)
    path = _pt(tmp_path, original)
    ref.config.to_json_file(tmp_path / "config.json")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = sam3lite.load(path)
    message = " ".join(str(w.message) for w in caught)
    assert "SAM 3.1" in message and "multiplex tracker" in message
    assert torch.equal(model.state_dict()["text_projection.weight"], ref.state_dict()["text_projection.weight"])
    from sam3lite.cli import main

    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "not loaded  sam3.1 necks: 2 tensors" in out and "not loaded  sam3.1 tracker: 1 tensors" in out
