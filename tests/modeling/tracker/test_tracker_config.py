"""TrackerConfig: exact round trip of a ``sam3_video`` file's ``tracker_config``, transformers' defaults,
clear errors; Sam3Tracker's state dict equals the checkpoint's ``tracker_model.*`` block."""

from __future__ import annotations

import copy

import pytest
import torch

from sam3lite.checkpoints import CheckpointError, load_state_dict_strict
from sam3lite.modeling.tracker import Sam3Tracker, TrackerConfig


def test_round_trip_is_exact(tracker_checkpoint):
    data = tracker_checkpoint.config["tracker_config"]
    config = TrackerConfig.from_dict(data)
    assert config.to_dict() == data
    assert config.hidden_size == 128 and config.memory_dim == 64 and config.grid_size == 16
    assert config.mask_input_size == 64 and config.mask_downsampler_num_layers == 4
    # The whole video config picks its tracker block.
    assert TrackerConfig.from_dict(tracker_checkpoint.config) == config


def test_defaults_are_transformers_full_size_defaults():
    from transformers import Sam3TrackerVideoConfig

    ref = Sam3TrackerVideoConfig().to_dict()
    ours = TrackerConfig().to_dict()
    _assert_within(ours, ref, "tracker_config")
    missing = {k for k in ref if k not in ours and not k.startswith("_")} - {
        "transformers_version",
        "architectures",
        "dtype",
        "output_hidden_states",
        "return_dict",
        "id2label",
        "label2id",
        "problem_type",
        "chunk_size_feed_forward",
        "is_encoder_decoder",
        "output_attentions",
    }
    assert not missing, f"transformers fields not modelled: {missing}"


def _assert_within(ours: dict, ref: dict, path: str) -> None:
    """Every field we model has transformers' value (recursing into sub-configs)."""
    for key, value in ours.items():
        assert key in ref, f"{path}.{key}"
        if isinstance(value, dict) and key != "rope_parameters":
            _assert_within(value, ref[key], f"{path}.{key}")
        else:
            assert ref[key] == value, f"{path}.{key}: {value!r} vs transformers {ref[key]!r}"


def test_full_size_state_dict_matches_transformers():
    """Default (full-size) tracker: same parameter names and shapes as transformers' tracker (no ViT)."""
    from transformers import Sam3TrackerVideoConfig, Sam3TrackerVideoModel

    ref = Sam3TrackerVideoModel(Sam3TrackerVideoConfig(), remove_vision_encoder=True).state_dict()
    ours = Sam3Tracker(TrackerConfig()).state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in ref.items()}


def test_strict_load_of_hub_layout(tracker_checkpoint):
    state = tracker_checkpoint.block("tracker_model.")
    tracker = Sam3Tracker(TrackerConfig.from_dict(tracker_checkpoint.config["tracker_config"]))
    assert set(tracker.state_dict()) == set(state)
    load_state_dict_strict(tracker, state)
    for key, value in tracker.state_dict().items():
        assert torch.equal(value, state[key]), key
    missing = dict(state)
    missing.pop("no_object_pointer")
    with pytest.raises(CheckpointError, match="no_object_pointer"):
        load_state_dict_strict(Sam3Tracker(TrackerConfig.from_dict(tracker_checkpoint.config)), missing)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"memory_attention_hidden_size": 64}, "memory_attention_hidden_size"),
        ({"memory_encoder_output_channels": 32}, "memory_encoder_output_channels"),
        ({"memory_attention_rope_feat_sizes": [8, 8]}, "memory_attention_rope_feat_sizes"),
        ({"image_size": 1008}, "image_size"),
        ({"model_type": "sam2_video"}, "model_type"),
        ({"mask_downsampler_total_stride": 12}, "mask_downsampler_total_stride"),
    ],
)
def test_inconsistent_config_is_a_clear_error(tracker_checkpoint, change, message):
    data = copy.deepcopy(tracker_checkpoint.config["tracker_config"])
    data.update(change)
    with pytest.raises(ValueError, match=message):
        TrackerConfig.from_dict(data)


def test_optional_parts_follow_the_config():
    config = TrackerConfig.from_dict(
        {"enable_occlusion_spatial_embedding": False, "enable_temporal_pos_encoding_for_object_pointers": False}
    )
    keys = set(Sam3Tracker(config).state_dict())
    assert not any(k.startswith(("occlusion_spatial", "temporal_positional_encoding")) for k in keys)
