"""``sam3lite info MODEL``: config summary, parameters per component, dtype."""

from __future__ import annotations

import json

import pytest
import torch
from reference import save_reference, tiny_config_dict

import sam3lite
from sam3lite.checkpoints.variants import VARIANTS
from sam3lite.cli import main
from sam3lite.cli.info import COMPONENTS, count_parameters


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny")
    save_reference(tiny_config_dict("s0"), directory, seed=3)
    return directory


def test_parameters_per_component_match_the_loaded_model(tiny, capsys):
    assert main(["info", str(tiny), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    model = sam3lite.load(tiny)
    for group, modules in COMPONENTS.items():
        expected = sum(p.numel() for m in modules for p in getattr(model, m).parameters())
        assert summary["parameters"][group] == expected > 0
    assert summary["parameters"]["total"] == sum(p.numel() for p in model.parameters())
    assert summary["dtype"] == "float32" and summary["image_size"] == 112
    assert summary["text"] == {
        "encoder": "MobileCLIP",
        "layers": 4,
        "width": 64,
        "heads": 4,
        "context_length": 16,
        "prompt_length": 32,
        "text_mode": "transformers",
        "repmixer": True,
    }
    assert summary["checkpoint"]["layout"] == "detector" and summary["checkpoint"]["variant"] == "custom"
    assert summary["checkpoint"]["tracker"] == {"present": False}
    assert summary["heads"] == {"width": 32, "queries": 10}


def test_text_output_and_stored_dtype(tiny, tmp_path, capsys):
    model = sam3lite.load(tiny, dtype=torch.bfloat16)
    model.save_pretrained(tmp_path / "bf16")
    assert main(["info", str(tmp_path / "bf16")]) == 0
    out = capsys.readouterr().out
    for needle in ("sam3_lite_text", "MobileCLIP with RepMixer", "dtype       bfloat16", "vision", "heads", "total"):
        assert needle in out


def test_full_size_counts_match_the_published_ones():
    # architecture notes: vision 454.0M; S0 text + projection 42.54M (16-entry position table)
    counts = count_parameters(VARIANTS["s0"].config())
    assert round(counts["vision_encoder"] / 1e6, 1) == 454.0
    assert round((counts["text_encoder"] + counts["text_projection"]) / 1e6, 2) == 42.54


def test_unknown_model_is_a_usage_error(capsys):
    assert main(["info", "no-such-model"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sam3lite info: error: unknown model") and "\n" not in err


def test_hub_style_config_is_recognised_as_its_variant():
    """A hub config carries keys sam3lite does not model (transformers_version, architectures, id2label ...)
    and may carry a text mode; it is still the variant its architecture says."""
    from sam3lite.checkpoints import variant_of
    from sam3lite.modeling.config import Sam3LiteTextConfig

    for name in ("s0", "l"):
        data = VARIANTS[name].config().to_dict()
        data.update(transformers_version="5.23.0", dtype="float32", id2label={"0": "LABEL_0"})
        data["text_config"]["transformers_version"] = "5.23.0"
        assert variant_of(Sam3LiteTextConfig.from_dict(data)) == name
        assert variant_of(Sam3LiteTextConfig.from_dict({**data, "text_mode": "original"})) == name
    other = VARIANTS["s0"].config().to_dict()
    other["detr_decoder_config"]["num_queries"] = 100
    assert variant_of(Sam3LiteTextConfig.from_dict(other)) == "custom"
