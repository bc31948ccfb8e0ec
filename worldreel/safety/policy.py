"""The prompt policy: refuse prompts for what must not be made (issue 34, part 1).

Categories follow OpenAI's moderation taxonomy and the Sora API's content rules:
sexual content, sexual content involving minors, violence and gore, self-harm, hate and
harassment, real people (named public figures, deepfakes), illicit content (weapons,
drugs) and copyrighted characters (``CATEGORIES``).

A prompt is decided in three steps (``PromptPolicy.check``):

1. **Normalise** (``normalize``): Unicode NFKC, case folding, zero-width and other format
   characters removed, diacritics and Cyrillic/Greek look-alike letters folded to Latin,
   spaced-out letters joined ("n u d e", "s.e.x"), leetspeak undone inside words ("k1ll",
   "n@ked"; plain numbers such as "3 balls" or "3d" stay), runs of three or more of one
   letter shortened, whitespace collapsed.
2. **Patterns**: a reviewed list of regular expressions per category
   (``data/patterns.txt``), matched on the normalised text (and its variants for "1" read
   as "l" and letter runs kept at two).
3. **Classifier**: a logistic head per category (``data/policy_head.safetensors``, trained
   by ``worldreel safety train`` on ``data/prompts.jsonl``) over the mean-pooled,
   L2-normalised MiniLM-L6 token states of the normalised text, the same encoder the
   generator conditions on. A long prompt is scored in overlapping word windows and the
   highest score counts, so a benign preamble cannot dilute an unsafe clause.

Sexual content with a minor mentioned anywhere in the prompt is reported as
``sexual/minors``. A refusal raises ``PolicyRefused``, a ``UserError`` with code
``moderation_blocked``: the CLI prints it and exits 2, the service answers OpenAI's
``moderation_blocked`` 400. The negative prompt is never checked (it lists what the video
must *not* show). The text encoder is loaded on the first prompt that gets past the
patterns and then kept (``default_policy`` is one per process); embeddings are cached.
"""
from __future__ import annotations

import re
import threading
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import product
from pathlib import Path

import numpy as np

from worldreel.errors import UserError

DATA_DIR = Path(__file__).parent / "data"
PATTERNS_FILE = DATA_DIR / "patterns.txt"
HEAD_FILE = DATA_DIR / "policy_head.safetensors"
PROMPTS_FILE = DATA_DIR / "prompts.jsonl"

CATEGORIES = ("sexual", "sexual/minors", "violence", "self-harm", "hate", "real-people", "illicit", "copyright")
DESCRIPTIONS = {
    "sexual": "sexual content",
    "sexual/minors": "sexual content involving minors",
    "violence": "violence and gore",
    "self-harm": "self-harm",
    "hate": "hate and harassment",
    "real-people": "real people and deepfakes",
    "illicit": "illicit content (weapons, drugs)",
    "copyright": "copyrighted characters",
}
# Words that make sexual content sexual/minors wherever they stand in the prompt.
MINOR_WORDS = re.compile(
    r"\b(child|children|kid|kids|minor|minors|underage|under ?age|teen|teens|teenage|teenager|teenagers|preteen|"
    r"pre-teen|schoolgirl|schoolgirls|schoolboy|schoolboys|toddler|toddlers|infant|baby|babies|little (girl|boy)s?|"
    r"young (girl|boy)s?|boys?|girls?|(1[0-7]|[1-9]|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|"
    r"thirteen|fourteen|fifteen|sixteen|seventeen)[ -]?(year|yr)s?[ -]?old|middle school|elementary school|"
    r"high school (girl|boy|student)s?|loli|shota)\b")

# ---------------------------------------------------------------------------------------
# 1. Normalisation
# ---------------------------------------------------------------------------------------

# Cyrillic and Greek letters drawn like Latin ones (after case folding); the usual homoglyph swaps.
LOOKALIKES = str.maketrans({
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c", "т": "t",
    "у": "y", "х": "x", "і": "i", "ї": "i", "ј": "j", "ѕ": "s", "ԁ": "d", "ɡ": "g", "ո": "n", "ս": "u",
    "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u",
    "χ": "x", "ω": "w", "ѵ": "v", "ı": "i",
})
LEET = {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g", "@": "a", "$": "s",
        "!": "i", "|": "l", "+": "t", "€": "e", "£": "l", "¡": "i"}
_LEET_CHARS = re.escape("".join(LEET))
_WORD = re.compile(rf"[a-z{_LEET_CHARS}]+")
# A number with a unit or suffix is a number, not leetspeak: 3d, 4k, 64x64, 30fps, 1080p, 2nd, 90s.
_NUMBERISH = re.compile(r"^\d+(\.\d+)?([a-z]{0,3}|x\d+)$|^\d+x\d+[a-z]*$")
# Three or more single characters split by spaces or punctuation: "n u d e", "s.e.x", "k-i-l-l".
_SPACED = re.compile(r"(?<![\w])(?:[a-z0-9@$!|](?:[\s.\-_*·•,'/]+)){2,}[a-z0-9@$!|](?![\w])")
_RUN3 = re.compile(r"([a-z])\1{2,}")


def _format_char(ch: str) -> bool:
    return unicodedata.category(ch) == "Cf"  # zero-width spaces and joiners, BOM, bidi controls, soft hyphen


def _unleet(token: str, one: str) -> str:
    if not re.search(r"[a-z]", token) or _NUMBERISH.match(token):
        return token  # a plain number or a number with a unit
    if not re.search(_LEET_CHARS.join("[]"), token):
        return token
    core = token.strip("!|")  # "kill!" keeps its exclamation mark as punctuation
    lead, tail = token[: len(token) - len(token.lstrip("!|"))], token[len(token.rstrip("!|")):]
    return lead + "".join(one if c == "1" else LEET.get(c, c) for c in core) + tail


def _normal_forms(text: str) -> list[str]:
    """The normalised text first, then the variants the patterns are also matched on."""
    if not isinstance(text, str):
        raise UserError("the prompt must be text", param="prompt")
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch for ch in text if not _format_char(ch))
    text = text.casefold().translate(LOOKALIKES)
    # Fold diacritics ("nüde" -> "nude") by dropping combining marks; other scripts stay as they are.
    text = "".join(ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch))
    text = unicodedata.normalize("NFKC", text)
    text = " ".join(text.split())
    # "a n a k e d" is most likely "a naked": read it so first, and as one word as a variant.
    joined = [_SPACED.sub(lambda m: _join_spaced(m.group(0), keep_article), text) for keep_article in (True, False)]
    forms = []
    for one, base in product(("i", "l"), joined):  # "k1ll" is kill, "1ine" is line: try both readings of 1
        t = _WORD.sub(lambda m: _unleet(m.group(0), one), base)
        forms.append(_RUN3.sub(r"\1", t))  # "nuuuude" -> "nude"
        forms.append(_RUN3.sub(r"\1\1", t))  # "killll" -> "kill"
        forms.append(t)  # "xxx" and "kkk" as written
    return list(dict.fromkeys(forms))


def _join_spaced(run: str, keep_article: bool) -> str:
    letters = re.split(r"[\s.\-_*·•,'/]+", run)
    if keep_article and len(letters) >= 4 and re.match(r"a\s", run):
        return letters[0] + " " + "".join(letters[1:])
    return "".join(letters)


def normalize(text: str) -> str:
    """The prompt as the policy reads it (see the module docstring, step 1)."""
    return _normal_forms(text)[0]


# ---------------------------------------------------------------------------------------
# 2. Patterns
# ---------------------------------------------------------------------------------------


def load_patterns(path: str | Path = PATTERNS_FILE) -> dict[str, list[re.Pattern]]:
    """``{category: [compiled pattern, ...]}`` from a pattern file (``[category]`` headings, one regex a line)."""
    patterns: dict[str, list[re.Pattern]] = {c: [] for c in CATEGORIES}
    category = None
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            category = line[1:-1]
            if category not in patterns:
                raise ValueError(f"{path}:{number}: unknown category {category!r}; known: {', '.join(CATEGORIES)}")
            continue
        if category is None:
            raise ValueError(f"{path}:{number}: a pattern before any [category] heading")
        try:
            patterns[category].append(re.compile(line))
        except re.error as err:
            raise ValueError(f"{path}:{number}: bad pattern {line!r}: {err}") from None
    return patterns


# ---------------------------------------------------------------------------------------
# 3. Embeddings and the classifier head
# ---------------------------------------------------------------------------------------


class Embedder:
    """Mean-pooled, L2-normalised MiniLM-L6 states of texts: ``embed(texts) -> (N, 384)`` float32.

    The encoder loads on first use (3 to 6 s on a laptop CPU) and is kept; embeddings are
    cached per text. ``share`` reuses an already loaded ``models.text.TextEncoder`` on the
    same encoder, so a generator and its policy hold one copy of the weights.
    """

    def __init__(self, encoder: str = "minilm-l6", max_tokens: int = 128, cache_size: int = 4096, share=None):
        self.encoder, self.max_tokens, self.cache_size = encoder, max_tokens, cache_size
        self._text = None  # a models.text.TextEncoder
        if share is not None and getattr(share, "cfg", None) is not None and share.cfg.encoder == encoder:
            self._text = share
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def _load(self) -> None:
        from worldreel.models.text import TextConfig, TextEncoder

        self._text = TextEncoder(TextConfig(encoder=self.encoder, max_tokens=self.max_tokens, cache_size=1))

    def embed(self, texts: list[str]) -> np.ndarray:
        import torch

        with self._lock:  # the service calls from several request threads
            if self._text is None:
                self._load()
            missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
            for start in range(0, len(missing), 64):
                batch = missing[start:start + 64]
                states, mask = self._text.token_states(batch, self.max_tokens)  # (B, L, D), (B, L)
                mask = mask.unsqueeze(-1).float()  # (B, L, 1)
                pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, D)
                pooled = torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy()
                for text, vector in zip(batch, pooled):
                    self._cache[text] = vector
            out = np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, 384), np.float32)
            for t in texts:
                self._cache.move_to_end(t)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return out.astype(np.float32)


@dataclass
class Head:
    """One logistic regression per category over the embedding: ``p = sigmoid(x @ weight.T + bias)``."""

    weight: np.ndarray  # (C, D)
    bias: np.ndarray  # (C,)
    threshold: np.ndarray  # (C,) a score at or above it refuses
    categories: tuple[str, ...] = CATEGORIES
    meta: dict = field(default_factory=dict)  # what it was trained on

    def scores(self, x: np.ndarray) -> np.ndarray:
        """(N, D) embeddings -> (N, C) probabilities."""
        return 1.0 / (1.0 + np.exp(-(x @ self.weight.T + self.bias)))

    def save(self, path: str | Path) -> None:
        import json

        from safetensors.numpy import save_file

        meta = {"categories": json.dumps(list(self.categories)), **{k: str(v) for k, v in self.meta.items()}}
        save_file({"weight": self.weight.astype(np.float32), "bias": self.bias.astype(np.float32),
                   "threshold": self.threshold.astype(np.float32)}, str(path), metadata=meta)

    @classmethod
    def load(cls, path: str | Path = HEAD_FILE) -> "Head":
        import json

        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in ("weight", "bias", "threshold")}
        categories = tuple(json.loads(meta.pop("categories")))
        if categories != CATEGORIES:
            raise ValueError(f"{path} was trained for categories {categories}, not {CATEGORIES}; run worldreel safety train")
        return cls(tensors["weight"], tensors["bias"], tensors["threshold"], categories, meta)


def windows(text: str, size: int = 32, stride: int = 16) -> list[str]:
    """The text, or overlapping windows of ``size`` words when it is longer than ``size + stride // 2`` words."""
    words = text.split()
    if len(words) <= size + stride // 2:
        return [text]
    return [" ".join(words[i:i + size]) for i in range(0, len(words) - size + stride, stride)]


# ---------------------------------------------------------------------------------------
# The policy
# ---------------------------------------------------------------------------------------


@dataclass
class Verdict:
    """What the policy decided about one prompt."""

    allowed: bool
    category: str | None = None  # the refused category (None when allowed)
    source: str | None = None  # "pattern" or "classifier" (None when allowed)
    matched: str | None = None  # the text a pattern matched
    scores: dict[str, float] = field(default_factory=dict)  # classifier score per category (empty if not run)
    normalized: str = ""  # the text as the policy read it

    def describe(self) -> str:
        if self.allowed:
            return "allowed"
        how = f"pattern '{self.matched}'" if self.source == "pattern" else f"classifier {self.scores[self.category]:.2f}"
        return f"refused: {self.category} ({DESCRIPTIONS[self.category]}; {how})"


class PolicyRefused(UserError):
    """A prompt the policy refuses; ``category`` names why."""

    def __init__(self, verdict: Verdict, param: str = "prompt"):
        self.verdict, self.category = verdict, verdict.category
        super().__init__(f"refused by the prompt policy: {verdict.category} ({DESCRIPTIONS[verdict.category]}); "
                         "nothing was generated", param=param, code="moderation_blocked")


class PromptPolicy:
    """Patterns, then the classifier head (see the module docstring); ``check`` and ``enforce``."""

    def __init__(self, patterns: dict[str, list[re.Pattern]] | None = None, head: Head | None = None,
                 embedder: Embedder | None = None):
        self.patterns = load_patterns() if patterns is None else patterns
        self.head = head
        self.embedder = embedder or Embedder()

    @classmethod
    def load(cls, *, share=None) -> "PromptPolicy":
        """The shipped patterns and head; ``share`` is a loaded text encoder to reuse (see ``Embedder``)."""
        return cls(head=Head.load(), embedder=Embedder(share=share))

    def warm(self) -> None:
        """Load the text encoder now (the service does this at start-up, off the request path)."""
        self.embedder.embed(["a red ball falls"])

    def match(self, forms: list[str]) -> tuple[str, str] | None:
        """(category, matched text) of the first pattern matching any normalised form."""
        for category in CATEGORIES:
            for pattern in self.patterns.get(category, ()):
                for form in forms:
                    found = pattern.search(form)
                    if found:
                        return category, found.group(0)
        return None

    def check_many(self, prompts: list[str]) -> list[Verdict]:
        forms = [_normal_forms(p) for p in prompts]
        verdicts: list[Verdict | None] = []
        for f in forms:
            hit = self.match(f)
            verdicts.append(Verdict(False, hit[0], "pattern", hit[1], normalized=f[0]) if hit else None)
        todo = [i for i, v in enumerate(verdicts) if v is None]
        if todo and self.head is not None:
            chunks = [windows(forms[i][0]) for i in todo]
            flat = self.embedder.embed([c for cs in chunks for c in cs])  # (sum of windows, D)
            flat_scores = self.head.scores(flat)  # (sum of windows, C)
            start = 0
            for i, cs in zip(todo, chunks):
                s = flat_scores[start:start + len(cs)].max(axis=0)  # (C,) the worst window counts
                start += len(cs)
                scores = {c: float(v) for c, v in zip(self.head.categories, s)}
                over = [c for c, v, t in zip(self.head.categories, s, self.head.threshold) if v >= t]
                if over:
                    worst = max(over, key=lambda c: scores[c])
                    verdicts[i] = Verdict(False, worst, "classifier", scores=scores, normalized=forms[i][0])
                else:
                    verdicts[i] = Verdict(True, scores=scores, normalized=forms[i][0])
        out = []
        for i, v in enumerate(verdicts):
            v = v or Verdict(True, normalized=forms[i][0])
            if v.category == "sexual" and MINOR_WORDS.search(v.normalized):
                v.category = "sexual/minors"
            out.append(v)
        return out

    def check(self, prompt: str) -> Verdict:
        return self.check_many([prompt])[0]

    def enforce(self, *prompts: str | None, param: str = "prompt") -> None:
        """Raise ``PolicyRefused`` for the first refused prompt (``None`` and repeats are skipped)."""
        texts = [p for p in dict.fromkeys(prompts) if p]
        for verdict in self.check_many(texts):
            if not verdict.allowed:
                raise PolicyRefused(verdict, param=param)


@lru_cache(maxsize=1)
def default_policy() -> PromptPolicy:
    """The shipped policy, one per process (its encoder loads on first use)."""
    return PromptPolicy.load()
