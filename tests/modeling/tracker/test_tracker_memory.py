"""Video building blocks against transformers' ``Sam3TrackerVideoModel`` on identical inputs: memory
encoding, the choice of memory frames and object pointers, their temporal encodings, memory attention
(batched over objects reading different amounts of memory), mask prompts taken as output."""

from __future__ import annotations

import random
from functools import partial
from types import SimpleNamespace

import pytest
import torch
from reference import rel_err

from sam3lite.modeling.tracker import ObjectMemory, gather_memory, select_memory
from sam3lite.modeling.tracker.memory_selection import select_conditioning_frames
from sam3lite.modeling.tracker.model import temporal_encoding

GRID, DIM, MEM = 16, 128, 64


@pytest.fixture(scope="module")
def frame(ours):
    pixels = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(7))
    return pixels, ours.features(pixels)


@pytest.fixture(scope="module")
def hf_frame(hf_video, frame):
    """transformers' per-frame features: the flattened [HW, 1, C] levels it keeps in its session."""
    with torch.no_grad():
        out = hf_video.get_image_features(frame[0])
    return out.fpn_hidden_states, out.fpn_position_encoding


def _session():
    from transformers.models.sam3_tracker_video.modeling_sam3_tracker_video import Sam3TrackerVideoInferenceSession

    return Sam3TrackerVideoInferenceSession(dtype=torch.float32)


# ---------------------------------------------------------------------------------------------
# Memory encoder
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("binarize", [False, True])
def test_encode_memory(ours, hf_video, frame, hf_frame, binarize):
    """Three objects, one judged absent (occlusion embedding added); masks at input size, resized to 16x grid."""
    masks = torch.randn(3, 1, 224, 224, generator=torch.Generator().manual_seed(1)) * 4
    scores = torch.tensor([[2.0], [-1.0], [0.5]])
    with torch.no_grad():
        got = ours.tracker.encode_memory(frame[1], masks, scores, binarize)
        ref, ref_pos = hf_video._encode_new_memory(hf_frame[0][-1].expand(-1, 3, -1), masks, scores[:, None], binarize)
    assert got.dtype == torch.bfloat16 == ref.dtype and got.shape == (3, MEM, GRID, GRID)
    assert torch.equal(got, ref.permute(1, 2, 0).reshape(3, MEM, GRID, GRID))
    assert torch.equal(ours.tracker.memory_position(GRID, GRID, torch.float32), ref_pos[:, 0])
    # The occlusion embedding is what tells the absent object's memory apart.
    plain = ours.tracker.encode_memory(frame[1], masks, scores.abs(), binarize)
    assert torch.equal(plain[[0, 2]], got[[0, 2]]) and not torch.equal(plain[1], got[1])


def test_per_object_binarize(ours, frame):
    masks = torch.randn(2, 1, 224, 224, generator=torch.Generator().manual_seed(2)) * 4
    scores = torch.ones(2, 1)
    with torch.no_grad():
        mixed = ours.tracker.encode_memory(frame[1], masks, scores, torch.tensor([True, False]))
        hard = ours.tracker.encode_memory(frame[1], masks, scores, True)
        soft = ours.tracker.encode_memory(frame[1], masks, scores, False)
    assert torch.equal(mixed[0], hard[0]) and torch.equal(mixed[1], soft[1])


# ---------------------------------------------------------------------------------------------
# Which frames a frame reads
# ---------------------------------------------------------------------------------------------


def _fake_reference(num_maskmem: int, max_cond: int, max_pointers: int):
    """transformers' selection methods bound to a stand-in carrying only the config they read."""
    from transformers import Sam3TrackerVideoModel

    fake = SimpleNamespace(
        config=SimpleNamespace(max_cond_frame_num=max_cond, max_object_pointers_in_encoder=max_pointers),
        num_maskmem=num_maskmem,
        training=False,
    )
    fake._select_closest_cond_frames = partial(Sam3TrackerVideoModel._select_closest_cond_frames, fake)
    return fake, Sam3TrackerVideoModel


def test_selection_matches_reference():
    """Random memory banks: conditioning frames before/after the frame, more than max_cond_frame_num of
    them, gaps among tracked frames, forward and reverse, known length and streaming."""
    rng = random.Random(0)
    for trial in range(300):
        num_frames = rng.randint(2, 30)
        num_maskmem, max_cond, max_pointers = rng.choice([(7, 4, 16), (4, 2, 5), (3, 1, 3)])
        fake, cls = _fake_reference(num_maskmem, max_cond, max_pointers)
        frames = list(range(num_frames))
        cond = rng.sample(frames, rng.randint(1, min(6, num_frames)))
        tracked = [t for t in frames if t not in cond and rng.random() < 0.7]
        frame = rng.randrange(num_frames)
        reverse, streaming = rng.random() < 0.3, rng.random() < 0.2
        session = _session()
        idx = session.obj_id_to_idx(1)
        store = session.output_dict_per_obj[idx]
        for t in cond:
            store["cond_frame_outputs"][t] = {"frame": t, "object_pointer": torch.tensor([float(t)])}
        for t in tracked:
            store["non_cond_frame_outputs"][t] = {"frame": t, "object_pointer": torch.tensor([float(t)])}
        ref_memory = cls._gather_memory_frame_outputs(fake, session, idx, frame, reverse)
        offsets, pointers, slots = cls._get_object_pointers(
            fake, session, idx, frame, None if streaming else num_frames, "cpu", reverse, streaming
        )
        got = select_memory(
            frame,
            cond,
            tracked,
            num_maskmem=num_maskmem,
            max_cond_frame_num=max_cond,
            max_object_pointers=max_pointers,
            num_frames=None if streaming else num_frames,
            reverse=reverse,
        )
        expected_memory = [(out["frame"], (offset - 1) % num_maskmem) for offset, out in ref_memory if out is not None]
        assert list(got.memory_frames) == expected_memory, trial
        assert list(got.pointer_frames) == [(int(p.item()), o) for p, o in zip(pointers, offsets, strict=True)], trial
        assert got.max_pointer_offset == max(slots - 1, 1), trial


def test_closest_conditioning_frames():
    assert select_conditioning_frames(5, [0, 2, 9, 6, 3], 2) == [3, 6]
    assert select_conditioning_frames(5, [0, 2, 9, 6, 3], 3) == [3, 6, 2]
    assert select_conditioning_frames(5, [9, 0], 4) == [9, 0]
    assert select_conditioning_frames(5, [9, 0, 1], -1) == [9, 0, 1]


def test_temporal_encoding_matches_reference():
    from transformers.models.sam3_tracker_video.modeling_sam3_tracker_video import get_1d_sine_pe

    positions = torch.tensor([0.0, 1.0, 3.0, -2.0, 15.0]) / 15
    assert torch.equal(temporal_encoding(positions, DIM), get_1d_sine_pe(positions, DIM))


# ---------------------------------------------------------------------------------------------
# Memory attention: objects reading different numbers of memory frames and pointers, in one batch
# ---------------------------------------------------------------------------------------------


def _random_bank(seed: int, cond: list[int], tracked: list[int]) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return {
        t: ((torch.randn(MEM, GRID, GRID, generator=gen) * 2).to(torch.bfloat16), torch.randn(DIM, generator=gen))
        for t in cond + tracked
    }


def test_condition_on_memory_matches_reference(ours, hf_video, frame, hf_frame):
    """Three objects on frame 6 of 10: different conditioning frames (one of them after the frame),
    different tracked frames, so they read 2 to 5 memory frames and 2 to 6 pointers; one batched call
    against transformers' per-object computation from its session."""
    cfg = ours.tracker.config
    plans = {1: ([0], [1, 2, 3, 4, 5]), 2: ([2, 8], [4, 5]), 3: ([5], [])}
    session = _session()
    pos = hf_video.memory_encoder.position_encoding((1, MEM, GRID, GRID), "cpu", torch.float32)
    pos = pos.flatten(2).permute(2, 0, 1)
    memories = []
    for obj, (cond, tracked) in plans.items():
        bank = _random_bank(obj, cond, tracked)
        idx = session.obj_id_to_idx(obj)
        for t, (memory, pointer) in bank.items():
            key = "cond_frame_outputs" if t in cond else "non_cond_frame_outputs"
            session.output_dict_per_obj[idx][key][t] = {
                "maskmem_features": memory.flatten(1).permute(1, 0)[:, None],
                "maskmem_pos_enc": pos,
                "object_pointer": pointer[None],
            }
        selection = select_memory(
            6,
            cond,
            tracked,
            num_maskmem=cfg.num_maskmem,
            max_cond_frame_num=cfg.max_cond_frame_num,
            max_object_pointers=cfg.max_object_pointers_in_encoder,
            num_frames=10,
        )
        memories.append(
            gather_memory(selection, {t: m for t, (m, _) in bank.items()}, {t: p for t, (_, p) in bank.items()})
        )
    assert len({m.features.shape[0] for m in memories}) == 3 and len({m.pointers.shape[0] for m in memories}) == 3
    with torch.no_grad():
        got = ours.tracker.condition_on_memory(frame[1], memories)
        for i, obj in enumerate(plans):
            ref = hf_video._prepare_memory_conditioned_features(
                session, 6, session.obj_id_to_idx(obj), False, hf_frame[0][-1], hf_frame[1][-1], 10
            )
            assert rel_err(got[i], ref[0]) < 1e-5, obj
            alone = ours.tracker.condition_on_memory(frame[1], [memories[i]])
            assert rel_err(alone[0], ref[0]) < 1e-5, obj
    assert got.shape == (3, DIM, GRID, GRID)


def test_memory_shape_errors(ours, frame):
    bad = ObjectMemory(
        torch.zeros(2, MEM, 8, 8), torch.zeros(2, dtype=torch.long), torch.zeros(0, DIM), torch.zeros(0), 15
    )
    with pytest.raises(ValueError, match="features"):
        ours.tracker.condition_on_memory(frame[1], [bad])
    with pytest.raises(ValueError, match="memories"):
        ours.tracker.condition_on_memory(frame[1], [])
    with pytest.raises(KeyError, match="frames"):
        gather_memory(
            select_memory(3, [0], [1, 2], num_maskmem=7, max_cond_frame_num=4, max_object_pointers=16), {}, {}
        )


# ---------------------------------------------------------------------------------------------
# A mask given as prompt on a video frame
# ---------------------------------------------------------------------------------------------


def test_mask_as_output_matches_reference(ours, hf_video, frame, hf_frame):
    masks = torch.zeros(2, 224, 224)
    masks[0, 50:120, 60:150] = 1  # an object
    # masks[1] stays empty: the object is absent (score -10, no-object pointer)
    with torch.no_grad():
        got = ours.tracker.track_step(frame[1], [None, None], mask_inputs=list(masks))
        levels = hf_frame[0]
        high_res = [
            x.permute(1, 2, 0).reshape(1, -1, *s) for x, s in zip(levels[:-1], [[64, 64], [32, 32]], strict=True)
        ]
        pixel = levels[-1].permute(1, 2, 0).reshape(1, DIM, GRID, GRID)
        for i in range(2):
            ref = hf_video._use_mask_as_output(pixel, high_res, masks[i][None, None])
            assert rel_err(got.low_res_masks[i], ref.pred_masks[0]) < 1e-6
            assert torch.equal(got.high_res_masks[i], ref.high_res_masks[0])
            assert rel_err(got.object_pointer[i], ref.object_pointer[0]) < 1e-5
            assert got.object_score_logits[i].item() == ref.object_score_logits.flatten().item()
    assert torch.equal(got.object_pointer[1], ours.tracker.no_object_pointer[0])


# ---------------------------------------------------------------------------------------------
# track_step batching
# ---------------------------------------------------------------------------------------------


def test_track_step_batch_equals_one_by_one(ours, frame):
    """Mixed objects in one call (no memory + click, memory + correction clicks, memory only, mask prompt)
    give what each gives alone, in the caller's order."""
    bank = _random_bank(3, [0], [1, 2])
    cfg = ours.tracker.config
    selection = select_memory(3, [0], [1, 2], num_maskmem=7, max_cond_frame_num=4, max_object_pointers=16, num_frames=8)
    memory = gather_memory(selection, {t: m for t, (m, _) in bank.items()}, {t: p for t, (_, p) in bank.items()})
    short = gather_memory(
        select_memory(3, [2], [], num_maskmem=7, max_cond_frame_num=4, max_object_pointers=16, num_frames=8),
        {2: bank[2][0]},
        {2: bank[2][1]},
    )
    mask = torch.zeros(224, 224)
    mask[20:90, 30:100] = 1
    objects = [
        dict(memory=None, points=torch.tensor([[100.0, 80.0]]), labels=torch.tensor([1])),
        dict(memory=memory, points=torch.tensor([[50.0, 60.0], [150.0, 160.0]]), labels=torch.tensor([1, 0])),
        dict(memory=short, points=None, labels=None),
        dict(memory=memory, points=None, labels=None),
        dict(memory=None, points=None, labels=None, mask=mask),
        dict(memory=None, points=torch.tensor([[30.0, 40.0], [90.0, 100.0]]), labels=torch.tensor([2, 3])),
    ]
    with torch.no_grad():
        batch = ours.tracker.track_step(
            frame[1],
            [o["memory"] for o in objects],
            points=[o["points"] for o in objects],
            labels=[o["labels"] for o in objects],
            mask_inputs=[o.get("mask") for o in objects],
        )
        for i, o in enumerate(objects):
            alone = ours.tracker.track_step(frame[1], [o["memory"]], [o["points"]], [o["labels"]], [o.get("mask")])
            for name in ("low_res_masks", "high_res_masks", "iou_scores", "object_score_logits", "object_pointer"):
                assert rel_err(getattr(batch, name)[i], getattr(alone, name)[0]) < 1e-5, (i, name)
    assert batch.low_res_masks.shape == (6, 1, 64, 64) and batch.high_res_masks.shape == (6, 1, 224, 224)
    assert batch.object_pointer.shape == (6, DIM) and batch.iou_scores.shape == (6,)
    assert cfg.multimask_max_pt_num == 1  # objects 0, 2, 3 ran multimask; 1, 5 single-mask (2 points)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(memories=[None], points=[torch.zeros(1, 2)], labels=[None]), "points and labels"),
        (dict(memories=[None], mask_inputs=[torch.zeros(1, 224, 224)]), "mask_inputs"),
        (dict(memories=[None, None], points=[None]), "one entry per object"),
        (
            dict(memories=[None], points=[torch.zeros(1, 2)], labels=[torch.ones(1)], mask_inputs=[torch.zeros(8, 8)]),
            "both points and a mask",
        ),
    ],
)
def test_track_step_input_errors(ours, frame, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ours.tracker.track_step(frame[1], **kwargs)


def test_bfloat16_model_runs_a_frame(ours, frame):
    """A bfloat16 tracker: prompt, memory, tracked frame and mask prompt keep one dtype and stay near float32."""
    import copy

    tracker = copy.deepcopy(ours.tracker).to(torch.bfloat16)
    f32 = frame[1]
    f16 = type(f32)(
        f32.pixel_features.bfloat16(),
        f32.image_embedding.bfloat16(),
        tuple(x.bfloat16() for x in f32.high_res_features),
        f32.image_pe.bfloat16(),
    )
    points, labels = [torch.tensor([[100.0, 80.0]])], [torch.tensor([1])]
    mask = torch.zeros(224, 224)
    mask[10:50, 10:80] = 1
    with torch.no_grad():
        first = tracker.track_step(f16, [None, None], points + [None], labels + [None], [None, mask])
        memory = tracker.encode_memory(f16, first.high_res_masks, first.object_score_logits, True)
        selection = select_memory(1, [0], [], num_maskmem=7, max_cond_frame_num=4, max_object_pointers=16, num_frames=4)
        reads = [gather_memory(selection, {0: memory[i]}, {0: first.object_pointer[i]}) for i in range(2)]
        tracked = tracker.track_step(f16, reads)
        reference = ours.tracker.track_step(f32, [None], points, labels)
    for out in (first, tracked):
        assert {out.low_res_masks.dtype, out.object_pointer.dtype, out.object_score_logits.dtype} == {torch.bfloat16}
    assert rel_err(first.low_res_masks[:1].float(), reference.low_res_masks) < 0.05
