"""Captions for the reel world, and the parser that reads them (and user prompts) back.

``caption(facts, rng)`` says everything in ``SceneFacts`` with surface variety (synonyms,
articles, clause order, counts, optional static camera); ``parse_caption(text)`` maps any
generated caption, or a user prompt in the same vocabulary, back to the facts. Both sides
work on *canonical* facts (``canonical_facts``): objects sorted by (colour, shape, motion,
behind, hit target), a hit pointing at the first object of that colour and shape, because
a caption cannot say which of two identical objects was hit or in which order the
objects were created. The round trip ``parse_caption(caption(f, rng)) == canonical_facts(f)``
is tested on thousands of random scenes.

Grammar the parser understands (words, case and punctuation are free):
    subject   := [count] colour [adjective] shape predicate
    predicate := ... verb [left|right] ... [behind [a|the] [gray] pillar] [hit-verb [count] colour shape]
    camera    := ... camera|view|pans ... [left|right|static|still]
    pillar    := [a|the] [gray|grey] pillar ...   (a clause of its own)
An object named only as a hit target ("... and hits an orange box") rests.
"""
from __future__ import annotations

import re

import numpy as np

from worldreel.data.facts import COLORS, MAX_OBJECTS, MOTIONS, SHAPES, ObjectFacts, SceneFacts
from worldreel.errors import UserError

VOCABULARY = (
    "colours: " + ", ".join(COLORS) + "; "
    "shapes: ball, box (also sphere, circle, block, cube, square, crate); "
    "motions: falls (drops), rolls or slides left/right, is thrown left/right (tossed), rests (sits still); "
    "counts: a/one, two, three (at most 3 objects); "
    "extras: '... behind a gray pillar', '... and hits the blue box', 'the camera pans left/right' (default: static)"
)

# ---------------------------------------------------------------------------------------
# Canonical facts


def _target_key(facts: SceneFacts, o: ObjectFacts) -> tuple[int, int]:
    if o.hits is None:
        return (-1, -1)
    t = facts.objects[o.hits]
    return (COLORS.index(t.color), SHAPES.index(t.shape))


def canonical_order(facts: SceneFacts) -> tuple[SceneFacts, list[int]]:
    """Canonical facts and the permutation used: ``canonical.objects[k] = facts.objects[order[k]]``."""
    objs = facts.objects
    keys = [
        (COLORS.index(o.color), SHAPES.index(o.shape), MOTIONS.index(o.motion), o.behind_pillar, _target_key(facts, o))
        for o in objs
    ]
    order = sorted(range(len(objs)), key=keys.__getitem__)
    first_of: dict[tuple[str, str], int] = {}
    for k, old in enumerate(order):
        first_of.setdefault((objs[old].color, objs[old].shape), k)
    new = []
    for old in order:
        o = objs[old]
        hits = None if o.hits is None else first_of[(objs[o.hits].color, objs[o.hits].shape)]
        new.append(ObjectFacts(o.color, o.shape, o.motion, o.behind_pillar, hits))
    pillar = facts.pillar or any(o.behind_pillar for o in objs)
    return SceneFacts(objects=tuple(new), camera=facts.camera, pillar=pillar, extras=dict(facts.extras)), order


def canonical_facts(facts: SceneFacts) -> SceneFacts:
    """Facts in the canonical order that ``parse_caption`` returns."""
    return canonical_order(facts)[0]


# ---------------------------------------------------------------------------------------
# Caption generation

_SHAPE_NOUN = {"ball": (("ball", "balls", 0.9), ("sphere", "spheres", 0.1)), "box": (("box", "boxes", 0.8), ("block", "blocks", 0.2))}
_NUMBER = {2: "two", 3: "three"}
# (singular, plural) verb phrases per motion; {dir} is "left"/"right". Ball/box-only entries are keyed by shape.
_PHRASES: dict[str, list[tuple[str, str]]] = {
    "falls": [("falls", "fall"), ("drops", "drop"), ("falls down", "fall down"), ("is dropped", "are dropped"),
              ("falls from above", "fall from above")],
    "falls/ball": [("falls and bounces on the floor", "fall and bounce on the floor"), ("drops and bounces", "drop and bounce")],
    "falls/box": [("falls and lands on the floor", "fall and land on the floor"), ("drops and settles", "drop and settle")],
    "rolls/ball": [("rolls {dir}", "roll {dir}"), ("rolls to the {dir}", "roll to the {dir}"),
                   ("rolls {dir}ward", "roll {dir}ward"), ("rolls along the floor to the {dir}", "roll along the floor to the {dir}")],
    "rolls/box": [("slides {dir}", "slide {dir}"), ("slides to the {dir}", "slide to the {dir}"),
                  ("slides {dir}ward", "slide {dir}ward"), ("slides along the floor to the {dir}", "slide along the floor to the {dir}")],
    "thrown": [("is thrown {dir}", "are thrown {dir}"), ("is thrown to the {dir}", "are thrown to the {dir}"),
               ("gets tossed to the {dir}", "get tossed to the {dir}"), ("is tossed {dir}", "are tossed {dir}"),
               ("flies to the {dir} in an arc", "fly to the {dir} in an arc")],
    "rests": [("rests", "rest"), ("rests on the floor", "rest on the floor"), ("sits still", "sit still"),
              ("stays still", "stay still")],
    "rests/ball": [("lies still", "lie still")],
    "rests/box": [("stands still", "stand still")],
}
_HIT = [("hits", "hit"), ("bumps into", "bump into"), ("knocks into", "knock into"), ("collides with", "collide with"),
        ("strikes", "strike")]
_BEHIND = ["behind a gray pillar", "behind the gray pillar", "behind a grey pillar", "passing behind a gray pillar"]
_PILLAR_CLAUSE = ["a gray pillar stands on the floor", "there is a gray pillar", "a grey pillar stands in the scene"]
_PAN = ["the camera pans {dir}", "camera pans to the {dir}", "the camera is panning {dir}", "the view pans {dir}"]
_STATIC = ["the camera is static", "the camera stays still", "the camera is fixed", "the camera does not move"]
_JOIN = ["; ", ", and ", ". ", " and ", ", while "]


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _noun(rng: np.random.Generator, color: str, shape: str, count: int, article: str | None = None) -> str:
    words = _SHAPE_NOUN[shape]
    r, acc = float(rng.random()), 0.0
    sing, plur = words[-1][:2]
    for s, p, w in words:
        acc += w
        if r < acc:
            sing, plur = s, p
            break
    if count > 1:
        return f"{_NUMBER[count]} {color} {plur}"
    if article is None:
        article = "one" if rng.random() < 0.08 else indefinite_article(color)
    return f"{article} {color} {sing}"


def indefinite_article(word: str) -> str:
    """"an" before a vowel ("an orange"), else "a"."""
    return "an" if word[0] in "aeiou" else "a"


def _verb_phrase(rng: np.random.Generator, o: ObjectFacts, plural: bool, may_bounce: bool) -> str:
    base, _, direction = o.motion.partition("_")
    options = list(_PHRASES.get(base, []))
    extra = _PHRASES.get(f"{base}/{o.shape}", [])
    if base == "falls" and not may_bounce:
        extra = []  # "bounces on the floor" only when nothing else is said about its landing
    if base == "rolls":
        options = list(extra)
    else:
        options += extra
    phrase = _pick(rng, options)[1 if plural else 0]
    return phrase.format(dir=direction)


def caption(facts: SceneFacts, rng: np.random.Generator) -> str:
    """A caption stating exactly ``facts``, with surface variety drawn from ``rng``."""
    facts = canonical_facts(facts)
    objs = facts.objects
    # 1. Group identical objects: the caption counts them ("two red balls fall").
    groups: list[tuple[ObjectFacts, int, int]] = []  # (facts, count, first index)
    for i, o in enumerate(objs):
        if groups and groups[-1][0] == o:
            groups[-1] = (o, groups[-1][1] + 1, groups[-1][2])
        else:
            groups.append((o, 1, i))
    targets = {o.hits for o in objs if o.hits is not None}
    # 2. A resting single target may be named only as the target ("... and hits an orange box").
    clauses: list[str] = []
    for o, count, first in groups:
        implicit = (
            first in targets and count == 1 and o.motion == "rests" and o.hits is None and not o.behind_pillar
            and sum(1 for g in groups if (g[0].color, g[0].shape) == (o.color, o.shape)) == 1
        )
        if implicit and rng.random() < 0.5:
            continue
        text = _noun(rng, o.color, o.shape, count) + " " + _verb_phrase(rng, o, count > 1, o.hits is None)
        if o.behind_pillar:
            text += (", " if o.motion.startswith("thrown") else " ") + _pick(rng, _BEHIND)
        if o.hits is not None:
            t = objs[o.hits]
            article = "the" if rng.random() < 0.5 else indefinite_article(t.color)
            text += " and " + _pick(rng, _HIT)[1 if count > 1 else 0] + " " + _noun(rng, t.color, t.shape, 1, article)
        clauses.append(text)
    # 3. Pillar (when nobody passes behind it) and camera clauses.
    if facts.pillar and not any(o.behind_pillar for o in objs):
        clauses.insert(int(rng.integers(len(clauses) + 1)), _pick(rng, _PILLAR_CLAUSE))
    order = rng.permutation(len(clauses))
    clauses = [clauses[k] for k in order]
    camera = None
    if facts.camera != "static":
        camera = _pick(rng, _PAN).format(dir=facts.camera.split("_")[1])
    elif rng.random() < 0.25:
        camera = _pick(rng, _STATIC)
    text = clauses[0]
    for c in clauses[1:]:
        text += _pick(rng, _JOIN) + c
    if camera is not None:
        if rng.random() < 0.25 and facts.camera != "static":
            text = "as " + camera + ", " + text
        else:
            text += _pick(rng, ["; ", ", ", ". ", " while "]) + camera
    if rng.random() < 0.5:
        text = text[0].upper() + text[1:]
        text = re.sub(r"\. ([a-z])", lambda m: ". " + m.group(1).upper(), text)
    return text


# ---------------------------------------------------------------------------------------
# Parsing

_COUNT = {"a": 1, "an": 1, "one": 1, "the": 1, "another": 1, "single": 1, "two": 2, "three": 3, "four": 4, "five": 5,
          "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10, "many": 4, "several": 4}
_COUNT.update({str(k): k for k in range(1, 100)})  # digits; more than 3 objects is an error below
_SHAPES = {
    "ball": ("ball", False), "balls": ("ball", True), "sphere": ("ball", False), "spheres": ("ball", True),
    "circle": ("ball", False), "circles": ("ball", True), "box": ("box", False), "boxes": ("box", True),
    "block": ("box", False), "blocks": ("box", True), "cube": ("box", False), "cubes": ("box", True),
    "square": ("box", False), "squares": ("box", True), "crate": ("box", False), "crates": ("box", True),
}
_ADJECTIVES = {"small", "big", "large", "little", "tiny", "bright", "single", "bouncy", "solid", "round", "flat"}
_MOTION_WORDS: dict[str, str] = {}
for _base, _words in {
    "falls": "fall falls falling fell drop drops dropping dropped bounce bounces bouncing",
    "rolls": "roll rolls rolling rolled slide slides sliding slid glide glides gliding move moves moving travel travels",
    "thrown": "thrown throw throws tossed toss tosses launched launch flung fling flies fly flying",
    "rests": "rest rests resting sit sits sitting stay stays staying lie lies lying stand stands standing still stationary motionless",
}.items():
    for _w in _words.split():
        _MOTION_WORDS[_w] = _base
_HIT_WORDS = set("hit hits hitting strikes strike striking bumps bump bumping knocks knock knocking collides collide "
                 "colliding crashes crash crashing onto".split())
_PASSIVE = {"is", "gets", "get", "was", "are", "being"}
_LEFT = {"left", "leftward", "leftwards"}
_RIGHT = {"right", "rightward", "rightwards"}
_CAMERA = {"camera", "view", "pans", "pan", "panning"}
_STATIC_WORDS = {"static", "still", "fixed", "steady", "stationary", "locked"}
_PILLAR = {"pillar", "pillars", "column"}
_STOP = set(_COUNT) | _ADJECTIVES | {"and", "then", "while", "as", "with", "of", "to", "in", "on", "into", "by", "is", "are"}


def _error(message: str) -> UserError:
    return UserError(f"{message}. Vocabulary: {VOCABULARY}", param="prompt")


def _noun_phrase(tokens: list[str], i: int) -> tuple[int, str, str, int] | None:
    """An object noun phrase starting at token i: (end, colour, shape, count), or None."""
    count, j = None, i
    if tokens[j] in _COUNT:
        count, j = _COUNT[tokens[j]], j + 1
    while j < len(tokens) and tokens[j] in _ADJECTIVES:
        j += 1
    if j >= len(tokens) or tokens[j] not in COLORS:
        return None
    color, j = tokens[j], j + 1
    while j < len(tokens) and tokens[j] in _ADJECTIVES:
        j += 1
    if j >= len(tokens) or tokens[j] not in _SHAPES:
        word = tokens[j] if j < len(tokens) else "(nothing)"
        raise _error(f'unknown shape "{word}" after "{color}"')
    shape, plural = _SHAPES[tokens[j]]
    if count is None or (plural and count == 1):
        count = 2 if plural else 1
    return j + 1, color, shape, count


class _Subject:
    def __init__(self, color: str, shape: str, count: int):
        self.color, self.shape, self.count = color, shape, count
        self.words: list[str] = []  # predicate words before any hit verb
        self.behind = False
        self.hit_pending = False  # a hit verb was seen, its target not yet
        self.passive_pending = False  # "is hit by ...": the next noun phrase is the hitter
        self.target: tuple[str, str] | None = None
        self.hit_by: list[tuple[str, str]] = []

    def motion(self) -> str:
        name = f"{self.color} {self.shape}"
        base = next((_MOTION_WORDS[w] for w in self.words if w in _MOTION_WORDS), None)
        if base is None:
            unknown = next((w for w in self.words if w not in _STOP), None)
            if unknown is None:
                raise _error(f'say what the {name} does')
            raise _error(f'unknown verb "{unknown}" for the {name}')
        if base in ("falls", "rests"):
            return base
        direction = next(("left" if w in _LEFT else "right" for w in self.words if w in _LEFT | _RIGHT), None)
        if direction is None:
            raise _error(f'say which way the {name} goes ("{base} left" or "{base} right")')
        return f"{base}_{direction}"


def parse_caption(text: str) -> SceneFacts:
    """Scene facts stated by a caption or prompt; UserError(param="prompt") on anything outside the vocabulary."""
    if not isinstance(text, str) or not text.strip():
        raise UserError(f"the prompt is empty. Vocabulary: {VOCABULARY}", param="prompt")
    tokens = re.findall(r"[a-z]+|\d+", text.lower().replace("grey", "gray").replace("doesn't", "does not"))
    subjects: list[_Subject] = []
    cur: _Subject | None = None
    camera_words: list[str] = []
    mode = "none"  # what the current words belong to: "subject", "camera", "pillar", "none"
    pillar = False
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        np_ = _noun_phrase(tokens, i)
        if np_ is not None:
            end, color, shape, count = np_
            if mode == "subject" and cur.passive_pending:
                cur.hit_by.append((color, shape))
                cur.passive_pending = False
            elif mode == "subject" and cur.hit_pending and cur.target is None:
                cur.target = (color, shape)
                cur.hit_pending = False
            else:
                cur = _Subject(color, shape, count)
                subjects.append(cur)
                mode = "subject"
            i = end
            continue
        if tok in _SHAPES:
            prev = tokens[i - 1] if i > 0 else None
            if prev is None or prev in _STOP:
                raise _error(f'say the colour of the {tok}')
            raise _error(f'unknown colour "{prev}"')
        if tok in _PILLAR:
            pillar = True
            recent = tokens[max(0, i - 3):i]
            if mode == "subject" and "behind" in recent:
                cur.behind = True
            else:
                mode = "pillar"
            i += 1
            continue
        if tok in _CAMERA:
            if mode != "camera":
                # "a static camera", "with a still view": a static word just before counts, a direction does not
                camera_words.extend(w for w in tokens[max(0, i - 2):i] if w in _STATIC_WORDS)
            mode = "camera"
        if mode == "camera":
            camera_words.append(tok)
        elif mode == "subject":
            if tok == "behind":
                cur.behind = pillar = True
            elif tok in _HIT_WORDS:
                passive = i + 1 < len(tokens) and tokens[i + 1] == "by" and i > 0 and tokens[i - 1] in _PASSIVE
                if passive:
                    cur.passive_pending = True
                elif cur.target is None:
                    cur.hit_pending = True
            elif not cur.hit_pending and cur.target is None and not cur.passive_pending:
                cur.words.append(tok)
        i += 1
    if not subjects:
        raise _error("no object found (say e.g. 'a red ball falls')")
    # 1. Camera.
    camera = "static"
    if any(w in ("pan", "pans", "panning", "moves", "moving", "sweeps", "tracks", "turns") for w in camera_words):
        direction = next(("left" if w in _LEFT else "right" for w in camera_words if w in _LEFT | _RIGHT), None)
        if direction is None:
            raise _error('say which way the camera pans ("pans left" or "pans right")')
        camera = f"pan_{direction}"
    # 2. Objects in order of mention, then objects named only as hit targets (they rest).
    motions = [s.motion() for s in subjects]
    objects: list[dict] = []
    for s, m in zip(subjects, motions):
        for _ in range(s.count):
            objects.append({"color": s.color, "shape": s.shape, "motion": m, "behind": s.behind, "subject": s})
    for s in subjects:
        for key in ([s.target] if s.target else []) + s.hit_by:
            if not any((o["color"], o["shape"]) == key for o in objects):
                if s.hit_by and key in s.hit_by:
                    raise _error(f'say what the {key[0]} {key[1]} does')
                objects.append({"color": key[0], "shape": key[1], "motion": "rests", "behind": False, "subject": None})
    if len(objects) > MAX_OBJECTS:
        raise _error(f"at most {MAX_OBJECTS} objects, the prompt names {len(objects)}")
    first = {}
    for k, o in enumerate(objects):
        first.setdefault((o["color"], o["shape"]), k)
    hits: list[int | None] = [None] * len(objects)
    for k, o in enumerate(objects):
        s = o["subject"]
        if s is not None and s.target is not None:
            hits[k] = first[s.target]
        if s is not None:
            for key in s.hit_by:
                hitter = first[key]
                hits[hitter] = first[(s.color, s.shape)]
    for k, h in enumerate(hits):
        if h is not None and (objects[h]["color"], objects[h]["shape"]) == (objects[k]["color"], objects[k]["shape"]):
            raise _error(f'the {objects[k]["color"]} {objects[k]["shape"]} cannot hit itself')
    facts = SceneFacts(
        objects=tuple(ObjectFacts(o["color"], o["shape"], o["motion"], o["behind"], h) for o, h in zip(objects, hits)),
        camera=camera,
        pillar=pillar,
    )
    return canonical_facts(facts)
