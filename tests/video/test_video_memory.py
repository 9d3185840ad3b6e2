"""Memory stays flat as the video grows: 2 objects tracked through 300 synthetic frames on the tiny model.

What the session holds (memories, pointers, cached frame features) is counted exactly and must not grow
after the first frames; the process's resident memory is sampled too and must level off (a generous
bound: allocator noise, not a per-frame leak of even 100 KB, which 250 frames would show as 25 MB).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reference import save_video_reference, tiny_video_config_dict

import sam3lite
from sam3lite.video_predictor import VideoPredictor

NUM_FRAMES = 300


def rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        import os

        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def session_bytes(session) -> int:
    total = 0
    for state in session.objects.values():
        for stored in [*state.cond.values(), *state.non_cond.values()]:
            for t in (stored.pointer, stored.memory, stored.low_res):
                total += 0 if t is None else t.numel() * t.element_size()
    for features in session.features.values():
        for t in (features.pixel_features, features.image_embedding, *features.high_res_features):
            total += t.numel() * t.element_size()
    return total


class SyntheticVideo(list):
    """300 frames made on demand (the frames themselves are not what is measured)."""

    def __init__(self, n: int) -> None:
        super().__init__(range(n))

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        frame = np.full((120, 160, 3), 40, np.uint8)
        x = 10 + (i * 3) % 100
        frame[30:70, x : x + 40] = 230
        return frame


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/statm"), reason="needs /proc to read resident memory")
def test_memory_is_flat_over_300_frames(tmp_path):
    save_video_reference(tiny_video_config_dict("s0"), tmp_path, seed=0)
    vp = VideoPredictor(sam3lite.load(tmp_path))
    session = vp.start(SyntheticVideo(NUM_FRAMES))
    vp.add_object(session, 0, 1, box=[10, 30, 50, 70])
    vp.add_object(session, 0, 2, points=[[120, 100]], point_labels=[1])
    held, rss = {}, {}
    torch.set_num_threads(1)  # steadier RSS on a shared machine
    for result in vp.propagate(session):
        if result.frame in (50, 100, 200, NUM_FRAMES - 1):
            held[result.frame], rss[result.frame] = session_bytes(session), rss_mib()
    cfg = vp.tracker.config
    for state in session.objects.values():
        # Kept: the windows around the last frame and around each conditioning frame (a later pass starts
        # from one of those), whatever the video's length.
        anchors = 1 + len(state.cond)
        assert len(state.non_cond) <= anchors * (cfg.max_object_pointers_in_encoder + 1)
        assert sum(s.memory is not None for s in state.non_cond.values()) <= anchors * cfg.num_maskmem
    assert held[50] == held[100] == held[200] == held[NUM_FRAMES - 1]
    assert rss[NUM_FRAMES - 1] - rss[100] < 25, rss
