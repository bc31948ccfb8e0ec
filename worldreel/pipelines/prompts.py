"""Prompt rewriting: a short or loosely worded prompt -> the detailed caption style of the reel world.

The model was trained on captions like "a red ball falls and bounces on the floor" or
"a cyan ball rolls right behind a gray pillar and hits an orange box; the camera pans
left" (``data/captions.py``). A user types "red sphere dropping" or "two boxes sliding".
The rewriter closes that gap:

* **Rules (default, offline, deterministic).** Synonyms are normalised ("sphere" -> ball,
  "crimson" -> red, "dropping" -> falls, "tossed" -> thrown, "moving to the left" -> left),
  the objects, counts, motions, the pillar and the camera are read into ``SceneFacts``,
  and what the prompt leaves out is filled in: an unstated colour, shape, motion or
  direction is drawn from the generation seed (so a seed still means one video) and a
  note says what was chosen; an object that is hit and has no verb of its own rests; an
  unstated camera is static, the world's default that captions leave out. The facts are
  then written as a caption by ``data.captions.caption``. A prompt that already reads as
  a full caption is passed on unchanged.
* **A chat model (optional).** Given an OpenAI-compatible endpoint through explicit
  arguments (``ChatEndpoint``; never the environment), the prompt is rewritten by the
  chat model, and its answer is kept only if ``parse_caption`` reads it; otherwise (or if
  the request fails) the rules run, and a note says why.
"""
from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import numpy as np

from worldreel.data.facts import COLORS, MOTIONS, ObjectFacts, SceneFacts
from worldreel.errors import UserError

# -- vocabulary ---------------------------------------------------------------------------

# Phrases rewritten before reading words (longest first so "to the left" wins over "left").
PHRASES = {
    "to the left": "left", "to the right": "right", "towards the left": "left", "towards the right": "right",
    "leftwards": "left", "leftward": "left", "rightwards": "right", "rightward": "right",
    "from right to left": "left", "from left to right": "right",
    "grey": "gray", "tracking shot": "camera pans", "pans across": "pans",
}
COLOR_WORDS = {
    "red": "red", "crimson": "red", "scarlet": "red", "ruby": "red",
    "green": "green", "lime": "green", "emerald": "green",
    "blue": "blue", "navy": "blue", "azure": "blue", "cobalt": "blue",
    "yellow": "yellow", "gold": "yellow", "golden": "yellow", "lemon": "yellow",
    "magenta": "magenta", "purple": "magenta", "pink": "magenta", "violet": "magenta", "fuchsia": "magenta",
    "cyan": "cyan", "teal": "cyan", "turquoise": "cyan", "aqua": "cyan",
    "orange": "orange", "amber": "orange",
    "white": "white", "silver": "white",
}
SHAPE_WORDS = {
    "ball": "ball", "balls": "ball", "sphere": "ball", "spheres": "ball", "orb": "ball", "orbs": "ball",
    "circle": "ball", "circles": "ball", "marble": "ball", "marbles": "ball", "disc": "ball", "disk": "ball",
    "box": "box", "boxes": "box", "cube": "box", "cubes": "box", "block": "box", "blocks": "box",
    "square": "box", "squares": "box", "crate": "box", "crates": "box", "brick": "box", "bricks": "box",
    # no shape stated: the rules choose one and say so
    "object": None, "objects": None, "thing": None, "things": None, "shape": None, "shapes": None, "something": None,
}
PLURALS = {"balls", "spheres", "orbs", "circles", "marbles", "boxes", "cubes", "blocks", "squares", "crates", "bricks",
           "objects", "things", "shapes"}
COUNT_WORDS = {"a": 1, "an": 1, "one": 1, "single": 1, "two": 2, "pair": 2, "couple": 2, "three": 3, "several": 3}
MOTION_WORDS = {
    **dict.fromkeys("fall falls falling fell drop drops dropping dropped bounce bounces bouncing plummets plummeting "
                    "descends descending tumbles tumbling".split(), "falls"),
    **dict.fromkeys("roll rolls rolling rolled slide slides sliding slid glide glides gliding move moves moving moved "
                    "travel travels travelling traveling goes go going runs running drifts drifting skids skidding "
                    "scoots pushed".split(), "rolls"),
    **dict.fromkeys("thrown throw throws throwing tossed toss tosses tossing flung fling launched launch lobbed "
                    "hurled flies flying arcs arcing leaps jumps".split(), "thrown"),
    **dict.fromkeys("rest rests resting sits sitting still stationary lies lying stays staying idle motionless "
                    "parked waits waiting".split(), "rests"),
}
HIT_WORDS = set("hit hits hitting strikes striking collides colliding bumps bumping knocks knocking crashes crashing".split())
PILLAR_WORDS = set("pillar pillars column columns post pole wall occluder".split())
CAMERA_WORDS = set("camera pan pans panning panned view shot".split())
STILL_CAMERA = set("static still fixed stationary locked steady".split())
MODIFIERS = set("the small big large little tiny bright shiny solid round".split())
# Words the captions themselves use (data/captions.py): a prompt made only of these (and
# that states everything) is already in the caption style and is passed on unchanged.
CAPTION_STYLE = set(COLORS) | set(
    "a an one two three the ball balls sphere spheres box boxes block blocks falls fall drops drop down is are "
    "dropped from above and bounces bounce on floor lands land settles settle rolls roll to left right leftward "
    "rightward along slides slide thrown gets get tossed flies fly in arc rests rest sits sit still stays stay "
    "lies lie stands stand hits hit bumps bump into knocks knock collides collide with strikes strike behind gray "
    "grey pillar passing there stands scene camera pans pan panning view static does not move while as ;".split()
)


_VERB_NAMES = {"falls": "falls", "rolls": "rolls/slides", "thrown": "is thrown", "rests": "rests"}


@dataclass
class Rewrite:
    """What the model is given, and why."""

    text: str  # the prompt the model sees
    facts: SceneFacts | None = None  # what the text states (None when passed through unread)
    notes: list[str] = field(default_factory=list)  # what was filled in or changed, in words
    source: str = "rules"  # "rules", "endpoint" or "unchanged"


@dataclass
class ChatEndpoint:
    """An OpenAI-compatible chat-completions endpoint, configured explicitly (never from the environment)."""

    url: str  # base URL, e.g. "http://localhost:8000/v1" (".../chat/completions" is appended)
    model: str  # model name sent in the request
    api_key: str | None = None  # sent as "Authorization: Bearer ..." when given
    timeout: float = 15.0  # seconds before giving up and using the rules


# -- reading a prompt ---------------------------------------------------------------------


def _words(text: str) -> list[str]:
    text = " " + text.lower().replace("-", " ") + " "
    for phrase, repl in sorted(PHRASES.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(f" {phrase} ", f" {repl} ").replace(f" {phrase}", f" {repl}")
    text = re.sub(r"[;,.!?:]", " ; ", text)  # clause breaks stay as ';' tokens
    return text.split()


@dataclass
class _Obj:
    count: int
    color: str | None
    shape: str | None
    motion: str | None = None  # falls / rolls / thrown / rests
    direction: str | None = None  # left / right
    behind: bool = False
    hits: int | None = None  # index into the list of _Obj


def read_prompt(prompt: str) -> tuple[list[_Obj], str | None, bool, list[str]]:
    """Objects, camera ("static", "pan_left", "pan_right" or None when unstated), pillar flag,
    and the synonyms read as world words ("'sphere' as ball")."""
    words = _words(prompt)
    read_as = []
    for w in dict.fromkeys(words):
        world = COLOR_WORDS.get(w) or SHAPE_WORDS.get(w) or _VERB_NAMES.get(MOTION_WORDS.get(w))
        if world and w not in CAPTION_STYLE:
            read_as.append(f"'{w}' as {world}")
    # 1. Camera phrases: a camera word and the few words after it, up to a direction
    #    ("the camera slowly pans to the right") or a word for a still camera.
    camera, keep, i = None, [], 0
    while i < len(words):
        if words[i] not in CAMERA_WORDS:
            keep.append(words[i])
            i += 1
            continue
        if keep and keep[-1] in STILL_CAMERA:  # "a static camera"
            camera = "static"
            keep.pop()
        while keep and keep[-1] in ("the", "a"):
            keep.pop()
        j = i + 1
        for k in range(i + 1, min(len(words), i + 5)):
            if words[k] == ";":
                break
            if words[k] in ("left", "right"):
                camera, j = f"pan_{words[k]}", k + 1
                break
            if words[k] in STILL_CAMERA:
                camera, j = "static", k + 1
                break
        i = j
    words = keep
    pillar = any(w in PILLAR_WORDS for w in words)
    # 2. Objects: each shape word with the modifiers just before it. "the ball" / "the blue
    #    box" after a matching object is that object again, not a new one.
    nouns = [i for i, w in enumerate(words) if w in SHAPE_WORDS]
    objs: list[_Obj] = []
    owner, starts = [], []  # per noun: the object it names, and where its modifiers start
    for i in nouns:
        j, color, count = i - 1, None, None
        while j >= 0 and (words[j] in COLOR_WORDS or words[j] in COUNT_WORDS or words[j] in MODIFIERS):
            color = color or COLOR_WORDS.get(words[j])
            if count is None and words[j] in COUNT_WORDS:
                count = COUNT_WORDS[words[j]]
            j -= 1
        shape = SHAPE_WORDS[words[i]]
        definite = "the" in words[j + 1 : i]
        same = [k for k, o in enumerate(objs) if o.shape == shape and (color is None or o.color == color)]
        if definite and same:
            owner.append(same[-1])
        else:
            objs.append(_Obj(count=count or (2 if words[i] in PLURALS else 1), color=color, shape=shape))
            owner.append(len(objs) - 1)
        starts.append(j + 1)
    if not objs:
        # "something red falls", "red falling": one object from whatever words there are.
        if any(w in COLOR_WORDS or w in MOTION_WORDS for w in words):
            objs.append(_Obj(count=1, color=next((COLOR_WORDS[w] for w in words if w in COLOR_WORDS), None), shape=None))
            nouns, owner, starts = [-1], [0], [0]
        else:
            return [], camera, pillar, read_as
    # 3. What follows each mention up to the next one: motion, direction, pillar, hits.
    for n, i in enumerate(nouns):
        obj = objs[owner[n]]
        tail = words[i + 1 : starts[n + 1] if n + 1 < len(nouns) else len(words)]
        for w in tail:
            if w in MOTION_WORDS and obj.motion is None:
                obj.motion = MOTION_WORDS[w]
            elif w in ("left", "right") and obj.direction is None:
                obj.direction = w
            elif w == "behind" and pillar:
                obj.behind = True
            elif w in HIT_WORDS and n + 1 < len(nouns) and owner[n + 1] != owner[n]:
                obj.hits = owner[n + 1]
            elif w in COLOR_WORDS and obj.color is None:
                obj.color = COLOR_WORDS[w]  # "the ball is red" (the next object's colour is not in its tail)
    return objs, camera, pillar, read_as


def facts_from_prompt(prompt: str, seed: int) -> tuple[SceneFacts, list[str]]:
    """Read a loose prompt into SceneFacts, filling gaps from ``seed``; returns (facts, notes)."""
    objs, camera, pillar, read_as = read_prompt(prompt)
    if not objs:
        raise UserError(
            "the prompt names nothing in the reel world; it has balls and boxes in the colours "
            f"{', '.join(COLORS)} that fall, roll or slide left/right, are thrown left/right or rest "
            "(or use --no-rewrite to pass the prompt unchanged)",
            param="prompt",
        )
    if sum(o.count for o in objs) > 3:
        raise UserError("the reel world shows at most 3 objects in a clip", param="prompt")
    rng = np.random.default_rng(seed)
    notes: list[str] = [f"read {', '.join(read_as)}"] if read_as else []
    hit_targets = {o.hits for o in objs if o.hits is not None}
    used: set[tuple[str, str]] = {(o.color, o.shape) for o in objs if o.color and o.shape}
    facts: list[ObjectFacts] = []
    first_index: list[int] = []  # index in ``facts`` of each _Obj's first copy
    for n, o in enumerate(objs):
        name = " ".join(x for x in (o.color, o.shape or "object") if x)
        shape = o.shape
        if shape is None:
            shape = str(rng.choice(["ball", "box"]))
            notes.append(f"no shape stated for the {name}: chose {shape} (seed {seed})")
        color = o.color
        if color is None:
            free = [c for c in COLORS if (c, shape) not in used] or list(COLORS)
            color = str(rng.choice(free))
            notes.append(f"no colour stated for the {shape}: chose {color} (seed {seed})")
        used.add((color, shape))
        motion = o.motion
        if motion is None:
            if n in hit_targets:
                motion = "rests"  # the caption convention: an object named only as a hit target rests
            elif o.hits is not None:  # it hits something, so it moves
                motion = str(rng.choice(["rolls", "thrown"]))
                notes.append(f"no motion stated for the {color} {shape} that hits: chose '{motion}' (seed {seed})")
            else:
                motion = str(rng.choice(["falls", "rolls", "thrown", "rests"]))
                notes.append(f"no motion stated for the {color} {shape}: chose '{motion}' (seed {seed})")
        if motion in ("rolls", "thrown"):
            direction = o.direction
            if direction is None:
                direction = str(rng.choice(["left", "right"]))
                notes.append(f"no direction stated for the {color} {shape}: chose {direction} (seed {seed})")
            motion = f"{motion}_{direction}"
        assert motion in MOTIONS, motion
        first_index.append(len(facts))
        for _ in range(o.count):
            facts.append(ObjectFacts(color=color, shape=shape, motion=motion, behind_pillar=o.behind, hits=o.hits))
    # ``hits`` pointed at _Obj indices; point them at the first copy of the hit object.
    facts = [ObjectFacts(f.color, f.shape, f.motion, f.behind_pillar, None if f.hits is None else first_index[f.hits])
             for f in facts]
    return SceneFacts(objects=tuple(facts), camera=camera or "static", pillar=pillar), notes


# -- the rewriter -------------------------------------------------------------------------


class PromptRewriter:
    """Rewrites prompts with the rules, or with a chat model when an endpoint is given."""

    def __init__(self, endpoint: ChatEndpoint | None = None):
        self.endpoint = endpoint

    def rewrite(self, prompt: str, *, seed: int) -> Rewrite:
        if not isinstance(prompt, str) or not prompt.strip():
            raise UserError("the prompt is empty", param="prompt")
        prompt = " ".join(prompt.split())
        notes: list[str] = []
        if self.endpoint is not None:
            try:
                return rewrite_with_endpoint(prompt, self.endpoint, seed=seed)
            except (OSError, ValueError, KeyError, IndexError, TypeError) as err:
                notes.append(f"the chat endpoint gave no usable caption ({_short(err)}); used the rules")
        result = rewrite_with_rules(prompt, seed=seed)
        result.notes = notes + result.notes
        return result


def rewrite_with_rules(prompt: str, *, seed: int) -> Rewrite:
    """The rule-based rewrite (see the module docstring)."""
    from worldreel.data.captions import canonical_facts, caption, parse_caption

    facts, notes = facts_from_prompt(prompt, seed)
    facts = canonical_facts(facts)
    if not notes and set(_words(prompt)) <= CAPTION_STYLE:
        try:
            if parse_caption(prompt) == facts:
                return Rewrite(text=prompt, facts=facts, notes=[], source="unchanged")
        except UserError:
            pass
    text = caption(facts, np.random.default_rng(seed))
    return Rewrite(text=text, facts=facts, notes=notes, source="rules")


SYSTEM_PROMPT = """You rewrite video prompts for a model trained on one small 2-D physics world.
Answer with ONE caption in the world's style and nothing else.
The world: a dark sky, a gray floor, 1 to 3 objects, optionally a gray pillar in front of them.
Shapes: ball, box. Colours: {colors}.
Motions: "falls and bounces on the floor", "rolls left/right" (ball), "slides left/right" (box),
"is thrown to the left/right", "rests on the floor". Optional: "behind a gray pillar",
"and hits the <colour> <shape>", and "; the camera pans left/right".
If the prompt leaves a colour, shape or motion out, choose one. Examples:
a red ball falls and bounces on the floor
two green boxes slide to the right
a yellow ball is thrown to the left; the camera pans right
a cyan ball rolls right behind a gray pillar and hits an orange box"""


def rewrite_with_endpoint(prompt: str, endpoint: ChatEndpoint, *, seed: int) -> Rewrite:
    """Ask an OpenAI-compatible chat endpoint; keep the answer only if it parses as a caption."""
    from worldreel.data.captions import parse_caption

    body = {
        "model": endpoint.model,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT.format(colors=", ".join(COLORS))},
            {"role": "user", "content": prompt},
        ],
        "temperature": 0,
        "seed": int(seed),
        "max_tokens": 80,
    }
    headers = {"Content-Type": "application/json"}
    if endpoint.api_key:
        headers["Authorization"] = f"Bearer {endpoint.api_key}"
    request = urllib.request.Request(endpoint.url.rstrip("/") + "/chat/completions",
                                     data=json.dumps(body).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=endpoint.timeout) as response:
        reply = json.loads(response.read().decode())
    text = " ".join(str(reply["choices"][0]["message"]["content"]).strip().strip('"').split())
    try:
        facts = parse_caption(text)
    except UserError as err:
        raise ValueError(f"its answer {text!r} is not a caption: {err.message}") from None
    return Rewrite(text=text, facts=facts, notes=[f"rewritten by the chat model {endpoint.model}"], source="endpoint")


def _short(err: Exception) -> str:
    text = str(err) if not isinstance(err, urllib.error.HTTPError) else f"HTTP {err.code}"
    return text if len(text) < 160 else text[:157] + "..."
