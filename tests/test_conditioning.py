"""Given frames as data: frame/latent alignment, placing conditions, encoding them, windows."""
import numpy as np
import pytest
import torch

from worldreel.data.video_io import fit_frames
from worldreel.errors import UserError
from worldreel.pipelines import conditioning as C
from worldreel.pipelines.generate import plan_windows

T = 4  # the causal VAE's time factor


def _clip(n, h=16, w=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_frame_latent_arithmetic_follows_the_causal_vae():
    assert [C.latent_of_frame(i, T) for i in range(10)] == [0, 1, 1, 1, 1, 2, 2, 2, 2, 3]
    assert C.latents_for_frames(33, T) == 9 and C.frames_for_latents(9, T) == 33
    assert C.latents_for_frames(1, T) == 1 and C.latents_for_frames(2, T) == 2
    assert C.frames_for_seconds(4.0, 8) == 33 and C.frames_for_seconds(0, 8) == 1
    for k in range(6):  # every frame of latent k maps back to k
        assert all(C.latent_of_frame(i, T) == k for i in C.frames_of_latent(k, T))


def test_place_conditions_counts_negative_index_from_the_end_and_resizes():
    head, tail = _clip(3), _clip(2, 32, 48, seed=1)  # the tail is another size and aspect
    pixels, given = C.place_conditions([C.Condition(head, 0), C.Condition(tail, -2)], 9, (16, 16))
    assert given.tolist() == [True] * 3 + [False] * 4 + [True] * 2
    assert np.array_equal(pixels[:3], head)
    assert pixels[7:].shape == (2, 16, 16, 3) and pixels[7:].any()
    with pytest.raises(UserError) as err:
        C.place_conditions([C.Condition(head, 0), C.Condition(head, 2)], 9, (16, 16))
    assert err.value.param == "conditions"
    with pytest.raises(UserError):
        C.place_conditions([C.Condition(head, 8)], 9, (16, 16))


def test_condition_rejects_non_images():
    with pytest.raises(UserError):
        C.Condition(np.zeros((4, 4), np.uint8))
    with pytest.raises(UserError):
        C.Condition(np.zeros((4, 4, 3), np.float32))
    assert C.Condition(np.zeros((4, 6, 3), np.uint8)).frames.shape == (1, 4, 6, 3)


def test_latent_mask_marks_latents_with_any_given_frame():
    given = np.zeros(10, bool)  # 10 frames -> latents 0, 1(1-4), 2(5-8), 3(9, + padding)
    given[[0, 9]] = True
    assert C.latent_mask(given, T).tolist() == [True, False, False, True]


class _CausalMeanVAE(torch.nn.Module):
    """A stand-in causal VAE: latent 0 = frame 0, latent k = mean of frames 1+4(k-1)..4k, plus
    a causal term (the previous frame), so segment alignment mistakes show up."""

    def encode_chunked(self, video, chunk_frames=17):
        frames = [video[:, :, :1]]
        for start in range(1, video.shape[2], T):
            seg = video[:, :, start : start + T]
            frames.append(seg.mean(2, keepdim=True) + 0.5 * video[:, :, start - 1 : start])
        return torch.cat(frames, 2)


def test_encode_given_prefix_equals_encoding_the_clip_alone():
    clip = _clip(9)
    pixels, given = C.place_conditions([C.Condition(clip, 0)], 17, (16, 16))
    vae = _CausalMeanVAE()
    known, mask = C.encode_given(vae.encode_chunked, pixels, given, T)
    assert mask.tolist() == [True, True, True, False, False]
    alone = vae.encode_chunked(torch.from_numpy(clip).permute(3, 0, 1, 2)[None].float() / 127.5 - 1)
    assert torch.allclose(known[:, :3], alone[0], atol=1e-6)
    assert not known[:, 3:].any()


def test_encode_given_mid_run_uses_the_real_anchor_frame_when_given():
    video = _clip(17, seed=3)
    vae = _CausalMeanVAE()
    full = vae.encode_chunked(torch.from_numpy(video).permute(3, 0, 1, 2)[None].float() / 127.5 - 1)[0]
    # Frames 4..12 given: latents 2 and 3 (frames 5-8, 9-12) are fully given with their
    # anchor (frame 4), latent 1 only partly (frame 4): its latents 2, 3 match the full encode.
    given = np.zeros(17, bool)
    given[4:13] = True
    pixels = np.where(given[:, None, None, None], video, 0).astype(np.uint8)
    known, mask = C.encode_given(vae.encode_chunked, pixels, given, T)
    assert mask.tolist() == [False, True, True, True, False]
    assert torch.allclose(known[:, 2:4], full[:, 2:4], atol=1e-6)


def test_builders_put_a_clips_first_frame_on_a_latent_boundary():
    clip = _clip(9)
    conds, total = C.extend_conditions(clip, 32, T)  # forward: prefix, then 32 new frames
    assert total == 41 and conds[0].at_index == 0
    conds, total = C.extend_conditions(clip, 32, T, backward=True)
    start = total + conds[0].at_index
    assert start == 33 and C.frames_of_latent(C.latent_of_frame(start, T), T)[0] == start
    conds, total = C.interpolate_conditions(clip[0], clip[-1], 7, T)
    assert total == 30 and conds[1].at_index == 29 and C.latents_for_frames(total, T) == 9
    conds, total = C.interpolate_conditions(clip, clip, 2, T)  # videos: latents 0-2, gap 3-4, tail from 5
    assert conds[1].at_index == C.frames_of_latent(5, T)[0] and total == 17 + 9
    conds, total = C.loop_conditions(clip[0], 7, T)
    assert np.array_equal(conds[0].frames, conds[1].frames) and total == 30


def test_windows_cover_everything_and_overlap_what_came_before():
    determined = np.zeros(25, bool)
    windows = plan_windows(determined, 9, 3)
    assert windows == [(0, 9), (6, 15), (12, 21), (16, 25)]
    # Extension: the known prefix is skipped; the first window overlaps its last latents.
    determined[:9] = True
    assert plan_windows(determined, 9, 3) == [(6, 15), (12, 21), (16, 25)]
    # Backwards: only the end is known, windows run towards the start.
    back = np.zeros(17, bool)
    back[-5:] = True
    assert plan_windows(back, 9, 3) == [(6, 15), (0, 9)]
    assert plan_windows(np.zeros(1, bool), 9, 3) == [(0, 1)]
    assert plan_windows(np.ones(5, bool), 9, 3) == []


def test_fit_frames_crops_to_aspect_then_resizes():
    frames = np.zeros((1, 20, 40, 3), np.uint8)
    frames[:, :, 10:30] = 255  # the centre square is white, the sides black
    out = fit_frames(frames, (16, 16))
    assert out.shape == (1, 16, 16, 3) and out.min() == 255
    assert C.resample_fps(_clip(31), 30.0, 8.0).shape[0] == 9
