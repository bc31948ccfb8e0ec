"""The judge: a learnt reader of finished clips, for picking among the sampler's finalists.

The state probe reads where each colour is in the latents (``steer.StateProbe``);
``steer.layout_score`` turns that into a fit by hand-set rules, and world-bench scores the clip
it keeps 0.80 where the best of the same finalists scores 0.90 (docs/training.md). The judge
learns the verdicts instead: given a finished clip's *palette tracks* (per palette colour and
pixel frame, how much of the frame it covers and where: ``eval.tracking.palette_tracks``, on
the decoded frames) and the caption's facts, each of world-bench's seven checks' chance to pass
(``CHECK_NAMES``; a check that does not apply counts as passed). It is trained on the model's
own finalists of training captions, labelled by the world's rules on their videos (``worldreel
train judge``), the way a reward model is trained on labelled samples and read for best-of-N
(Cobbe et al. 2021 train verifiers on a generator's own samples; Ma et al. 2025 search
diffusion noises with verifiers). Sampling ``judge`` W adds W times its standardised expected
score to the finalists' reading (``steer.pick_finalist``).

Why pixels and not latents: a judge of the same size reading the latents and the probe's
occupancy (8x8 cells, 9 latent frames) picked worse than the hand-set reader on held-out
captions (0.635 against 0.677, 48 captions; docs/training.md, "Recipe notes"): the failures
it should see (an object missing for a few frames, a flicker to a neighbouring hue, an arc
that does not fall) are drawn in pixel frames, 4 to a latent frame.

Every colour goes through one shared *slot*: the slot of colour c reads c's track over the
pixel frames, how much of every frame all colours cover together, and what the caption states
of c (how many objects of c, their motions, whether one passes behind the pillar or hits
another) and of the scene; the slots are summed and maxed, so a colour combination never seen
in training is read with the same weights as every other.
"""
from __future__ import annotations

import torch
from torch import nn

from worldreel.data.facts import CAMERAS, COLORS, MOTIONS

CHECK_NAMES = ("presence", "extras", "permanence", "motion", "gravity", "camera", "stability")  # eval.worldbench.CHECKS
COLOR_FACTS = len(MOTIONS) + 3  # per colour: objects per motion, behind the pillar, in a hit, all of them
SCENE_FACTS = len(CAMERAS) + 2  # the camera, a pillar, how many objects
TRACK_FEATURES = 5  # per colour and frame: cover, centre x, centre y, spread x, spread y (eval.tracking.palette_tracks)
JUDGE_WIDTH = 64
MAX_JUDGE = 10.0


def fact_features(facts) -> tuple[torch.Tensor, torch.Tensor]:
    """A caption's facts as (per colour (len(COLORS), COLOR_FACTS), the scene's (SCENE_FACTS,)),
    counts divided by the world's most objects (3)."""
    per_color = torch.zeros(len(COLORS), COLOR_FACTS)
    hit = {o.hits for o in facts.objects if o.hits is not None}
    for i, o in enumerate(facts.objects):
        if o.color not in COLORS:
            continue
        c = COLORS.index(o.color)
        if o.motion in MOTIONS:
            per_color[c, MOTIONS.index(o.motion)] += 1
        per_color[c, len(MOTIONS)] += float(o.behind_pillar)
        per_color[c, len(MOTIONS) + 1] += float(o.hits is not None or i in hit)
        per_color[c, len(MOTIONS) + 2] += 1
    scene = torch.zeros(SCENE_FACTS)
    if facts.camera in CAMERAS:
        scene[CAMERAS.index(facts.camera)] = 1
    scene[len(CAMERAS)] = float(facts.pillar)
    scene[len(CAMERAS) + 1] = len(facts.objects)
    return per_color / 3, scene / torch.tensor([1.0] * (len(CAMERAS) + 1) + [3.0])


class Judge(nn.Module):
    """(palette tracks (B, K, F, TRACK_FEATURES), colour facts (B, K, COLOR_FACTS), scene facts
    (B, SCENE_FACTS)) -> each check's pass logit (B, len(CHECK_NAMES))."""

    def __init__(self, channels: int = TRACK_FEATURES, width: int = JUDGE_WIDTH, colors: int = len(COLORS)):
        super().__init__()
        self.channels, self.width, self.colors = channels, width, colors
        w = width
        self.time = nn.Sequential(nn.Conv1d(channels + 1 + COLOR_FACTS + SCENE_FACTS, w, 3, padding=1), nn.GELU(),
                                  nn.Conv1d(w, w, 3, padding=2, dilation=2), nn.GELU(),
                                  nn.Conv1d(w, w, 3, padding=4, dilation=4), nn.GELU())
        self.slot = nn.Sequential(nn.Linear(2 * w + COLOR_FACTS, w), nn.GELU())
        self.head = nn.Sequential(nn.Linear(2 * w + SCENE_FACTS, w), nn.GELU(), nn.Linear(w, len(CHECK_NAMES)))

    def forward(self, tracks: torch.Tensor, color_facts: torch.Tensor, scene_facts: torch.Tensor) -> torch.Tensor:
        b, k, f, _ = tracks.shape
        cover = tracks[..., 0].sum(1)  # (B, F): every colour's cover together
        per = torch.cat([tracks.transpose(2, 3),  # each colour's slot input: (B, K, T + 1 + CF + S, F)
                         cover[:, None, None].expand(-1, k, -1, -1),
                         color_facts[..., None].expand(-1, -1, -1, f),
                         scene_facts[:, None, :, None].expand(-1, k, -1, f)], 2)
        t = self.time(per.flatten(0, 1))  # (B K, W, F)
        slots = self.slot(torch.cat([t.mean(2), t.amax(2), color_facts.flatten(0, 1)], 1)).view(b, k, -1)  # (B, K, W)
        return self.head(torch.cat([slots.sum(1), slots.amax(1), scene_facts], 1))


def expected_score(logits: torch.Tensor) -> torch.Tensor:
    """(B, checks) pass logits -> (B,) the expected fraction of checks passed."""
    return torch.sigmoid(logits.float()).mean(1)


@torch.no_grad()
def read_judge_all(judge: Judge, tracks: torch.Tensor, color_facts: torch.Tensor, scene_facts: torch.Tensor,
                   chunk: int = 512) -> list[float]:
    """The judge's expected score of each of many clips (``Judge``'s inputs for all of them),
    read ``chunk`` at a time (training and bench judge read thousands of finalists)."""
    was_training = judge.training
    judge.eval()
    logits = torch.cat([judge(tracks[i], color_facts[i], scene_facts[i]) for i in torch.arange(len(tracks)).split(chunk)])
    judge.train(was_training)
    return expected_score(logits).tolist()


@torch.no_grad()
def read_judge(judge: Judge, tracks: torch.Tensor, facts) -> float:
    """The judge's expected score of one clip, given its palette tracks (K, F, TRACK_FEATURES)
    (``eval.tracking.palette_tracks`` of its decoded frames), for the caption's facts."""
    per_color, scene = fact_features(facts)
    device = next(judge.parameters()).device
    return float(expected_score(judge(tracks[None].to(device), per_color[None].to(device), scene[None].to(device)))[0])
