"""facebook/sam3's hub layout (transformers' ``Sam3VideoModel``): the detector under ``detector_model.``,
the tracker under ``tracker_model.`` (doubled by transformers 5.23's save_pretrained) and its neck under
``tracker_neck.``. The detector loads and equals ``Sam3VideoModel.detector_model``; the tracker parts are
kept and reported, never dropped."""

from __future__ import annotations

import json

import pytest
import torch
from reference import rel_err, save_video_reference, text_inputs, tiny_video_config_dict

import sam3lite
from sam3lite.checkpoints import CheckpointError, read_contents
from sam3lite.checkpoints.hub import resolve

OUTPUTS = ("pred_masks", "pred_boxes", "pred_logits", "presence_logits", "semantic_seg")


@pytest.fixture(
    scope="module", params=[("s0", True), ("sam3", True), ("s0", False)], ids=["s0-hub", "sam3-hub", "s0-tf"]
)
def video_dir(request, tmp_path_factory):
    """(reference Sam3VideoModel, directory of its files, text variant). ``-hub``: the hub file's
    ``tracker_model.*`` names; ``-tf``: transformers 5.23's ``tracker_model.tracker_model.*``."""
    text, hub_layout = request.param
    directory = tmp_path_factory.mktemp(f"video_{text}_{hub_layout}")
    ref = save_video_reference(tiny_video_config_dict(text), directory, seed=3, hub_layout=hub_layout)
    return ref, directory, text


def test_detector_matches_the_video_models_detector(video_dir):
    ref, directory, _ = video_dir
    ours = sam3lite.load(directory)
    ids, mask = text_inputs(2, lengths=[4, 9], seed=1)
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(4))
    boxes = torch.tensor([[[0.5, 0.5, 0.4, 0.3]], [[0.3, 0.6, 0.2, 0.2]]])
    labels = torch.tensor([[1], [0]])
    inputs = dict(pixel_values=pixels, input_ids=ids, attention_mask=mask, input_boxes=boxes, input_boxes_labels=labels)
    with torch.no_grad():
        theirs, mine = ref.detector_model(**inputs), ours(**inputs)
    for name in OUTPUTS:
        err = rel_err(getattr(mine, name), getattr(theirs, name))
        assert err < 1e-4, f"{name}: relative error {err:.2e}"


def test_tracker_parts_are_kept(video_dir):
    ref, directory, _ = video_dir
    contents = read_contents(directory)
    assert contents.layout == "sam3_video"
    expected_tracker = {
        k.removeprefix("tracker_model."): v for k, v in ref.state_dict().items() if k.startswith("tracker_model.")
    }
    expected_neck = {
        k.removeprefix("tracker_neck."): v for k, v in ref.state_dict().items() if k.startswith("tracker_neck.")
    }
    assert set(contents.tracker) == set(expected_tracker) and expected_tracker
    assert set(contents.tracker_neck) == set(expected_neck) and expected_neck
    assert all(torch.equal(contents.tracker[k], expected_tracker[k]) for k in expected_tracker)
    assert contents.tracker_config["model_type"] == "sam3_tracker_video"
    assert contents.video_config["model_type"] == "sam3_video"
    assert "score_threshold_detection" in contents.video_config


def test_info_reports_the_tracker(video_dir, capsys):
    from sam3lite.cli import main

    _, directory, text = video_dir
    assert main(["info", str(directory), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    part = summary["checkpoint"]
    assert part["layout"] == "sam3_video" and part["tracker"]["present"] and part["tracker"]["parameters"] > 0
    assert summary["text"]["encoder"] == ("CLIP" if text == "sam3" else "MobileCLIP")


def test_stray_keys_in_a_video_file_are_named(tmp_path):
    from safetensors.torch import load_file, save_file

    save_video_reference(tiny_video_config_dict("s0"), tmp_path, seed=0)
    state = load_file(str(tmp_path / "model.safetensors"))
    state["something_else.weight"] = torch.zeros(2)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="something_else.weight"):
        sam3lite.load(tmp_path)


def test_gated_repo_says_to_accept_the_licence_and_log_in(monkeypatch, tmp_path):
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError

    def gated(*args, **kwargs):
        import httpx

        request = httpx.Request("GET", "https://huggingface.co/api/models/facebook/sam3")
        response = httpx.Response(401, request=request)
        raise GatedRepoError("401 Client Error. Cannot access gated repo.", response=response)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", gated)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError) as info:
        resolve("sam3")
    message = str(info.value)
    assert "facebook/sam3" in message and "gated" in message
    assert "https://huggingface.co/facebook/sam3" in message and "HF_TOKEN" in message and "login" in message
    assert "\n" not in message


def test_forbidden_status_is_gated_too(monkeypatch, tmp_path):
    import huggingface_hub

    class Forbidden(Exception):
        response = type("Response", (), {"status_code": 403})()

    def forbidden(*args, **kwargs):
        raise Forbidden("403")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", forbidden)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="gated"):
        resolve("facebook/sam3")
