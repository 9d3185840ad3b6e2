"""Distillation building blocks: prompt files, split, shuffles, batch order, loss, schedule, student init."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from reference import TEXT_S0, TEXT_S1, randomize_

from sam3lite.distill import data
from sam3lite.distill.loss import LossWeights, MetricSums, distill_loss, mean_pool
from sam3lite.distill.student import POSITION_KEY, build_student, fit_positions, read_init, student_config
from sam3lite.distill.tower import TextTower
from sam3lite.distill.train import TrainConfig, freeze_batchnorm, lr_at, optimizer_groups
from sam3lite.modeling.config import TextConfig
from sam3lite.processing.tokenizer import Tokenizer

# ---------------------------------------------------------------------------------------------
# Prompt files
# ---------------------------------------------------------------------------------------------


def test_read_prompts_txt_and_json(tmp_path):
    txt = tmp_path / "a.txt"
    txt.write_text("  red car \n\n\t\nthe   dog\tleft\n", encoding="utf-8")
    js = tmp_path / "b.json"
    js.write_text(json.dumps(["a cat", "  ", "two\nlines"]), encoding="utf-8")
    assert data.read_prompts([txt, js]) == ["red car", "the dog left", "a cat", "two lines"]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "no prompts"),
        (b"\n  \n\t\n", "no prompts"),
        (b"\xff\xfe\x00bad", "not UTF-8"),
    ],
)
def test_read_prompts_rejects_empty_and_undecodable_files(tmp_path, content, message):
    path = tmp_path / "p.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        data.read_prompts([path])


def test_read_prompts_rejects_missing_unreadable_and_bad_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        data.read_prompts([tmp_path / "missing.txt"])
    with pytest.raises(FileNotFoundError):
        data.read_prompts([tmp_path])  # a directory is not a prompts file
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="list of strings"):
        data.read_prompts([bad])
    bad.write_text('["a",')
    with pytest.raises(ValueError, match="not valid JSON"):
        data.read_prompts([bad])
    with pytest.raises(ValueError, match="no prompts files"):
        data.read_prompts([])


def test_dedupe_uses_what_the_tokenizer_sees():
    prompts = ["Red Car", "red  car", "RED CAR", "blue car", "red car "]
    assert data.dedupe(prompts) == ["Red Car", "blue car"]
    tok = Tokenizer(16)
    ids, _ = tok(["Red Car", "red  car"])
    assert torch.equal(ids[0], ids[1])  # the reason equal keys are duplicates


def test_split_is_disjoint_complete_and_independent_of_order():
    prompts = [f"prompt number {i}" for i in range(200)]
    train, val = data.split_train_val(prompts, 0.1)
    assert len(val) == 20 and len(train) == 180
    assert set(train) | set(val) == set(prompts) and not set(train) & set(val)
    assert train == [p for p in prompts if p in set(train)]  # input order kept
    train2, val2 = data.split_train_val(prompts[::-1], 0.1)
    assert set(val2) == set(val)
    with pytest.raises(ValueError, match="val_fraction"):
        data.split_train_val(prompts, 0.0)
    with pytest.raises(ValueError, match="at least 2"):
        data.split_train_val(["one"], 0.5)


def test_shuffle_words_permutes_words():
    rng = np.random.default_rng(0)
    for prompt in ["a red car on the left", "two words", "x y"]:
        shuffled = data.shuffle_words(prompt, rng)
        assert shuffled != prompt
        assert sorted(shuffled.split()) == sorted(prompt.split())
    assert data.shuffle_words("dog", rng) == "dog"
    assert data.shuffle_words("dog dog", rng) == "dog dog"
    a = data.shuffle_words("a b c d e f", data.item_rng(0, 5, 3))
    assert a == data.shuffle_words("a b c d e f", data.item_rng(0, 5, 3))


def test_batch_order_is_a_pure_function_of_seed_and_step():
    n, batch = 103, 10  # 10 batches per epoch, 3 items dropped
    epoch0 = np.concatenate([data.batch_indices(s, n, batch, seed=1) for s in range(10)])
    assert len(set(epoch0.tolist())) == 100
    epoch1 = np.concatenate([data.batch_indices(s, n, batch, seed=1) for s in range(10, 20)])
    assert not np.array_equal(epoch0, epoch1)
    assert np.array_equal(data.batch_indices(13, n, batch, 1), data.batch_indices(13, n, batch, 1))
    assert not np.array_equal(data.batch_indices(3, n, batch, 1), data.batch_indices(3, n, batch, 2))
    with pytest.raises(ValueError, match="larger than"):
        data.batch_indices(0, 5, 10, 0)


def test_lengths_and_mask_from_ids():
    with pytest.warns(UserWarning, match="truncated"):
        ids, mask = Tokenizer(8)(["a", "a red car on the left of the road"])
    lengths = data.lengths_from_ids(ids.numpy())
    assert lengths.tolist() == mask.sum(1).tolist()
    assert np.array_equal(data.attention_mask(lengths, 8), mask.numpy())


# ---------------------------------------------------------------------------------------------
# Loss and metrics
# ---------------------------------------------------------------------------------------------


def _features(seed: int, b: int = 6, t: int = 7, d: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    student, teacher = torch.randn(b, t, d, generator=gen), torch.randn(b, t, d, generator=gen)
    mask = (torch.arange(t)[None] < torch.randint(2, t + 1, (b, 1), generator=gen)).long()
    return student, teacher, mask


def test_loss_matches_its_definition_and_ignores_padding():
    student, teacher, mask = _features(0)
    shuffled = student + 0.1 * torch.randn_like(student)
    weights = LossWeights(cos=2.0, cons=0.1)
    loss, parts = distill_loss(student, teacher, mask, shuffled, mask, weights, int(mask.sum()), student.shape[0])
    real = mask.bool()
    mse = ((student - teacher) ** 2).mean(-1)[real].mean()
    cos = (1 - torch.nn.functional.cosine_similarity(student, teacher, dim=-1))[real].mean()
    pooled = lambda x: torch.stack([x[i][real[i]].mean(0) for i in range(len(x))])  # noqa: E731
    cons = ((pooled(student) - pooled(shuffled)) ** 2).mean()
    torch.testing.assert_close(parts["mse"], mse)
    torch.testing.assert_close(parts["cos"], cos)
    torch.testing.assert_close(parts["cons"], cons)
    torch.testing.assert_close(loss, mse + 2.0 * cos + 0.1 * cons)
    # Anything at pad positions is irrelevant.
    noisy = torch.where(real[..., None], teacher, 100 * torch.randn_like(teacher))
    loss2, _ = distill_loss(student, noisy, mask, shuffled, mask, weights, int(mask.sum()), student.shape[0])
    torch.testing.assert_close(loss2, loss)
    # A perfect student has zero loss.
    zero, _ = distill_loss(teacher, teacher, mask, teacher, mask, weights, int(mask.sum()), student.shape[0])
    assert float(zero) < 1e-6


def test_shard_losses_add_up_to_the_global_loss():
    """The DDP contract: with global counts, the shares of two processes sum to the one-process loss."""
    student, teacher, mask = _features(1, b=8)
    shuffled = student.flip(1)
    weights = LossWeights(1.5, 0.1)
    tokens, prompts = int(mask.sum()), 8
    full, _ = distill_loss(student, teacher, mask, shuffled, mask, weights, tokens, prompts)
    halves = [
        distill_loss(student[s], teacher[s], mask[s], shuffled[s], mask[s], weights, tokens, prompts)[0]
        for s in (slice(0, 4), slice(4, 8))
    ]
    torch.testing.assert_close(halves[0] + halves[1], full)


def test_metrics_and_mean_pool():
    student, teacher, mask = _features(2)
    sums = MetricSums()
    sums.add(teacher, teacher, mask)
    result = sums.result()
    assert result["token_cos"] == pytest.approx(1.0, abs=1e-6) and result["mse"] == pytest.approx(0.0, abs=1e-9)
    assert result["pooled_cos"] == pytest.approx(1.0, abs=1e-6) and result["tokens"] == int(mask.sum())
    pooled = mean_pool(student, mask)
    torch.testing.assert_close(pooled[0], student[0, : int(mask[0].sum())].mean(0))


def test_loss_weight_defaults_follow_the_recipe():
    assert LossWeights.for_variant("s0") == LossWeights(2.0, 0.1)
    assert LossWeights.for_variant("s1") == LossWeights(1.5, 0.1)
    assert LossWeights.for_variant("l") == LossWeights(1.0, 0.05)
    assert LossWeights.for_variant(None, cons=0.0) == LossWeights(1.5, 0.0)


# ---------------------------------------------------------------------------------------------
# Schedule and optimizer
# ---------------------------------------------------------------------------------------------


def test_cosine_schedule_with_warmup():
    cfg = TrainConfig(cache="c", student="s0", out="o", lr=1e-3, min_lr=1e-5)
    lrs = [lr_at(s, cfg, total=100, warmup=10) for s in range(101)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10], strict=False))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[100] == pytest.approx(1e-5)
    assert lrs[55] == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5), rel=1e-6)
    assert math.isclose(lr_at(10, cfg, 100, 10), 1e-3)


def test_student_groups_and_frozen_parts():
    student = freeze_batchnorm(build_student(TextConfig.from_dict(TEXT_S0), 32))
    assert not student.text_encoder.projection.weight.requires_grad
    decay, no_decay = optimizer_groups(student, 0.05)
    names = {id(p): n for n, p in student.named_parameters()}
    assert all(p.ndim >= 2 and "layer_scale" not in names[id(p)] for p in decay["params"])
    assert any("layer_scale" in names[id(p)] for p in no_decay["params"])
    assert names[id(student.text_encoder.projection.weight)] not in {names[id(p)] for p in decay["params"]}
    bns = [m for m in student.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(not m.training for m in bns) and student.training


# ---------------------------------------------------------------------------------------------
# Student config and --init
# ---------------------------------------------------------------------------------------------


def test_student_config_sizes_the_position_table_to_the_context(tmp_path):
    for name in ("s0", "s1", "l"):
        assert student_config(name, 32).max_position_embeddings == 32
    assert student_config("s0", 16).num_hidden_layers == 6 and student_config("l", 16).hidden_size == 768
    path = tmp_path / "student.json"
    path.write_text(json.dumps({"text_config": {**TEXT_S1, "max_position_embeddings": 16}}))
    assert student_config(path, 16).hidden_size == 64
    path.write_text(json.dumps({**TEXT_S1, "max_position_embeddings": 77}))
    with pytest.raises(ValueError, match="max_position_embeddings=77.*context length is 16"):
        student_config(path, 16)
    path.write_text(json.dumps({"model_type": "clip_text_model"}))
    with pytest.raises(ValueError, match="not a MobileCLIP"):
        student_config(path, 16)
    with pytest.raises(FileNotFoundError, match="neither s0"):
        student_config("s7", 16)


def _student(text: dict, positions: int, seed: int = 0) -> TextTower:
    torch.manual_seed(seed)
    config = TextConfig.from_dict({**text, "max_position_embeddings": positions})
    return randomize_(TextTower(config, 32), seed).eval()


def _to_open_clip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our layout -> open_clip's CustomTextCLIP layout (``text.``), fused q/k/v, [P, H] table, x @ P."""
    out: dict[str, torch.Tensor] = {"logit_scale": torch.tensor(2.0), "visual.trunk.stem.weight": torch.ones(3)}
    renames = [
        (r"embeddings\.token_embedding\.weight", "token_embedding.weight"),
        (r"final_layer_norm\.(\w+)", r"ln_final.\1"),
        (r"layers\.(\d+)\.layer_norm([12])\.(\w+)", r"transformer.resblocks.\1.ln_\2.\3"),
        (r"layers\.(\d+)\.self_attn\.out_proj\.(\w+)", r"transformer.resblocks.\1.attn.out_proj.\2"),
        (r"layers\.(\d+)\.mlp\.fc1\.(\w+)", r"transformer.resblocks.\1.mlp.c_fc.\2"),
        (r"layers\.(\d+)\.mlp\.fc2\.(\w+)", r"transformer.resblocks.\1.mlp.c_proj.\2"),
    ]
    for key, value in state.items():
        if not key.startswith("text_encoder."):
            continue
        short = key.removeprefix("text_encoder.")
        if short == "embeddings.position_embedding.position_embedding":
            out["text.positional_embedding"] = value[0, 0]
        elif short == "projection.weight":
            out["text.text_projection"] = value.t().contiguous()
        elif m := re.fullmatch(r"layers\.(\d+)\.self_attn\.q_proj\.(\w+)", short):
            parts = [state[f"text_encoder.layers.{m[1]}.self_attn.{x}_proj.{m[2]}"] for x in "qkv"]
            out[f"text.transformer.resblocks.{m[1]}.attn.in_proj_{m[2]}"] = torch.cat(parts)
        elif re.fullmatch(r"layers\.\d+\.self_attn\.[kv]_proj\.\w+", short):
            continue
        else:
            for pattern, target in renames:
                if re.fullmatch(pattern, short):
                    out["text." + re.sub(pattern, target, short)] = value
                    break
            else:
                raise AssertionError(short)
    return out


_L, _A = r"layers\.(\d+)\.", r"transformer.\1."  # a layer in our layout / in Apple's


def _to_apple(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our layout -> Apple ml-mobileclip's ``CLIP`` state dict (``text_encoder.``, MCT with RepMixer)."""
    out: dict[str, torch.Tensor] = {"logit_scale": torch.tensor(2.0), "image_encoder.model.stem.weight": torch.ones(3)}
    renames = [
        (r"embeddings\.token_embedding\.weight", "embedding_layer.weight"),
        (r"embeddings\.position_embedding\.position_embedding", "positional_embedding.pos_embed.pos_embed"),
        (r"final_layer_norm\.(\w+)", r"final_layer_norm.\1"),
        (_L + r"layer_norm1\.(\w+)", _A + r"pre_norm_mha.0.\2"),
        (_L + r"self_attn\.out_proj\.(\w+)", _A + r"pre_norm_mha.1.out_proj.\2"),
        (_L + r"layer_norm2\.(\w+)", _A + r"pre_norm_ffn.0.\2"),
        (_L + r"mlp\.fc1\.(\w+)", _A + r"pre_norm_ffn.1.\2"),
        (_L + r"mlp\.fc2\.(\w+)", _A + r"pre_norm_ffn.4.\2"),
        (_L + r"layer_scale", _A + r"layer_scale"),
        (_L + r"token_mixer\.layer_scale", _A + r"token_mixer.layer_scale"),
        (_L + r"token_mixer\.reference_batchnorm\.(\w+)", _A + r"token_mixer.norm.rbr_skip.\2"),
        (_L + r"token_mixer\.mixer\.batchnorm_skip\.(\w+)", _A + r"token_mixer.mixer.rbr_skip.\2"),
        (
            _L + r"token_mixer\.mixer\.conv\.weight",
            _A + r"token_mixer.mixer.rbr_conv.0.conv.weight",
        ),
        (
            _L + r"token_mixer\.mixer\.batchnorm_conv\.(\w+)",
            _A + r"token_mixer.mixer.rbr_conv.0.bn.\2",
        ),
        (_L + r"conv_feed_forward\.depthwise_conv\.weight", _A + r"convffn.conv.conv.weight"),
        (_L + r"conv_feed_forward\.depthwise_batchnorm\.(\w+)", _A + r"convffn.conv.bn.\2"),
        (_L + r"conv_feed_forward\.mlp\.fc([12])\.(\w+)", _A + r"convffn.fc\2.\3"),
    ]
    for key, value in state.items():
        if not key.startswith("text_encoder."):
            continue
        short = key.removeprefix("text_encoder.")
        if short == "projection.weight":
            out["text_encoder.projection_layer"] = value.t().contiguous()
        elif m := re.fullmatch(_L + r"self_attn\.q_proj\.(\w+)", short):
            parts = [state[f"text_encoder.layers.{m[1]}.self_attn.{x}_proj.{m[2]}"] for x in "qkv"]
            out[f"text_encoder.transformer.{m[1]}.pre_norm_mha.1.qkv_proj.{m[2]}"] = torch.cat(parts)
        elif re.fullmatch(r"layers\.\d+\.self_attn\.[kv]_proj\.\w+", short):
            continue
        else:
            for pattern, target in renames:
                if re.fullmatch(pattern, short):
                    out["text_encoder." + re.sub(pattern, target, short)] = value
                    break
            else:
                raise AssertionError(short)
    return out


def _encoder_outputs(tower: TextTower, length: int) -> torch.Tensor:
    ids, mask = Tokenizer(length)(["a red car", "the leftmost child wearing a blue vest near the door"])
    with torch.no_grad():
        return tower.text_encoder(ids, mask).last_hidden_state


@pytest.mark.parametrize("layout, text", [("open_clip", TEXT_S1), ("apple", TEXT_S0)])
def test_init_from_mobileclip_weights(tmp_path, layout, text):
    source = _student(text, positions=77)  # MobileCLIP: a 77-entry table
    convert = _to_open_clip if layout == "open_clip" else _to_apple
    path = tmp_path / "mobileclip.pt"
    converted = convert(source.state_dict())
    torch.save({"state_dict": converted} if layout == "open_clip" else converted, path)  # both wrappings occur
    state, kind = read_init(path)
    assert kind == "mobileclip" and not any(k.startswith("text_projection.") for k in state)
    student = build_student(TextConfig.from_dict({**text, "max_position_embeddings": 16}), 32, init=path).eval()
    ours = student.state_dict()
    for key, value in source.state_dict().items():
        if key == POSITION_KEY:
            assert torch.equal(ours[key], value[:, :, :16])  # the first 16 of MobileCLIP's 77 positions
        elif key.startswith("text_encoder."):
            assert torch.equal(ours[key], value), key
    # On inputs of MobileCLIP's own length, the converted encoder computes what the source computes.
    full = build_student(TextConfig.from_dict({**text, "max_position_embeddings": 77}), 32, init=path).eval()
    torch.testing.assert_close(_encoder_outputs(full, 77), _encoder_outputs(source, 77))


def test_init_from_litetext_keeps_outputs_at_the_new_context(tmp_path):
    source = _student(TEXT_S0, positions=77)  # the released files' 77-row table
    path = tmp_path / "model.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    student = build_student(TextConfig.from_dict({**TEXT_S0, "max_position_embeddings": 16}), 32, init=path).eval()
    assert student.state_dict()[POSITION_KEY].shape[2] == 16
    ids, mask = Tokenizer(16)(["a red car", "three small dogs on a sofa"])
    with torch.no_grad():
        torch.testing.assert_close(student(ids, mask), source(ids, mask))  # the source resized at run time


def test_init_errors_are_clear(tmp_path):
    source = _student(TEXT_S1, positions=16)
    path = tmp_path / "init.pt"
    torch.save(source.state_dict(), path)
    wide = TextConfig.from_dict({**TEXT_S1, "hidden_size": 96, "num_attention_heads": 6, "max_position_embeddings": 16})
    with pytest.raises(ValueError, match=r"hidden_size \(width\): --init 64, student 96"):
        build_student(wide, 32, init=path)
    deep = TextConfig.from_dict({**TEXT_S1, "num_hidden_layers": 5, "max_position_embeddings": 16})
    with pytest.raises(ValueError, match="num_hidden_layers: --init 3, student 5"):
        build_student(deep, 32, init=path)
    with pytest.raises(ValueError, match="output width: --init 32, student 256"):
        build_student(TextConfig.from_dict({**TEXT_S1, "max_position_embeddings": 16}), 256, init=path)
    junk = tmp_path / "junk.pt"
    torch.save({"foo.weight": torch.ones(2)}, junk)
    with pytest.raises(ValueError, match="not a LiteText checkpoint"):
        read_init(junk)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a readable PyTorch file"):
        read_init(broken)
    with pytest.raises(FileNotFoundError):
        read_init(tmp_path / "missing.pt")


def test_fit_positions_rules():
    table = torch.randn(1, 1, 77, 8)
    state = {POSITION_KEY: table}
    assert torch.equal(fit_positions(state, 16, "mobileclip")[POSITION_KEY], table[:, :, :16])
    resized = fit_positions(state, 16, "litetext")[POSITION_KEY]
    expected = torch.nn.functional.interpolate(table, size=(16, 8), mode="bilinear", align_corners=False)
    assert torch.equal(resized, expected)
    assert fit_positions(state, 77, "litetext")[POSITION_KEY] is table


def test_fingerprint_identifies_weights():
    a, b = _student(TEXT_S1, 16, seed=0), _student(TEXT_S1, 16, seed=0)
    assert a.fingerprint() == b.fingerprint()
    with torch.no_grad():
        b.text_projection.bias[0] += 1e-3
    assert a.fingerprint() != b.fingerprint()
