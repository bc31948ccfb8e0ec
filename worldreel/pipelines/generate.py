"""One generation loop for every mode: text, image, extension, interpolation, loop, edit.

Every mode is a set of given frames (``pipelines/conditioning.py``) fed to one denoising
loop (``Generator.generate``, numbered steps). Long videos are made of windows of the
model's native latent length, each overlapping the previous window's last latent frames,
which it receives as given frames (t = 0, clean latents, held fixed); the whole latent
video is then decoded at once with the VAE's chunked decoder, so there are no seams to
blend. This is the opposite of last-frame image-to-video chaining, which sees one frame
of the past and drifts (``eval/drift.py`` measures both).

Typical use::

    gen = Generator.load("world-tiny")
    video = gen.generate("a red ball falls and bounces on the floor", seconds=4, seed=1)
    video.frames  # uint8 (33, 64, 64, 3)
"""
from __future__ import annotations

import math
import secrets
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Callable, Sequence

import numpy as np
import torch

from worldreel.data.video_io import to_frames
from worldreel.config import parse_wxh
from worldreel.errors import UserError
from worldreel.pipelines import conditioning as cond_lib
from worldreel.pipelines.conditioning import Condition
from worldreel.presets import ModelConfig, SamplingDefaults

SIZE_MULTIPLE = 16  # every side a multiple of 16 (VAE x8 times DiT patch 2), WORLD.md
DECODE_COST = 2  # progress units per decoded chunk of latents (a sampler step is 1)
MAX_STAGGER = 8.0  # largest accepted stagger (the first frame done when 1/9 of the steps are)
MAX_REFINE = 8  # most latent frames a window re-makes after its first pass (refine)
MIN_SHIFT, MAX_SHIFT = 0.1, 20.0  # accepted timestep shifts (1 = none; SD3 samples 1024 px images at 3)


@dataclass
class SamplingConfig:
    """Defaults of the denoising loop (used when a call leaves the argument out).

    steps, guidance, sampler, shift, guidance_mode, guidance_interval, stagger, refine, steer,
    best_of, finalists and likelihood left as None take the model's own values (config.json
    "sampling", ``presets.SamplingDefaults``) when the Generator is built.
    """

    steps: int | None = None  # sampler steps per window
    guidance: float | None = None  # classifier-free guidance scale (1 = off: no unconditional pass)
    sampler: str | None = None  # "euler" or "heun" (diffusion/samplers.py)
    shift: float | None = None  # timestep shift at the native clip (diffusion/flow.py)
    guidance_mode: str | None = None  # cfg, interval, zero-star or apg (diffusion/guidance.py)
    guidance_interval: tuple[float, float] | None = None  # noise levels where guidance_mode "interval" guides
    stagger: float | None = None  # how far the first latent frame runs ahead of the last (flow.stagger_timesteps); 0 = together
    refine: int | None = None  # latent frames 1..refine of a window made again given all the others; 0 = off
    steer: float | None = None  # how hard stated objects are pushed their stated way (diffusion/steer.py); 0 = off
    best_of: int | None = None  # start noises the state probe picks from (diffusion/steer.py rank_starts); 1 = the seed's own
    finalists: int | None = None  # of those, how many are made to the end and read again (steer.rank_starts); 1 = the best start's only
    likelihood: float | None = None  # weight of the denoiser's flow error in that reading (steer.pick_finalist); 0 = the probe's only
    judge: float | None = None  # weight of the folder's judge in that reading (diffusion/judge.py); 0 = not read
    window_latents: int = 0  # latent frames per window; 0 = the model's native clip (default_seconds)
    overlap_latents: int = 3  # latent frames a window shares with the previous one (given, t = 0)
    max_seconds: float = 120.0  # longest video a call may ask for
    decode_chunk_latents: int = 4  # latent frames per chunk in the VAE's chunked decode
    encode_chunk_frames: int = 33  # pixel frames per chunk when encoding given clips


@dataclass
class Video:
    """A generated video (or a still image: one frame)."""

    frames: np.ndarray  # uint8 (F, H, W, 3)
    fps: int  # frames per second
    prompt: str  # the prompt as given
    model_prompt: str  # the prompt the model saw (after rewriting)
    seed: int  # the seed that reproduces this video
    notes: list[str] = field(default_factory=list)  # what the prompt rewriter filled in or changed
    sampling: dict = field(default_factory=dict)  # the sampler settings that made it: sampler, steps, guidance, shift, guidance_mode (+ interval)

    @property
    def seconds(self) -> float:
        return (len(self.frames) - 1) / self.fps

    @property
    def size(self) -> tuple[int, int]:
        return int(self.frames.shape[2]), int(self.frames.shape[1])


# ---------------------------------------------------------------------------------------
# Argument parsing (shared by the CLI, the service and the library)
# ---------------------------------------------------------------------------------------


def supported_sizes(cfg: ModelConfig) -> list[tuple[int, int]]:
    """Every (W, H) the model accepts: each side a multiple of 16 up to cfg.max_side."""
    sides = range(SIZE_MULTIPLE, cfg.max_side + 1, SIZE_MULTIPLE)
    return [(w, h) for h in sides for w in sides]


def _size_help(cfg: ModelConfig) -> str:
    w, h = cfg.default_size
    return (
        f"width and height must each be a multiple of {SIZE_MULTIPLE} from {SIZE_MULTIPLE} to {cfg.max_side} "
        f"(written WxH), e.g. {w}x{h} (the default), {2 * w}x{h} (landscape), {w}x{2 * h} (portrait), "
        f"{2 * w}x{2 * h} (square)"
    )


def parse_size(value, cfg: ModelConfig) -> tuple[int, int]:
    """'WxH', (W, H) or None (the model's default) -> (W, H); UserError(param='size') lists what works."""
    if value is None:
        return tuple(cfg.default_size)
    try:
        w, h = parse_wxh(value.replace(",", "x")) if isinstance(value, str) else (int(v) for v in value)
    except (TypeError, ValueError, UserError):
        raise UserError(f"cannot read size {value!r}; {_size_help(cfg)}", param="size") from None
    if not (SIZE_MULTIPLE <= w <= cfg.max_side and SIZE_MULTIPLE <= h <= cfg.max_side) or w % SIZE_MULTIPLE or h % SIZE_MULTIPLE:
        raise UserError(f"unsupported size {w}x{h}; {_size_help(cfg)}", param="size")
    return w, h


def parse_seconds(value, cfg: ModelConfig, *, max_seconds: float = SamplingConfig.max_seconds) -> float:
    """Seconds as a float (None -> the model's default); 0 makes a still image; UserError(param='seconds')."""
    if value is None:
        return float(cfg.default_seconds)
    helptext = (
        f"give 0 for a still image or a length from {1 / cfg.fps:g} to {max_seconds:g} seconds "
        f"({cfg.fps} frames per second; more than {cfg.default_seconds:g} s is made in overlapping windows)"
    )
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise UserError(f"cannot read seconds {value!r}; {helptext}", param="seconds") from None
    if not math.isfinite(seconds) or seconds < 0 or seconds > max_seconds or (0 < seconds < 1 / cfg.fps - 1e-9):
        raise UserError(f"unsupported length {value!r} s; {helptext}", param="seconds")
    return seconds


def _check_number(value, name: str, lo: float, hi: float, kind=float):
    if isinstance(value, bool):  # True == 1 in Python: a flag given where a number belongs
        raise UserError(f"{name} must be a number from {lo:g} to {hi:g}, got {value!r}", param=name)
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a number from {lo:g} to {hi:g}, got {value!r}", param=name) from None
    if (kind is int and number != value) or not (lo <= number <= hi):
        raise UserError(f"{name} must be a{' whole' if kind is int else ''} number from {lo:g} to {hi:g}, got {value!r}", param=name)
    return number


def check_steps(value) -> int:
    """Sampler steps per window: a whole number from 1 to 1000."""
    return _check_number(value, "steps", 1, 1000, int)


def check_guidance(value) -> float:
    """A classifier-free guidance scale (1 = off): a number from 0 to 50."""
    return _check_number(value, "guidance", 0.0, 50.0)


def check_shift(value) -> float:
    """A timestep shift at the native clip (``flow.shift_for_tokens``; 1 = none): ``MIN_SHIFT`` to ``MAX_SHIFT``."""
    return _check_number(value, "shift", MIN_SHIFT, MAX_SHIFT)


def check_sampler(value) -> str:
    """A sampler's name (``samplers.SAMPLERS``)."""
    from worldreel.diffusion.samplers import SAMPLERS

    if value not in SAMPLERS:
        raise UserError(f"unknown sampler {value!r}; choose one of {sorted(SAMPLERS)}", param="sampler")
    return value


# The sampler's options: the fields of presets.SamplingDefaults (config.json "sampling", the
# model's own values), each also a keyword of Generator.generate, an option of every generation
# command and of bench world, and a key of train pack --sampling. Each is checked and read by
# the function named here, and nowhere else; a new option is a SamplingDefaults field, a line
# here, its use in Generator._sample, and (when a video should say so) a line in sampling_record.
SAMPLING_OPTIONS = tuple(f.name for f in fields(SamplingDefaults))


def _sampling_checks() -> dict[str, Callable]:
    from worldreel.diffusion.guidance import check_interval, check_mode

    return {"steps": check_steps, "guidance": check_guidance, "sampler": check_sampler, "shift": check_shift,
            "guidance_mode": check_mode, "guidance_interval": check_interval, "stagger": check_stagger,
            "refine": check_refine, "steer": check_steer, "best_of": check_best_of, "finalists": check_finalists,
            "likelihood": check_likelihood, "judge": check_judge}


def check_sampling(**given) -> dict:
    """The sampler options given (to a call, or in a model's config), each checked and read:
    ``{name: value}``. None means not given (the model's own) and is left out. A bad value is a
    ``UserError`` naming its option; a name that is not one of ``SAMPLING_OPTIONS`` is a
    caller's bug (TypeError)."""
    checks = _sampling_checks()
    unknown = sorted(set(given) - set(checks))
    if unknown:
        raise TypeError(f"unknown sampler option(s) {', '.join(unknown)}; the options are {', '.join(SAMPLING_OPTIONS)}")
    return {name: checks[name](value) for name, value in given.items() if value is not None}


def resolve_sampling(defaults, given: dict) -> SamplingDefaults:
    """The settings a call runs with: the options it gives (``check_sampling``) over
    ``defaults`` (any object with every option as an attribute: a Generator's ``sampling``,
    the model's own where not set). Every value is checked, the defaults' too; one still None
    takes ``SamplingDefaults``' own. finalists is at most best_of."""
    plain = SamplingDefaults()
    base = {name: getattr(defaults, name) for name in SAMPLING_OPTIONS}
    base = {name: getattr(plain, name) if value is None else value for name, value in base.items()}
    run = SamplingDefaults(**check_sampling(**{**base, **{k: v for k, v in given.items() if v is not None}}))
    return replace(run, finalists=min(run.finalists, run.best_of))


def sampling_record(run: SamplingDefaults, editing: bool) -> dict:
    """What a video records of the settings that made it (``Video.sampling``): the sampler, steps,
    guidance, shift and guidance mode always; the rest only when they acted (the interval in
    its mode; a stagger, refine, steer and picking the start, which an edit does not do)."""
    record = {"sampler": run.sampler, "steps": run.steps, "guidance": run.guidance, "shift": run.shift,
              "guidance_mode": run.guidance_mode}
    if run.guidance_mode == "interval":
        record["guidance_interval"] = list(run.guidance_interval)
    if editing:
        return record
    if run.stagger:
        record["stagger"] = run.stagger
    if run.refine:
        record["refine"] = run.refine
    if run.steer:
        record["steer"] = run.steer
    if run.best_of > 1:
        record["best_of"] = run.best_of
        if run.finalists > 1:
            record["finalists"] = run.finalists
            if run.likelihood:
                record["likelihood"] = run.likelihood
            if run.judge:
                record["judge"] = run.judge
    return record


def check_stagger(value) -> float:
    """A stagger (``flow.stagger_timesteps``' lead, 0 = off) read as a number from 0 to ``MAX_STAGGER``."""
    return _check_number(value, "stagger", 0.0, MAX_STAGGER)


def check_steer(value) -> float:
    """A steering strength (``diffusion/steer.py``, 0 = off): a number from 0 to ``MAX_STEER``."""
    from worldreel.diffusion.steer import MAX_STEER

    return _check_number(value, "steer", 0.0, MAX_STEER)


def check_best_of(value) -> int:
    """A best_of (start noises picked from, ``steer.rank_starts``; 1 = the seed's own): a whole number from 1 to ``MAX_BEST_OF``."""
    from worldreel.diffusion.steer import MAX_BEST_OF

    return _check_number(value, "best_of", 1, MAX_BEST_OF, int)


def check_finalists(value) -> int:
    """A finalists (of the best_of starts, how many are made to the end and read again,
    ``steer.rank_starts``; 1 = the best start's only): a whole number from 1 to ``MAX_BEST_OF``."""
    from worldreel.diffusion.steer import MAX_BEST_OF

    return _check_number(value, "finalists", 1, MAX_BEST_OF, int)


def check_judge(value) -> float:
    """A judge (weight of the model folder's judge in reading the finalists, ``steer.pick_finalist``;
    0 = not read): a number from 0 to ``judge.MAX_JUDGE``."""
    from worldreel.diffusion.judge import MAX_JUDGE

    return _check_number(value, "judge", 0.0, MAX_JUDGE)


def check_likelihood(value) -> float:
    """A likelihood (weight of the denoiser's own flow error against the probe's fit when the
    finalists are read, ``steer.pick_finalist``; 0 = the probe's only): a number from 0 to ``MAX_LIKELIHOOD``."""
    from worldreel.diffusion.steer import MAX_LIKELIHOOD

    return _check_number(value, "likelihood", 0.0, MAX_LIKELIHOOD)


def prompt_facts(model_prompt: str):
    """The prompt's parsed facts (``captions.parse_caption``), what steering and picking the
    start read; None when it is not in the captions' style the parser reads (free text is made
    unsteered and unpicked)."""
    from worldreel.data.captions import parse_caption

    try:
        return parse_caption(model_prompt)
    except UserError:
        return None


def check_refine(value) -> int:
    """A refine (latent frames re-made after the first pass, 0 = off): a whole number from 0 to ``MAX_REFINE``."""
    return _check_number(value, "refine", 0, MAX_REFINE, int)


def refine_mask(given: torch.Tensor, refine: int) -> torch.Tensor:
    """The latent frames of a window to make again: positions 1..refine that were not given.

    given: (f,) bool, the window's given frames. The first latent frame (a single image in a
    causal autoencoder) is never among them: it is the anchor the next ones are re-made to agree with.
    """
    redo = torch.zeros_like(given)
    redo[1:refine + 1] = True
    return redo & ~given


# ---------------------------------------------------------------------------------------
# Windows over the latent timeline
# ---------------------------------------------------------------------------------------


def plan_windows(determined: np.ndarray, window: int, overlap: int) -> list[tuple[int, int]]:
    """Windows [start, end) that cover every undetermined latent frame, in generation order.

    Each window holds up to ``window`` latents and starts ``overlap`` latents before the
    first undetermined one, so it sees the previous window's last latents as given
    frames. When only the end of the video is given (extending backwards) the windows
    run from the end towards the start, mirrored.
    """
    done = np.asarray(determined, bool).copy()
    total = len(done)
    window = max(1, min(window, total))
    overlap = max(0, min(overlap, window - 1))
    backward = bool(done[-1]) and not bool(done[0])
    windows = []
    while not done.all():
        if backward:
            u = int(np.flatnonzero(~done)[-1])  # last undetermined latent
            end = min(total, u + 1 + overlap)
            start = max(0, end - window)
            end = min(total, start + window)
        else:
            u = int(np.flatnonzero(~done)[0])  # first undetermined latent
            start = max(0, u - overlap)
            end = min(total, start + window)
            start = max(0, end - window)
        windows.append((start, end))
        done[start:end] = True
    return windows


# ---------------------------------------------------------------------------------------
# The generator
# ---------------------------------------------------------------------------------------


class Generator:
    """A loaded model (VAE, DiT, text encoder) plus the one denoising loop and its mode builders."""

    def __init__(self, config: ModelConfig, vae, dit, text_encoder, *, device: str = "cpu",
                 sampling: SamplingConfig | None = None, rewriter=None, policy=None, precision: str = "fp32",
                 probe=None, judge=None):
        from worldreel import precision as precisions
        from worldreel.pipelines.prompts import PromptRewriter
        from worldreel.safety.policy import PromptPolicy

        self.config = config
        self.vae = vae.eval()
        self.dit = dit.eval()
        self.text_encoder = text_encoder
        self.probe = probe  # diffusion/steer.py's StateProbe (the folder's probe.safetensors) or None: no steering
        self.judge = judge  # diffusion/judge.py's Judge (the folder's judge.safetensors) or None: sampling judge needs it
        self.device = torch.device(device)
        self.sampling = sampling or SamplingConfig()
        self.rewriter = rewriter or PromptRewriter()
        # The prompt policy (safety/policy.py) is always on: the prompt as given and the rewritten
        # one are both checked. It shares the generator's text encoder when that is MiniLM-L6.
        self.policy = policy or PromptPolicy.load(share=text_encoder)
        # "fp32" (the default: the weights as trained, on every machine) or "bf16": the
        # denoiser and the decoder under bf16 autocast (about 2x faster sampling on a CPU
        # with AMX; videos differ from fp32 ones by rounding). "auto" picks (precision.py).
        self.precision = precisions.resolve(precision, self.device, param="precision")
        if self.precision == "bf16" and self.device.type == "cpu" and hasattr(self.vae, "set_channels_last"):
            self.vae.set_channels_last(True)  # the decoder's convs in oneDNN's fast bf16 layout

    @property
    def sampling(self) -> SamplingConfig:
        """The loop's defaults, every field set: what the SamplingConfig left as None is the model's."""
        return self._sampling

    @sampling.setter
    def sampling(self, value: SamplingConfig) -> None:
        model_defaults = {k: v for k, v in asdict(self.config.sampling).items() if getattr(value, k) is None}
        self._sampling = replace(value, **model_defaults)

    @classmethod
    def load(cls, model: str = "world-tiny", device: str = "cpu", *, sampling: SamplingConfig | None = None,
             rewriter=None, precision: str = "fp32") -> "Generator":
        """Load a model folder (or a model shipped in the package, by name); precision: fp32, bf16 or auto."""
        from worldreel import precision as precisions
        from worldreel.model_folder import load_model

        precisions.resolve(precision, device, param="precision")  # a bad value fails before loading
        loaded = load_model(model, device=device)
        return cls(loaded.config, loaded.vae, loaded.dit, loaded.text_encoder, device=device,
                   sampling=sampling, rewriter=rewriter, precision=precision, probe=loaded.probe,
                   judge=loaded.judge)

    # -- the one loop -----------------------------------------------------------------

    def generate(self, prompt: str, *, seconds=None, size=None, seed=None, negative_prompt: str = "",
                 conditions: Sequence[Condition] = (), strength=None, rewrite: bool = True,
                 progress: Callable[[float], None] | None = None, frames: int | None = None,
                 on_finalists: Callable | None = None, **options) -> Video:
        """Generate a video in which the frames given by ``conditions`` come out unchanged.

        seconds: length (0 = a still image); size: "WxH" or (W, H); frames: an exact frame
        count instead of seconds (the mode builders use it). strength: re-imagine the
        conditions' frames (an edit) instead of keeping them: 0 keeps them, 1 ignores them.
        progress(fraction) is called after every sampler step. on_finalists(latents, readings,
        picked), when given, is called once the finalists are read (sampling finalists > 1):
        their clean latents (C, f, h, w) each, a dict of the readings by name ("fit", "error",
        "judge" where made) and the index kept (``worldreel train judge`` learns from them).

        options: the sampler's, by name (``SAMPLING_OPTIONS``; each left out or None is the
        model's own, config.json "sampling"; what each does: ``presets.SamplingDefaults``):
        steps; guidance; shift (the timestep shift at the native clip, diffusion/flow.py);
        sampler; guidance_mode (cfg, interval, zero-star, apg: diffusion/guidance.py) and
        guidance_interval ("LO,HI" or a pair: the noise levels where "interval" guides);
        stagger (how far the first frame made runs ahead of the last, ``flow.stagger_timesteps``);
        refine (0 to ``MAX_REFINE``: after a window is made, its latent frames 1..refine that
        were not given are made again given all the others); steer (0 to ``steer.MAX_STEER``:
        how hard each stated object is pushed its stated way while the layout forms); best_of
        (1 to ``steer.MAX_BEST_OF``: start noises the state probe picks from after a few steps,
        ``steer.rank_starts``); finalists (1 to best_of: how many of the best starts are made to
        the end and read again, the best kept); likelihood (0 to ``steer.MAX_LIKELIHOOD``: how
        much that reading weighs the denoiser's own flow error on each finished clip against the
        probe's fit, ``steer.pick_finalist``); judge (0 to ``judge.MAX_JUDGE``: how much it weighs
        the folder's judge, a reader learnt from the model's own finalists, diffusion/judge.py).
        steer and best_of need the folder's state probe, judge its judge; an edit does not
        stagger, refine, steer or pick.
        """
        cfg = self.config
        # 1. Check the arguments (all before any work, so bad input costs nothing).
        if not isinstance(prompt, str) or not prompt.strip():
            raise UserError("the prompt is empty; describe the video, e.g. 'a red ball falls and bounces'", param="prompt")
        settings = resolve_sampling(self.sampling, options)
        for name, value, off in (("steer", settings.steer, 0), ("best_of", settings.best_of, 1)):
            if value != off and self.probe is None:
                raise UserError(f"{name} needs the model folder's state probe (probe.safetensors), which this model has "
                                f"not; train one with worldreel train probe, or use {name} {off}", param=name)
        if settings.judge and self.judge is None:
            raise UserError("judge needs the model folder's judge (judge.safetensors), which this model has not; train one "
                            "with worldreel train judge, or use judge 0", param="judge")
        seed = secrets.randbelow(2**31) if seed is None else _check_number(seed, "seed", 0, 2**63 - 1, int)
        if strength is not None:
            strength = _check_number(strength, "strength", 0.0, 1.0)
        conditions = list(conditions)
        if size is None and conditions and _is_supported(conditions[0].size, cfg):
            size = conditions[0].size  # keep the given frames' size when the model supports it
        width, height = parse_size(size, cfg)
        num_frames = self._num_frames(seconds, frames, conditions, strength)

        # 2. Rewrite the prompt into the caption style the model was trained on; the policy
        # checks the prompt before (the rewriter may refuse free text) and after (it may add some).
        self.policy.enforce(prompt)
        model_prompt, notes = prompt.strip(), []
        if rewrite:
            rewritten = self.rewriter.rewrite(prompt, seed=seed)
            model_prompt, notes = rewritten.text, rewritten.notes
            self.policy.enforce(model_prompt)
        negative_prompt = (negative_prompt or "").strip()

        video = self._sample(model_prompt, negative_prompt, conditions, strength, num_frames, (width, height), seed,
                             progress, settings, on_finalists)
        return Video(frames=video, fps=cfg.fps, prompt=prompt, model_prompt=model_prompt, seed=seed, notes=notes,
                     sampling=sampling_record(settings, editing=strength is not None))

    @torch.no_grad()
    def _sample(self, model_prompt, negative_prompt, conditions, strength, num_frames, size, seed, progress,
                settings: SamplingDefaults, on_finalists: Callable | None = None) -> np.ndarray:
        """The loop: the video's frames (F, H, W, 3) uint8, made with ``settings`` (``resolve_sampling``)."""
        from worldreel.diffusion import flow, samplers
        from worldreel.diffusion.judge import read_judge
        from worldreel.diffusion.steer import (LIKELIHOOD_TIMES, LOOK_STEPS, flow_error, pick_finalist, read_fit,
                                               steer_wrapper, targets, world_drift)
        from worldreel.eval.tracking import palette_tracks

        cfg, sc = self.config, self.sampling
        steps, guidance, shift = settings.steps, settings.guidance, settings.shift
        guidance_mode = (settings.guidance_mode, settings.guidance_interval)
        tf = cfg.vae.time_factor
        width, height = size
        # 3. Place the given frames on the timeline and encode them to clean latents.
        pixels, given = cond_lib.place_conditions(conditions, num_frames, size)
        editing = strength is not None and strength > 0
        if editing and not given.all():
            raise UserError("an edit needs a source video covering every output frame", param="strength")
        encode = self._encode
        num_latents = cond_lib.latents_for_frames(num_frames, tf)
        c, lh, lw = cfg.vae.latent_channels, height // cfg.vae.space_factor, width // cfg.vae.space_factor
        known = torch.zeros(c, num_latents, lh, lw, device=self.device)
        mask = np.zeros(num_latents, bool)
        source = None
        if given.any():
            latents, given_mask = cond_lib.encode_given(encode, pixels, given, tf)
            if editing:
                source = latents  # re-imagined, not kept
            else:
                known, mask = latents.to(self.device), given_mask

        # 4. Encode the prompt and the negative prompt (the unconditional input when empty).
        use_cfg = guidance != 1.0
        texts = [model_prompt, negative_prompt] if use_cfg else [model_prompt]
        text_states, text_mask = self.text_encoder.encode(texts)
        text_states, text_mask = text_states.to(self.device), text_mask.to(self.device)
        facts = None
        if getattr(self.dit, "fact_embed", None) is not None:  # the parsed captions too (models/fact_cond.py)
            from worldreel.models.fact_cond import fact_batch

            facts = fact_batch(texts, self.device)  # (1 or 2, NUM_IDS)

        # 5. Draw all the noise up front from the seed (on the CPU, so a seed means the same
        # video on every device), and set the timesteps for a window's token count.
        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn(c, num_latents, lh, lw, generator=gen).to(self.device)  # (C, f, h, w)
        window = sc.window_latents or cond_lib.latents_for_frames(
            cond_lib.frames_for_seconds(cfg.default_seconds, cfg.fps), tf)
        ph, pw = cfg.dit.patch[1], cfg.dit.patch[2]
        tokens = min(window, num_latents) * (lh // ph) * (lw // pw)
        window_shift = flow.shift_for_tokens(tokens, base_shift=shift)
        ts = flow.timesteps(steps, window_shift).to(self.device)
        if editing:
            ts = torch.cat([ts.new_tensor([strength]), ts[ts < strength]])  # start part-way (SDEdit)
            # an edit starts every frame from the same noisy source, keeps it where strength is 0,
            # and starts from it, not from a start noise: no stagger, refine, steering or picking
            settings = replace(settings, stagger=0.0, refine=0, steer=0.0, best_of=1, finalists=1)
        stated = prompt_facts(model_prompt) if settings.steer or settings.best_of > 1 else None
        wanted = targets(stated) if settings.steer and stated is not None else []  # what steering asks of the objects

        def schedule(free: torch.Tensor) -> torch.Tensor:
            """The window's times: ``ts``, or per frame when staggered (given frames' columns 0: they never move)."""
            if not settings.stagger or int(free.sum()) < 2:
                return ts
            per_frame = ts.new_zeros(len(ts), free.shape[0])  # (steps + 1, f)
            per_frame[:, free] = flow.stagger_timesteps(steps, window_shift, int(free.sum()), settings.stagger).to(self.device)
            return per_frame

        # 6. Denoise window by window; each window gets the latents already made as given frames.
        # Then (refine) its latent frames 1..refine are made again, given all the others: the first
        # pass makes the frames after the first image latent least consistent with it (ghosts that
        # the causal decoder draws in pixel frames 1-4; docs/worldbench.md, "Refining the start").
        windows = plan_windows(mask, window, sc.overlap_latents)
        redos, seen = [], mask.copy()
        for start, end in windows:
            redos.append(refine_mask(torch.from_numpy(seen[start:end]), settings.refine).to(self.device))
            seen[start:end] = True
        chunks = math.ceil(num_latents / sc.decode_chunk_latents)
        # Progress units: one per sampler step, DECODE_COST per decoded chunk (decoding a long
        # video on a CPU takes as long as many steps; the bar should keep moving).
        total_steps = (len(windows) + sum(bool(r.any()) for r in redos)) * (len(ts) - 1) + DECODE_COST * chunks
        picking = settings.best_of > 1 and stated is not None and (~mask[windows[0][0]:windows[0][1]]).sum() >= 2
        look_steps = min(LOOK_STEPS, len(ts) - 2)
        read_units = math.ceil(len(LIKELIHOOD_TIMES) / 2)  # a finalist's flow error: unguided passes, two to a step
        if picking:  # every start's look-ahead and its reading; the picked one's look-ahead steps are its own
            total_steps += settings.best_of * (look_steps + 1) - look_steps
            # each finalist after the first: the first window's rest made again (and refined)
            total_steps += (settings.finalists - 1) * (len(ts) - 1 - look_steps + bool(redos[0].any()) * (len(ts) - 1))
            if settings.finalists > 1 and settings.likelihood:
                total_steps += settings.finalists * read_units
            if settings.finalists > 1 and settings.judge:  # each finalist (the first window) decoded for the judge
                total_steps += settings.finalists * DECODE_COST * math.ceil((windows[0][1] - windows[0][0])
                                                                            / sc.decode_chunk_latents)
        # A video of one window that the judge reads: the kept finalist's decode is the video's (step 7 skipped).
        reuse = picking and settings.finalists > 1 and bool(settings.judge) and windows == [(0, num_latents)]
        if reuse:
            total_steps -= DECODE_COST * chunks
        kept_frames = None
        done_steps = 0

        def tick(*_args, units: int = 1, **_kwargs):  # the sampler's callback, and the decoder's
            nonlocal done_steps
            done_steps += units
            if progress is not None:
                progress(min(1.0, done_steps / total_steps))

        out = known.clone()
        determined = mask.copy()
        sample = samplers.SAMPLERS[settings.sampler]
        for (start, end), redo in zip(windows, redos):
            win_mask = torch.from_numpy(determined[start:end]).to(self.device)
            x = noise[:, start:end]
            if editing:
                x = (1 - strength) * source[:, start:end].to(self.device) + strength * x
            model_fn = self._model_fn(out[None, :, start:end], win_mask, text_states, text_mask, guidance,
                                      guidance_mode, facts)
            keep = win_mask[None, :, None, None]  # (1, f, 1, 1)
            x = torch.where(keep, out[:, start:end], x)  # given frames start in place
            times = schedule(~win_mask)
            candidates = [(noise, x, times)]
            if picking and start == windows[0][0]:  # the layout is set here: pick the start (the whole video's noise)
                drift = world_drift(stated.camera, (num_frames - 1) / cfg.fps, size, lw, tf, cfg.fps)
                candidates = self._pick_start(model_fn, sample, noise, x, keep, times, (start, end), settings.best_of,
                                              gen, stated, drift, look_steps, tick, settings.finalists)

            def finish(x: torch.Tensor, times: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
                """The window from its state ``x`` at ``times[0]`` to its clean latents (C, f, h, w),
                steered while the layout forms; then (``redo``) its latent frames 1..refine made again
                from ``noise``, every other frame given."""
                run = model_fn
                if wanted:  # the first pass only: the refine pass keeps the layout it is given
                    run = steer_wrapper(model_fn, self.probe, wanted, settings.steer)
                made = torch.where(keep, out[:, start:end], sample(run, x[None], times, callback=tick)[0])
                if redo.any():  # the refine pass: from their own noise again, every other frame given, clean
                    # (restarting part-way, from t = 0.6, kept the ghosts: the layout is set at high noise)
                    run = self._model_fn(made[None], ~redo, text_states, text_mask, guidance, guidance_mode, facts)
                    again = redo[None, :, None, None]  # (1, f, 1, 1)
                    x = sample(run, torch.where(again, noise[:, start:end], made)[None], ts, callback=tick)[0]
                    made = torch.where(again, x, made)
                return made

            # (the whole video's noise, the window's latents) per candidate
            made = [(noise, finish(x, times, noise)) for noise, x, times in candidates]
            if len(made) > 1:  # the finalists, made to the end: the probe reads each one's clean latents
                fits = [read_fit(self.probe, w[None], stated, drift, worst=True) for _, w in made]
                errors = None
                if settings.likelihood:  # and the denoiser: how typical each one is for the prompt, on one shared noise
                    plain = self._model_fn(out[None, :, start:end], win_mask, text_states[:1], text_mask[:1], 1.0,
                                           guidance_mode, facts)
                    again = torch.randn(made[0][1].shape, generator=gen).to(self.device)
                    errors = []
                    for _, w in made:
                        errors.append(flow_error(plain, w[None], again, ~win_mask))
                        tick(units=read_units)
                decoded = judged = None
                if settings.judge:  # and the judge, on the decoded clips: each check's chance to pass, learnt
                    decoded = [self.decode(w, tick) for _, w in made]
                    judged = [read_judge(self.judge, palette_tracks(f), stated) for f in decoded]
                picked = pick_finalist(fits, errors, settings.likelihood, judged, settings.judge)
                if on_finalists is not None:
                    readings = {"fit": fits, "error": errors, "judge": judged}
                    on_finalists([w for _, w in made], {k: v for k, v in readings.items() if v is not None}, picked)
                noise, x = made[picked]
                if reuse:
                    kept_frames = decoded[picked]
            else:
                noise, x = made[0]
            out[:, start:end] = x
            determined[start:end] = True

        # 7. Decode the whole latent video, trim the padding.
        frames = (self.decode(out, tick) if kept_frames is None else kept_frames)[:num_frames]  # (F, H, W, 3)

        # 8. Paste the given pixels back: given frames come out exactly as given.
        if not editing:
            frames[given] = pixels[given]
        if progress is not None:
            progress(1.0)
        return frames

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, tick: Callable | None = None) -> np.ndarray:
        """Clean latents (C, f, h, w) -> frames (F, H, W, 3) uint8, decoded in chunks (constant
        memory). The VAE's decode_stream yields the chunks of decode_chunked one by one (same
        result), so each becomes uint8 at once and ``tick(units=...)`` moves a progress bar."""
        from worldreel import precision as precisions

        chunk = self.sampling.decode_chunk_latents
        chunks = math.ceil(latents.shape[1] / chunk)
        pieces = []
        stream = getattr(self.vae, "decode_stream", None)
        chunked = stream(latents[None], chunk_latents=chunk) if stream else \
            [self.vae.decode_chunked(latents[None], chunk_latents=chunk)]
        for video in _autocast_each(chunked, precisions.autocast, self.precision, self.device):  # (1, 3, F_chunk, H, W) in about [-1, 1]
            pieces.append(to_frames(video[0]))  # (F_chunk, H, W, 3) uint8
            if tick is not None:
                tick(units=DECODE_COST * (chunks if stream is None else 1))
        return np.concatenate(pieces)

    def _pick_start(self, model_fn, sample, noise, x, keep, times, window, best_of, gen, facts, drift, look_steps,
                    tick, finalists: int = 1) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Pick the first window's start among ``best_of`` (``steer.rank_starts``): the seed's own
        noise and ``best_of - 1`` more drawn from the seed's generator after it (so a seed still
        means one video). Each runs ``look_steps`` unsteered steps; the best ``finalists`` go on
        from there, best first. x (C, f, h, w): the window's start, given frames in place (kept
        in every start); window: its (start, end); drift: the pan's (``steer.world_drift``).
        Returns per finalist (the whole video's noise, the window's state, the schedule left)."""
        from worldreel.diffusion.samplers import _t_batch
        from worldreel.diffusion.steer import rank_starts

        noises = [noise] + [torch.randn(noise.shape, generator=gen).to(self.device) for _ in range(best_of - 1)]
        starts = [torch.where(keep, x, n[:, window[0]:window[1]])[None] for n in noises]  # (1, C, f, h, w) each
        t = times[look_steps]  # () or per frame (f,)
        t_x = t if t.ndim == 0 else t[None, None, :, None, None]

        def look(start: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            state = sample(model_fn, start, times[:look_steps + 1], callback=tick) if look_steps else start
            tick()
            return state, state - t_x * model_fn(state, _t_batch(t, state))

        order, states, _ = rank_starts(look, starts, self.probe, facts, drift)
        return [(noises[k], states[k][0], times[look_steps:]) for k in order[:finalists]]

    def _encode(self, video: torch.Tensor) -> torch.Tensor:
        """Deterministic VAE encode of (1, 3, F, H, W) in [-1, 1] -> (1, C, f, h, w)."""
        video = video.to(self.device)
        return self.vae.encode_chunked(video, chunk_frames=self.sampling.encode_chunk_frames)

    def _model_fn(self, known, win_mask, text_states, text_mask, guidance, guidance_mode=("cfg", None), facts=None):
        """The DiT as a sampler ``model_fn(x, t)``: guidance batched, given frames clean at t = 0.

        known: (1, C, f, h, w) clean latents (valid where win_mask); win_mask: (f,) bool;
        text_states/text_mask: the prompt, then the negative prompt when guiding; facts: their
        parsed facts (1 or 2, NUM_IDS) for a denoiser with ``fact_cond``, else None;
        guidance_mode: (mode, interval), diffusion/guidance.py. Made anew per window, so a
        rule's state (APG's momentum) starts fresh in each.
        """
        from worldreel import precision as precisions
        from worldreel.diffusion.guidance import DEFAULT_INTERVAL
        from worldreel.diffusion.samplers import cfg_batched_wrapper, frame_condition_wrapper

        dit = self._denoiser()
        contexts: dict = {}  # the text's part of the forward pass, per text batch: made at the first step

        def net(x, t, states, mask):  # the DiT in the chosen precision; guidance and the sampler stay fp32
            with precisions.autocast(self.precision, self.device):
                key = (id(states), id(mask))
                if key not in contexts:  # the tensors are kept with it, so their ids stay theirs
                    # The guidance wrapper's batches are the prompt, or the prompt then the negative one.
                    rows = None if facts is None else facts[:states.shape[0]]
                    contexts[key] = (states, mask, dit.text_context(states, mask, rows))
                v = dit(x, t, context=contexts[key][2])
            return v.float()

        if text_states.shape[0] == 2:
            mode, interval = guidance_mode
            frame_fn = cfg_batched_wrapper(net, text_states[:1], text_mask[:1], text_states[1:], text_mask[1:], guidance,
                                           mode, interval=interval or DEFAULT_INTERVAL)
        else:
            def frame_fn(x, t_frames):
                return net(x, t_frames, text_states, text_mask)
        return frame_condition_wrapper(frame_fn, known, win_mask[None])

    def _denoiser(self):
        """The DiT to sample with. In bf16 on a CPU: a copy whose weights are bf16 already, made once,
        so autocast casts no weight at each of the ~1,400 linear calls of a clip (issue 31: sampling
        a 4 s clip 0.62 -> 0.49 s; the weights are rounded exactly as autocast rounds them). A GPU,
        and fp32, use the DiT as loaded. Made again if ``self.dit`` is replaced."""
        if self.precision != "bf16" or self.device.type != "cpu":
            return self.dit
        source, copy_ = getattr(self, "_bf16_dit", (None, None))
        if source is not self.dit:
            import copy

            copy_ = copy.deepcopy(self.dit).to(torch.bfloat16)
            self._bf16_dit = (self.dit, copy_)
        return copy_

    def _num_frames(self, seconds, frames, conditions, strength) -> int:
        cfg = self.config
        if frames is not None:
            return int(_check_number(frames, "frames", 1, cond_lib.frames_for_seconds(self.sampling.max_seconds, cfg.fps), int))
        if seconds is None and strength is not None and conditions:
            # An edit keeps its source's length.
            return max((c.at_index if c.at_index >= 0 else 0) + len(c.frames) for c in conditions)
        return cond_lib.frames_for_seconds(parse_seconds(seconds, cfg, max_seconds=self.sampling.max_seconds), cfg.fps)

    # -- thin builders: each mode is a set of given frames --------------------------------

    def animate(self, image: np.ndarray, prompt: str, *, seconds=None, **kwargs) -> Video:
        """Image-to-video: ``image`` (H, W, 3) uint8 is the first frame."""
        num = self._num_frames(seconds, None, (), None)
        conds, total = cond_lib.animate_conditions(image, num)
        return self.generate(prompt, conditions=conds, frames=total, **kwargs)

    def extend(self, video: np.ndarray, prompt: str, *, seconds=None, backward: bool = False, **kwargs) -> Video:
        """Continue ``video`` (n, H, W, 3) by ``seconds`` forwards, or make what came before it.

        The result contains the given clip unchanged, plus about ``seconds`` of new video.
        """
        new = self._num_frames(seconds, None, (), None) - 1
        if new < 1:
            raise UserError("extend needs seconds > 0", param="seconds")
        conds, total = cond_lib.extend_conditions(video, new, self.config.vae.time_factor, backward=backward)
        return self.generate(prompt, conditions=conds, frames=total, **kwargs)

    def interpolate(self, first: np.ndarray, last: np.ndarray, prompt: str, *, seconds=None, **kwargs) -> Video:
        """Fill about ``seconds`` between two keyframes or clips (each an image or a video)."""
        conds, total = cond_lib.interpolate_conditions(first, last, self._gap_latents(seconds), self.config.vae.time_factor)
        return self.generate(prompt, conditions=conds, frames=total, **kwargs)

    def loop(self, prompt: str, *, seconds=None, image: np.ndarray | None = None, seed=None,
             rewrite: bool = True, progress=None, **kwargs) -> Video:
        """A seamless loop: the video's last frame flows back into its first.

        Without ``image`` the first frame is generated first (a still from the same prompt
        and seed), then the video interpolates from it back to it.
        """
        seed = secrets.randbelow(2**31) if seed is None else seed
        gap = self._gap_latents(seconds)
        if not isinstance(prompt, str) or not prompt.strip():
            raise UserError("the prompt is empty; describe the video, e.g. 'a red ball rolls right'", param="prompt")
        # Rewrite once, so both phases see the same model prompt (each phase checks it again).
        self.policy.enforce(prompt)
        model_prompt, notes = prompt.strip(), []
        if rewrite:
            rewritten = self.rewriter.rewrite(prompt, seed=seed)
            model_prompt, notes = rewritten.text, rewritten.notes
        if image is None:
            first_progress = (lambda f: progress(0.1 * f)) if progress else None
            still = self.generate(model_prompt, frames=1, seed=seed, rewrite=False, progress=first_progress, **kwargs)
            image = still.frames[0]
        conds, total = cond_lib.loop_conditions(image, gap, self.config.vae.time_factor)
        rest_progress = (lambda f: progress(0.1 + 0.9 * f)) if progress else None
        video = self.generate(model_prompt, conditions=conds, frames=total, seed=seed, rewrite=False,
                              progress=rest_progress, **kwargs)
        video.frames = video.frames[:-1]  # drop the duplicate of the first frame
        video.prompt, video.notes = prompt, notes
        return video

    def edit(self, video: np.ndarray, prompt: str, *, strength: float = 0.6, **kwargs) -> Video:
        """Re-imagine ``video`` (n, H, W, 3) with a new prompt; strength 0 keeps it, 1 ignores it."""
        strength = _check_number(strength, "strength", 0.0, 1.0)
        clip = cond_lib.as_clip(video)
        return self.generate(prompt, conditions=[Condition(clip, 0)], frames=len(clip), strength=strength, **kwargs)

    def _gap_latents(self, seconds) -> int:
        """Latent frames between two keyframes: ``seconds`` of video, keyframes included, in whole latents.

        4 s at 8 fps is the model's native 9 latents: 7 between the two keyframe latents.
        """
        cfg = self.config
        secs = parse_seconds(seconds, cfg, max_seconds=self.sampling.max_seconds)
        latents = cond_lib.latents_for_frames(cond_lib.frames_for_seconds(secs, cfg.fps), cfg.vae.time_factor)
        return max(1, latents - 2)


def _autocast_each(chunks, autocast, precision: str, device):
    """Yield a (lazy) iterable's items, each computed under ``autocast(precision, device)``,
    without holding the autocast open while the caller works on them."""
    iterator = iter(chunks)
    while True:
        with autocast(precision, device):
            item = next(iterator, None)
        if item is None:
            return
        yield item


def _is_supported(size: tuple[int, int], cfg: ModelConfig) -> bool:
    try:
        parse_size(size, cfg)
    except UserError:
        return False
    return True
