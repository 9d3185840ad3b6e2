"""Loading and saving: HF directories, sharded indexes, round trips, original .pt, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from reference import rel_err, save_reference, text_inputs, tiny_config_dict

import sam3lite
from sam3lite.checkpoints import CheckpointError, load_state_dict_strict


def _forward(model, seed: int = 0):
    ids, mask = text_inputs(1, lengths=[6], seed=seed)
    pixels = torch.randn(1, 3, 112, 112, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(pixel_values=pixels, input_ids=ids, attention_mask=mask)


def _assert_same(a, b, tol: float = 1e-5) -> None:
    for name in ("pred_masks", "pred_boxes", "pred_logits", "presence_logits", "semantic_seg"):
        assert rel_err(getattr(a, name), getattr(b, name)) <= tol, name


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("hf")
    ref = save_reference(tiny_config_dict("s0"), directory, seed=3)
    return directory, ref


def test_sharded_index_loads(tmp_path):
    ref = save_reference(tiny_config_dict("s1"), tmp_path, seed=4, max_shard_size="4MB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("*.safetensors"))) > 1
    _assert_same(_forward(sam3lite.load(tmp_path)), _forward(ref), tol=1e-4)


def test_save_pretrained_round_trip_and_transformers_reads_it(reference_dir, tmp_path):
    directory, ref = reference_dir
    ours = sam3lite.load(directory)
    ours.save_pretrained(tmp_path / "ours")
    again = sam3lite.load(tmp_path / "ours")
    _assert_same(_forward(again), _forward(ours), tol=0)
    # the config we write back keeps every field transformers wrote
    written = json.loads((tmp_path / "ours" / "config.json").read_text())
    original = json.loads((directory / "config.json").read_text())
    assert written == original

    from transformers import AutoModel

    theirs = AutoModel.from_pretrained(tmp_path / "ours").eval()
    assert type(theirs).__name__ == "Sam3LiteTextModel"
    _assert_same(_forward(theirs), _forward(ours), tol=1e-4)


def test_save_pretrained_sharded(reference_dir, tmp_path):
    directory, _ = reference_dir
    ours = sam3lite.load(directory)
    ours.save_pretrained(tmp_path, max_shard_size="4MB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    _assert_same(_forward(sam3lite.load(tmp_path)), _forward(ours), tol=0)


def test_from_pretrained_with_dtype_and_device(reference_dir):
    directory, _ = reference_dir
    model = sam3lite.Sam3LiteTextModel.from_pretrained(directory, device_map="cpu", dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16 and model.device.type == "cpu"
    assert not model.training


def test_missing_key_is_named(reference_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    directory, _ = reference_dir
    state = load_file(directory / "model.safetensors")
    del state["detr_decoder.presence_token.weight"]
    state["detr_decoder.bogus.weight"] = torch.zeros(1)
    (tmp_path / "config.json").write_text((directory / "config.json").read_text())
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError) as err:
        sam3lite.load(tmp_path)
    assert "detr_decoder.presence_token.weight" in str(err.value)
    assert "detr_decoder.bogus.weight" in str(err.value)


def test_shape_mismatch_is_named(reference_dir):
    directory, _ = reference_dir
    model = sam3lite.load(directory)
    state = model.state_dict()
    state["text_projection.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError, match=r"text_projection\.weight"):
        load_state_dict_strict(model, state)


def test_batchnorm_counters_may_be_absent(reference_dir):
    directory, _ = reference_dir
    model = sam3lite.load(directory)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    load_state_dict_strict(model, state)  # no error


def test_wrong_files_give_clear_errors(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(tiny_config_dict("s0")))
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="safetensors"):
        sam3lite.load(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="config.json"):
        sam3lite.load(empty)
    bad_pt = tmp_path / "weights.pt"
    bad_pt.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="weights.pt"):
        sam3lite.load(bad_pt)
    with pytest.raises(CheckpointError, match="no such file"):
        sam3lite.load(tmp_path / "missing.pt")


def test_bad_config_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="bert"):
        sam3lite.load(tmp_path)


def test_unknown_name_and_offline_hub(monkeypatch, tmp_path):
    with pytest.raises(CheckpointError, match="unknown model"):
        sam3lite.load("not-a-model")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError) as err:
        sam3lite.load("s0")
    assert "vil-uob/sam3-litetext-s0" in str(err.value) and "local" in str(err.value)


def test_random_model_from_config_and_variants():
    model = sam3lite.Sam3LiteTextModel(sam3lite.Sam3LiteTextConfig.from_dict(tiny_config_dict("l")))
    assert sum(p.numel() for p in model.parameters()) > 0
    assert set(sam3lite.VARIANTS) == {"s0", "s1", "l", "sam3"}
    assert sam3lite.VARIANTS["s0"].hub_id == "vil-uob/sam3-litetext-s0"
    assert sam3lite.VARIANTS["sam3"].config().is_sam3


def test_variant_text_parameter_counts_match_the_paper():
    """Text encoder + projection sizes of the published variants (42.54M / 63.53M / 123.80M)."""
    expected = {"s0": 42.54e6, "s1": 63.53e6, "l": 123.80e6}
    for name, count in expected.items():
        config = sam3lite.VARIANTS[name].config()
        from sam3lite.modeling.text import MobileClipTextEncoder

        with torch.device("meta"):
            text = MobileClipTextEncoder(config.text_config)
            proj = torch.nn.Linear(config.text_config.hidden_size, 256)
        total = sum(p.numel() for p in text.parameters()) + sum(p.numel() for p in proj.parameters())
        assert abs(total - count) / count < 0.001, (name, total)


def test_full_reference_model_matches_our_state_dict_layout():
    """Every key of the reference full model exists in ours with the same shape (S0 default config)."""
    with torch.device("meta"):
        from transformers import Sam3LiteTextConfig as HFConfig
        from transformers import Sam3LiteTextModel as HFModel

        theirs = HFModel(HFConfig(text_config={"num_hidden_layers": 6, "max_position_embeddings": 16}))
        ours = sam3lite.Sam3LiteTextModel(
            sam3lite.Sam3LiteTextConfig.from_dict(
                {"text_config": {"num_hidden_layers": 6, "max_position_embeddings": 16}}
            )
        )
    ref_shapes = {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    our_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert ref_shapes == our_shapes


@pytest.mark.parametrize("variant", ["s0", "sam3"])
def test_original_pt_loads_and_matches_reference(variant, tmp_path):
    """An original-format .pt (built from a reference by the inverse of the conversion) loads with
    sam3lite.load and gives the reference's outputs. The image size is not in any tensor shape (the
    inferred config assumes 1008 = 3 x the 336 pretraining size), so this tiny model's config.json
    sits beside the file, as a user would place it."""
    from original_layout import to_original
    from reference import hf_model

    ref = hf_model(tiny_config_dict(variant), seed=5)
    torch.save({"model": to_original(ref.state_dict(), variant)}, tmp_path / "efficientsam3.pt")
    ref.config.to_json_file(tmp_path / "config.json")
    ours = sam3lite.load(tmp_path / "efficientsam3.pt")
    _assert_same(_forward(ours), _forward(ref), tol=1e-4)


def test_original_pt_without_config_infers_it(tmp_path):
    """A bare .pt (no config.json) loads with the config inferred from tensor shapes."""
    from original_layout import to_original
    from reference import hf_model

    config = tiny_config_dict("s0")
    # What shapes cannot tell follows the real models: image = 3 x pretrain size, and the global
    # layers spread evenly (layers 0..3 of 4, as 7, 15, 23, 31 of 32), 64-wide attention heads.
    config["vision_config"]["backbone_config"].update(
        image_size=168, global_attn_indexes=[0, 1, 2, 3], num_attention_heads=1
    )
    config["text_config"]["num_attention_heads"] = 1
    ref = hf_model(config, seed=6)
    torch.save({"model": to_original(ref.state_dict(), "s0")}, tmp_path / "bare.pt")
    ours = sam3lite.load(tmp_path / "bare.pt")
    assert ours.config.text_config.max_position_embeddings == 16
    ids, mask = text_inputs(1, lengths=[6])
    pixels = torch.randn(1, 3, 168, 168)
    with torch.no_grad():
        _assert_same(
            ours(pixel_values=pixels, input_ids=ids, attention_mask=mask),
            ref(pixel_values=pixels, input_ids=ids, attention_mask=mask),
            tol=1e-4,
        )


def test_auto_dtype_follows_the_hardware(reference_dir, monkeypatch):
    from sam3lite import runtime

    directory, _ = reference_dir
    monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda: True)
    assert sam3lite.load(directory, device="cpu", dtype="auto").dtype == torch.bfloat16
    monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda: False)
    assert sam3lite.load(directory, device="cpu", dtype="auto").dtype == torch.float32


def test_load_keeps_one_copy_of_the_weights(tmp_path, monkeypatch):
    """The checkpoint's float32 CPU tensors become the parameters themselves: no second copy in memory."""
    from sam3lite.checkpoints import pretrained

    save_reference(tiny_config_dict("s0"), tmp_path, seed=5)
    read = pretrained.read_contents
    seen = {}

    def spy(path, **kwargs):
        contents = read(path, **kwargs)
        seen.update({k: v.data_ptr() for k, v in contents.detector.items()})
        return contents

    monkeypatch.setattr(pretrained, "read_contents", spy)
    model = sam3lite.load(tmp_path)
    params = dict(model.named_parameters())
    assert params and all(params[k].data_ptr() == seen[k] for k in params)
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    assert all(p.requires_grad for p in model.parameters())  # still trainable (e.g. for distillation)


def test_file_without_batchnorm_counters_loads(reference_dir, tmp_path):
    from safetensors.torch import save_file

    directory, _ = reference_dir
    model = sam3lite.load(directory)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert len(state) < len(model.state_dict())  # the S0 text encoder has BatchNorms
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((directory / "config.json").read_text())
    again = sam3lite.load(tmp_path, dtype="bfloat16")
    counters = [b for name, b in again.named_buffers() if name.endswith("num_batches_tracked")]
    assert counters and all(not c.is_meta and int(c) == 0 for c in counters)


class _RunsCode:
    """Unpickling calls ``pathlib.Path.touch(marker)``: a stand-in for code hidden in a checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_with_code_is_refused_in_one_line(tmp_path, capsys):
    marker = tmp_path / "code_ran"
    path = tmp_path / "trojan.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "hook": _RunsCode(marker)}, path)
    with pytest.raises(CheckpointError) as err:
        sam3lite.load(path)
    message = str(err.value)
    assert "not plain tensors" in message and "refused for safety" in message
    assert "weights_only" not in message and "\n" not in message and err.value.__cause__ is None
    assert not marker.exists()

    from sam3lite.cli import main

    assert main(["info", str(path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "refused for safety" in lines[0] and "weights_only" not in lines[0]
    assert not marker.exists()
