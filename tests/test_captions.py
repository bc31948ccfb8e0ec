"""Captions and their parser: the round trip, user prompts, errors naming the vocabulary."""
import numpy as np
import pytest

from worldreel.data.captions import VOCABULARY, canonical_facts, caption, parse_caption
from worldreel.data.facts import CAMERAS, COLORS, MOTIONS, SHAPES, ObjectFacts, SceneFacts, facts_from_dict, facts_to_dict
from worldreel.errors import UserError


def random_facts(rng: np.random.Generator) -> SceneFacts:
    """Any valid facts: distinct (colour, shape) groups, counted groups identical, hits across groups."""
    total = int(rng.integers(1, 4))
    counts = []
    while sum(counts) < total:
        counts.append(int(rng.integers(1, total - sum(counts) + 1)))
    pairs = set()
    while len(pairs) < len(counts):
        pairs.add((str(rng.choice(COLORS)), str(rng.choice(SHAPES))))
    pairs = sorted(pairs)
    rng.shuffle(pairs)
    groups = []
    for (color, shape), count in zip(pairs, counts):
        groups.append([color, shape, str(rng.choice(MOTIONS)), bool(rng.random() < 0.2), None, count])
    starts = np.cumsum([0] + counts)
    for g, group in enumerate(groups):
        others = [h for h in range(len(groups)) if h != g]
        if others and rng.random() < 0.4:
            h = int(rng.choice(others))
            group[4] = int(starts[h] + rng.integers(counts[h]))  # any member of the target group
    objects = tuple(ObjectFacts(c, s, m, b, t) for c, s, m, b, t, n in groups for _ in range(n))
    behind = any(o.behind_pillar for o in objects)
    return SceneFacts(objects, str(rng.choice(CAMERAS)), behind or bool(rng.random() < 0.3))


def test_round_trip_thousands_of_random_scenes():
    rng = np.random.default_rng(0)
    seen = set()
    for k in range(3000):
        facts = random_facts(rng)
        text = caption(facts, np.random.default_rng(k))
        seen.add(text)
        assert parse_caption(text) == canonical_facts(facts), text
    assert len(seen) > 2900  # surface variety: nearly every caption is different


def test_round_trip_of_sampled_scenes_and_jsonl_facts():
    from worldreel.data.world import sample_scene

    for seed in range(60):
        facts = sample_scene(seed).facts
        assert canonical_facts(facts) == facts  # sample_scene returns canonical facts
        for k in range(3):
            assert parse_caption(caption(facts, np.random.default_rng(k))) == facts
        assert facts_from_dict(facts_to_dict(facts)) == facts


def test_caption_is_deterministic_and_varied():
    facts = SceneFacts((ObjectFacts("red", "ball", "falls"), ObjectFacts("blue", "box", "rolls_left", hits=0)), "pan_left")
    assert caption(facts, np.random.default_rng(5)) == caption(facts, np.random.default_rng(5))
    texts = {caption(facts, np.random.default_rng(k)) for k in range(50)}
    assert len(texts) > 30
    assert all("left" in t for t in texts)


@pytest.mark.parametrize("text, expected", [
    ("a red ball falls", [("red", "ball", "falls", False, None)]),
    ("red ball rolling to the left", [("red", "ball", "rolls_left", False, None)]),
    ("Red Sphere dropping", [("red", "ball", "falls", False, None)]),
    ("two green boxes slide right; camera pans left", [("green", "box", "rolls_right", False, None)] * 2),
    ("a cyan ball rolls right behind a gray pillar and hits an orange box",
     [("cyan", "ball", "rolls_right", True, 1), ("orange", "box", "rests", False, None)]),
    ("a yellow ball is thrown to the left; the camera pans right", [("yellow", "ball", "thrown_left", False, None)]),
    ("the blue box rests and is hit by the white ball; the white ball is tossed left",
     [("blue", "box", "rests", False, None), ("white", "ball", "thrown_left", False, 0)]),
    ("three magenta cubes sit still", [("magenta", "box", "rests", False, None)] * 3),
])
def test_user_prompts(text, expected):
    facts = parse_caption(text)
    assert [(o.color, o.shape, o.motion, o.behind_pillar, o.hits) for o in facts.objects] == expected


def test_camera_and_pillar_phrases():
    assert parse_caption("a red ball falls; the camera pans left").camera == "pan_left"
    assert parse_caption("as the camera pans right, a red ball rolls left").camera == "pan_right"
    assert parse_caption("a red ball rolls left, static camera").camera == "static"
    assert parse_caption("a red ball rolls left while the camera stays still").objects[0].motion == "rolls_left"
    facts = parse_caption("a red ball falls; a gray pillar stands on the floor")
    assert facts.pillar and not facts.objects[0].behind_pillar and facts.objects[0].motion == "falls"
    assert parse_caption("a red ball rolls right behind the grey pillar").objects[0].behind_pillar


@pytest.mark.parametrize("text, word", [
    ("a purple ball falls", "purple"),
    ("a red triangle falls", "triangle"),
    ("a red ball jumps", "jumps"),
    ("a ball falls", "colour"),
    ("a red ball rolls", "left"),
    ("a red ball", "does"),
    ("a red ball falls; the camera pans", "camera"),
    ("four red balls fall", "at most 3"),
    ("two red balls fall and two blue boxes rest", "at most 3"),
    ("the sky is dark", "no object"),
])
def test_errors_name_the_problem_and_list_the_vocabulary(text, word):
    with pytest.raises(UserError) as err:
        parse_caption(text)
    assert err.value.param == "prompt"
    assert word in str(err.value)
    assert "magenta" in str(err.value) and "thrown" in str(err.value)


@pytest.mark.parametrize("text", ["", "   ", None])
def test_empty_prompt(text):
    with pytest.raises(UserError) as err:
        parse_caption(text)
    assert err.value.param == "prompt"


def test_vocabulary_lists_every_colour():
    assert all(c in VOCABULARY for c in COLORS)
