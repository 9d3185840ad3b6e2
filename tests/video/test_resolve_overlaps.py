"""``resolve_overlaps`` (who keeps a pixel two objects of one phrase both cover) against the rule as
transformers' ``Sam3VideoProcessor`` writes it: an argmax over score-weighted masks."""

from __future__ import annotations

import torch

from sam3lite.video_text import resolve_overlaps


def _argmax_rule(masks: torch.Tensor, scores: torch.Tensor, groups: list[int]) -> torch.Tensor:
    out = masks.clone()
    group_t = torch.tensor(groups)
    for group in group_t.unique().tolist():
        rows = (group_t == group).nonzero().flatten().tolist()
        if len(rows) < 2:
            continue
        weighted = torch.where(masks[rows], scores[rows][:, None, None], -10.0)
        own = weighted.argmax(0)[None] == torch.arange(len(rows))[:, None, None]
        out[rows] = own & (weighted > 0)
    return out


def test_matches_the_argmax_rule_with_ties_zero_scores_and_groups():
    g = torch.Generator().manual_seed(0)
    for trial in range(200):
        n = int(torch.randint(1, 7, (1,), generator=g))
        masks = torch.rand(n, 9, 11, generator=g) > 0.4
        scores = torch.randint(0, 4, (n,), generator=g).float() / 3  # ties, and zeros that keep nothing
        if trial % 3 == 0:
            scores = torch.rand(n, generator=g)
        groups = torch.randint(0, 2, (n,), generator=g).tolist()
        assert torch.equal(resolve_overlaps(masks, scores, groups), _argmax_rule(masks, scores, groups)), trial


def test_the_better_score_keeps_the_shared_pixels_the_first_wins_ties():
    masks = torch.zeros(3, 1, 4, dtype=torch.bool)
    masks[0, 0, :3] = masks[1, 0, 1:] = masks[2, 0, :] = True
    out = resolve_overlaps(masks, torch.tensor([0.5, 0.9, 0.5]), [0, 0, 1])
    assert out[0, 0].tolist() == [True, False, False, False]
    assert out[1, 0].tolist() == [False, True, True, True]
    assert out[2, 0].all()  # another phrase: untouched
    tie = resolve_overlaps(masks[:2], torch.tensor([0.7, 0.7]), [0, 0])
    assert tie[0, 0].tolist() == [True, True, True, False] and tie[1, 0].tolist() == [False, False, False, True]
