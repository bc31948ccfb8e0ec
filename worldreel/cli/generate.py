"""CLI commands: generate, animate, extend, interpolate, loop, edit; and ``bench drift``.

Every mode takes the same options after its own (``SHARED_OPTIONS``: length and size, the
sampler's options ``SAMPLER_OPTIONS``, seed, negative prompt, model, output and the rest) and
runs the one loop in ``pipelines/generate.py``. The output format follows the extension of ``--out``: .mp4
(H.264), .gif, or .png (a still image). Bad input is a one-line error naming the
parameter (exit 2) and nothing is written; files are written atomically by ``video_io``.
Heavy imports (torch, PyAV) stay inside the command bodies so ``worldreel --help`` is fast.
"""
from __future__ import annotations

import functools
import inspect
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from worldreel.errors import UserError

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
OUTPUT_EXTS = {".mp4", ".gif", ".png"}

# -- the one set of options ---------------------------------------------------------------
Seconds = Annotated[Optional[str], typer.Option("--seconds", help="Length in seconds (0 = a still image; more than 4 s is made in overlapping windows).")]
Size = Annotated[Optional[str], typer.Option("--size", help="WxH, each side a multiple of 16 (default: the model's, or the input's).")]
Steps = Annotated[Optional[int], typer.Option("--steps", help="Sampler steps per window.")]
Guidance = Annotated[Optional[float], typer.Option("--guidance", help="Classifier-free guidance scale (1 = off).")]
Shift = Annotated[Optional[float], typer.Option("--shift", help="Timestep shift at the native clip (1 = none; more spends the steps nearer noise).")]
GuidanceMode = Annotated[Optional[str], typer.Option("--guidance-mode", help="How guidance combines the two passes: cfg, interval, zero-star or apg (default: the model's).")]
GuidanceInterval = Annotated[Optional[str], typer.Option("--guidance-interval", help="LO,HI: the noise levels (1 = noise) where --guidance-mode interval guides.")]
Stagger = Annotated[Optional[float], typer.Option("--stagger", help="How far the first frame runs ahead of the last while denoising (0 = all together; default: the model's).")]
Refine = Annotated[Optional[int], typer.Option("--refine", help="Latent frames after the first made again given all the others, against ghosts at the start (0 = off; default: the model's).")]
Steer = Annotated[Optional[float], typer.Option("--steer", help="Push each object the prompt states its stated way (left, right, up, down, still) while the layout forms, with the model's state probe (0 = off; default: the model's).")]
BestOf = Annotated[Optional[int], typer.Option("--best-of", help="Start noises to pick from: each runs a few steps and the model's state probe keeps the one whose layout best fits the prompt (1 = the seed's own; default: the model's). Each extra start costs about a tenth of a clip's time (best of 8: 1.5 -> 2.4 s on 2 CPU cores).")]
Finalists = Annotated[Optional[int], typer.Option("--finalists", help="Of the --best-of starts, how many are made to the end and read again by the state probe, which keeps the one that fits the prompt best (1 = the best start's only; default: the model's). Each finalist after the first costs about half a clip's time.")]
Likelihood = Annotated[Optional[float], typer.Option("--likelihood", help="How much the finalists' reading weighs how typical each finished clip is for the prompt by the model's own denoiser, against the state probe's fit (0 = the probe's only; default: the model's). Four unguided passes per finalist: a few per cent of a clip's time.")]
Judge = Annotated[Optional[float], typer.Option("--judge", help="How much the finalists' reading weighs the model's judge, a reader learnt from its own finalists that gives each world-bench check's chance to pass (0 = not read; default: the model's). Needs the model folder's judge.safetensors; the finalists are decoded for it: about 3 % of a clip's time.")]
Seed = Annotated[Optional[int], typer.Option("--seed", help="Seed; the same seed gives the same video (default: random, printed).")]
Negative = Annotated[str, typer.Option("--negative-prompt", help="What the video should not look like.")]
Model = Annotated[str, typer.Option("--model", help="A shipped model name or a model folder.")]
Out = Annotated[Optional[Path], typer.Option("--out", help="Output file: .mp4, .gif or .png (default: worldreel-<mode>-<seed>.mp4).")]
ShowPrompt = Annotated[bool, typer.Option("--show-prompt", help="Print the prompt the model was given.")]
NoRewrite = Annotated[bool, typer.Option("--no-rewrite", help="Give the prompt to the model exactly as typed.")]
Device = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1, mps ...")]
Precision = Annotated[str, typer.Option("--precision", help="auto (default: bf16 where the hardware runs it natively, a GPU or a CPU with AMX or AVX512-BF16, else fp32), fp32 (the weights as trained, on every machine) or bf16. bf16 samples about 1.3x faster on AMX; world-bench within noise of fp32 (docs/training.md).")]
RewriteURL = Annotated[Optional[str], typer.Option("--rewrite-endpoint", help="Base URL of an OpenAI-compatible chat API for prompt rewriting (optional).")]
RewriteModel = Annotated[str, typer.Option("--rewrite-model", help="Chat model name for --rewrite-endpoint.")]
RewriteKey = Annotated[Optional[Path], typer.Option("--rewrite-key-file", help="File holding the API key for --rewrite-endpoint.")]
NoWatermark = Annotated[bool, typer.Option("--no-watermark", help="Research only: leave out the invisible watermark (docs/safety.md).")]
NoSign = Annotated[bool, typer.Option("--no-sign", help="Research only: leave out the C2PA provenance manifest (docs/safety.md).")]


# The sampler's options (pipelines/generate.py SAMPLING_OPTIONS, but the sampler itself, which
# a model's config.json sets): every generation command and bench world take them; None is
# the model's own.
SAMPLER_OPTIONS = [
    ("steps", Steps, None), ("guidance", Guidance, None), ("shift", Shift, None), ("guidance_mode", GuidanceMode, None),
    ("guidance_interval", GuidanceInterval, None), ("stagger", Stagger, None), ("refine", Refine, None),
    ("steer", Steer, None), ("best_of", BestOf, None), ("finalists", Finalists, None), ("likelihood", Likelihood, None),
    ("judge", Judge, None),
]

# Every generation command's options after its own, in this order, with these defaults.
SHARED_OPTIONS = [
    ("seconds", Seconds, None), ("size", Size, None), *SAMPLER_OPTIONS, ("seed", Seed, None), ("negative_prompt", Negative, ""),
    ("model", Model, "world-tiny"), ("out", Out, None), ("show_prompt", ShowPrompt, False),
    ("no_rewrite", NoRewrite, False), ("device", Device, "cpu"),
    ("rewrite_endpoint", RewriteURL, None), ("rewrite_model", RewriteModel, "default"),
    ("rewrite_key_file", RewriteKey, None), ("no_watermark", NoWatermark, False), ("no_sign", NoSign, False),
    ("precision", Precision, "auto"),
]


def with_options(options: list, into: str = "opts"):
    """A decorator: ``body(own arguments..., <into>)`` as a command taking its own arguments, then
    ``options`` ((name, typer annotation, default) each), which reach the body as one dict named
    ``into`` (typer reads the parameters from the signature)."""
    def wrap(body):
        own = [p for p in inspect.signature(body, eval_str=True).parameters.values() if p.name != into]
        shared = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=kind, default=default)
                  for name, kind, default in options]

        @functools.wraps(body)
        def command(**given):
            chosen = {name: given.pop(name) for name, _, _ in options}
            return body(**given, **{into: chosen})

        command.__signature__ = inspect.Signature(own + shared)
        command.__annotations__ = {p.name: p.annotation for p in own + shared}
        return command

    return wrap


generation_command = with_options(SHARED_OPTIONS)  # every generation command: its own arguments, then SHARED_OPTIONS


def sampler_options(opts: dict) -> dict:
    """The sampler options among a command's ``opts`` (SAMPLER_OPTIONS): {name: value}, None where not given."""
    return {name: opts[name] for name, _, _ in SAMPLER_OPTIONS}


# -- helpers ------------------------------------------------------------------------------


def read_frames(path: Path, param: str, fps: int):
    """An image as a 1-frame clip, or a video resampled to ``fps``: uint8 (n, H, W, 3)."""
    from worldreel.data import video_io
    from worldreel.pipelines.conditioning import resample_fps

    path = Path(path)
    if not path.is_file():
        raise UserError(f"cannot read {path}: no such file", param=param)
    try:
        if path.suffix.lower() in IMAGE_EXTS:
            return video_io.read_image(path)[None]  # (1, H, W, 3)
        frames, source_fps = video_io.read_video(path)
    except UserError as err:  # video_io names the file and says why; the CLI names the argument
        raise UserError(err.message if str(path) in err.message else f"cannot read {path}: {err.message}", param=param) from None
    return resample_fps(frames, source_fps, fps)


def _check_out(out: Path | None, mode: str, seed: int, still: bool) -> Path:
    """The output path, checked before any work so a bad one costs nothing."""
    if out is None:
        out = Path(f"worldreel-{mode}-{seed}{'.png' if still else '.mp4'}")
    ext = out.suffix.lower()
    if ext not in OUTPUT_EXTS:
        raise UserError(f"cannot write {out}: the output must end in one of {sorted(OUTPUT_EXTS)}", param="out")
    if not out.parent.exists():
        raise UserError(f"cannot write {out}: folder {out.parent} does not exist", param="out")
    return out


def _write(out: Path, video, mode: str, opts: dict, gen, parent: Path | None) -> None:
    """The final output step (safety/output.py): watermark, write, sign an MP4; say what was left out."""
    from worldreel.safety.output import OutputOptions, prompt_hash, weights_digest, write_output

    if opts["no_watermark"]:
        print("warning: --no-watermark: this output carries no invisible watermark", file=sys.stderr)
    if opts["no_sign"]:
        print("warning: --no-sign: this output carries no C2PA provenance manifest", file=sys.stderr)
    generation = {"mode": mode, "model": str(opts["model"]), "weights_digest": weights_digest(gen), "seed": video.seed,
                  "sampling": video.sampling, "precision": gen.precision, "prompt_sha256": prompt_hash(video.prompt),
                  "model_prompt_sha256": prompt_hash(video.model_prompt)}
    record = write_output(out, video.frames, video.fps, generation, parent=parent,
                          options=OutputOptions(watermark=not opts["no_watermark"], sign=not opts["no_sign"]))
    if record.payload is not None:
        print(f"watermark payload: {record.payload}", file=sys.stderr)


def _run(mode: str, prompt: str, opts: dict, call, *, read=None, still: bool = False, parent: Path | None = None) -> None:
    """Shared body of every mode: check options, load, read inputs, generate with a progress bar, write.

    read(gen) -> inputs reads the input files (before the bar starts);
    call(gen, inputs, common_kwargs, progress) -> Video runs the mode;
    parent: the source video of an extension or edit (its manifest's parent ingredient).
    """
    import secrets

    from tqdm import tqdm

    # 1. Options that need no model: prompt, output path, seed, rewriter.
    if not prompt.strip():
        raise UserError("the prompt is empty; describe the video, e.g. 'a red ball falls and bounces'", param="prompt")
    seed = opts["seed"] if opts["seed"] is not None else secrets.randbelow(2**31)
    if opts["seed"] is not None and opts["seed"] < 0:
        raise UserError(f"seed must be 0 or more, got {opts['seed']}", param="seed")
    out = opts["out"]
    wants_png = out is not None and out.suffix.lower() == ".png"
    if wants_png and mode != "generate":
        raise UserError(f"{mode} makes a video; write it to .mp4 or .gif", param="out")
    out = _check_out(out, mode, seed, still or wants_png)
    from worldreel.pipelines.generate import check_sampling

    check_sampling(**sampler_options(opts))
    rewriter = _rewriter(opts)

    # 2. Load the model (a UserError names a missing model), check sizes, read the inputs.
    from worldreel.pipelines.generate import Generator, parse_seconds, parse_size

    gen = Generator.load(opts["model"], device=opts["device"], rewriter=rewriter, precision=opts["precision"])
    if opts["seconds"] is not None:
        parse_seconds(opts["seconds"], gen.config)  # fail before reading inputs
    if opts["size"] is not None:
        parse_size(opts["size"], gen.config)
    inputs = read(gen) if read is not None else None
    if opts["seed"] is None:
        print(f"seed: {seed}", file=sys.stderr)

    # 3. Generate with a progress bar on stderr.
    common = dict(size=opts["size"], seed=seed, negative_prompt=opts["negative_prompt"], rewrite=not opts["no_rewrite"],
                  **sampler_options(opts))
    with tqdm(total=100, desc=mode, unit="%", file=sys.stderr, leave=False,
              bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}") as bar:
        def progress(fraction: float) -> None:
            bar.n = round(100 * fraction)
            bar.refresh()

        video = call(gen, inputs, common, progress)
    for note in video.notes:
        print(f"note: {note}", file=sys.stderr)
    if opts["show_prompt"]:
        print(f"model prompt: {video.model_prompt}")

    # 4. Watermark, write (atomically: a failure leaves no file behind), sign.
    _write(out, video, mode, opts, gen, parent)
    print(f"wrote {out} ({len(video.frames)} frame{'s' if len(video.frames) != 1 else ''}, "
          f"{video.size[0]}x{video.size[1]}, {video.seconds:g} s, seed {video.seed})")


def _rewriter(opts: dict):
    from worldreel.pipelines.prompts import ChatEndpoint, PromptRewriter

    if not opts["rewrite_endpoint"]:
        return PromptRewriter()
    key = None
    if opts["rewrite_key_file"] is not None:
        try:
            key = Path(opts["rewrite_key_file"]).read_text().strip()
        except OSError as err:
            raise UserError(f"cannot read {opts['rewrite_key_file']}: {err.strerror}", param="rewrite-key-file") from None
    return PromptRewriter(ChatEndpoint(url=opts["rewrite_endpoint"], model=opts["rewrite_model"], api_key=key))


# -- commands -----------------------------------------------------------------------------


def register(groups) -> None:
    """Add this module's commands to the CLI groups ("" is the top level)."""
    app, bench = groups[""], groups["bench"]

    @app.command("generate")
    @generation_command
    def generate(prompt: Annotated[str, typer.Argument(help="What happens, e.g. 'a red ball falls and bounces'.")],
                 opts: dict) -> None:
        """Text to video (or a still image with --seconds 0 or --out FILE.png)."""
        seconds, out = opts["seconds"], opts["out"]
        png = out is not None and out.suffix.lower() == ".png"
        if png and seconds is not None and _float_or_none(seconds) not in (0.0, None):
            raise UserError("a .png is a still image: leave out --seconds (or give 0), or write .mp4/.gif", param="seconds")
        still = png or _float_or_none(seconds) == 0.0
        _run("generate", prompt, opts, lambda gen, _, kw, progress: gen.generate(
            prompt, seconds=0 if png else seconds, progress=progress, **kw), still=still)

    @app.command("animate")
    @generation_command
    def animate(image: Annotated[Path, typer.Argument(help="The first frame (PNG/JPEG; a video's first frame also works).")],
                prompt: Annotated[str, typer.Argument(help="What happens next.")], opts: dict) -> None:
        """Image to video: the image is the first frame, unchanged."""
        def call(gen, frames, kw, progress):
            return gen.animate(frames[0], prompt, seconds=opts["seconds"], progress=progress, **kw)

        _run("animate", prompt, opts, call, read=lambda gen: read_frames(image, "image", gen.config.fps))

    @app.command("extend")
    @generation_command
    def extend(video: Annotated[Path, typer.Argument(help="The clip to continue (MP4, GIF; an image works as a 1-frame clip).")],
               prompt: Annotated[str, typer.Argument(help="What happens in the new part.")],
               backward: Annotated[bool, typer.Option("--backward", help="Make what came before the clip instead.")] = False,
               *, opts: dict) -> None:
        """Continue a clip by --seconds (or make what came before it); the clip comes out unchanged."""
        def call(gen, frames, kw, progress):
            return gen.extend(frames, prompt, seconds=opts["seconds"], backward=backward, progress=progress, **kw)

        _run("extend", prompt, opts, call, read=lambda gen: read_frames(video, "video", gen.config.fps), parent=video)

    @app.command("interpolate")
    @generation_command
    def interpolate(first: Annotated[Path, typer.Argument(help="The start: an image or a video.")],
                    last: Annotated[Path, typer.Argument(help="The end: an image or a video.")],
                    prompt: Annotated[str, typer.Argument(help="What happens in between.")], opts: dict) -> None:
        """Fill the frames between two keyframes, or join two clips with a transition."""
        def read(gen):
            return read_frames(first, "first", gen.config.fps), read_frames(last, "last", gen.config.fps)

        def call(gen, clips, kw, progress):
            return gen.interpolate(clips[0], clips[1], prompt, seconds=opts["seconds"], progress=progress, **kw)

        _run("interpolate", prompt, opts, call, read=read)

    @app.command("loop")
    @generation_command
    def loop(prompt: Annotated[str, typer.Argument(help="What happens; the end flows back into the start.")],
             opts: dict) -> None:
        """A seamless loop: the last frame flows back into the first."""
        _run("loop", prompt, opts,
             lambda gen, _, kw, progress: gen.loop(prompt, seconds=opts["seconds"], progress=progress, **kw))

    @app.command("edit")
    @generation_command
    def edit(video: Annotated[Path, typer.Argument(help="The clip to re-imagine.")],
             prompt: Annotated[str, typer.Argument(help="The new description.")],
             strength: Annotated[float, typer.Option("--strength", help="0 keeps the clip, 1 ignores it.")] = 0.6,
             *, opts: dict) -> None:
        """Re-imagine a clip with a new prompt (--strength S from 0 to 1)."""
        if not 0.0 <= strength <= 1.0:
            raise UserError(f"strength must be from 0 to 1, got {strength}", param="strength")

        def read(gen):
            frames = read_frames(video, "video", gen.config.fps)
            if opts["seconds"] is not None:  # edit the first --seconds of the clip
                from worldreel.pipelines.conditioning import frames_for_seconds
                from worldreel.pipelines.generate import parse_seconds

                frames = frames[: frames_for_seconds(parse_seconds(opts["seconds"], gen.config), gen.config.fps)]
            return frames

        def call(gen, frames, kw, progress):
            return gen.edit(frames, prompt, strength=strength, progress=progress, **kw)

        _run("edit", prompt, opts, call, read=read, parent=video)

    @bench.command("drift")
    def drift(
        model: Model = "world-tiny",
        json_out: Annotated[Path, typer.Option("--json", help="Write the results here (JSON).")] = Path("drift.json"),
        prompts: Annotated[int, typer.Option("--prompts", help="How many reel-world prompts (sampled scenes).")] = 8,
        seconds: Annotated[float, typer.Option("--seconds", help="Length of each video.")] = 12.0,
        window: Annotated[float, typer.Option("--window", help="Seconds per scored window.")] = 4.0,
        steps: Steps = None, guidance: Guidance = None,
        seed: Annotated[int, typer.Option("--seed", help="First scene and generation seed.")] = 0,
        device: Device = "cpu",
    ) -> None:
        """world-bench per window over long videos: windowed extension vs last-frame image-to-video chaining."""
        from tqdm import tqdm

        from worldreel.eval.drift import DriftConfig, run_drift
        from worldreel.pipelines.generate import Generator

        if prompts < 1:
            raise UserError("--prompts must be at least 1", param="prompts")
        if json_out.suffix.lower() != ".json" or not json_out.parent.exists():
            raise UserError(f"cannot write {json_out}: give a .json file in an existing folder", param="json")
        gen = Generator.load(model, device=device)
        cfg = DriftConfig(prompts=prompts, seconds=seconds, window_seconds=window, steps=steps, guidance=guidance, seed=seed)
        with tqdm(total=100, desc="drift", unit="%", file=sys.stderr, leave=False,
                  bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}") as bar:
            def progress(fraction: float) -> None:
                bar.n = round(100 * fraction)
                bar.refresh()

            result = run_drift(gen, cfg, progress=progress)
        result["model"] = model
        from worldreel.atomic import write_json

        write_json(json_out, result)
        for method in ("windowed", "chained", "truth"):
            row = result["summary"][method]
            print(f"{method:9s} world-bench per {window:g} s window: " + "  ".join(f"{s:.3f}" for s in row["score"]))
        print(f"wrote {json_out}")


    @bench.command("direction")
    def direction(
        models: Annotated[list[str], typer.Option("--model", help="A shipped model name or a model folder; repeat it to compare models side by side (the first is the baseline).")] = ["world-tiny"],  # noqa: B006
        json_out: Annotated[Path, typer.Option("--json", help="Write the results here (JSON).")] = Path("direction.json"),
        seeds: Annotated[int, typer.Option("--seeds", help="Seeds per subject and side.")] = 8,
        modes: Annotated[str, typer.Option("--modes", help="text (text-to-video), image (image-to-video from a resting first frame), or both: text,image.")] = "text,image",
        steps: Steps = None, guidance: Guidance = None, stagger: Stagger = None, device: Device = "cpu",
        precision: Precision = "auto",
    ) -> None:
        """Does "left"/"right" in the prompt decide the motion? Swapped prompts, same seeds (eval/direction.py)."""
        from rich.console import Console
        from rich.table import Table
        from tqdm import tqdm

        from worldreel.atomic import write_json
        from worldreel.eval.direction import MODES, DirectionConfig, run_direction, video_count
        from worldreel.pipelines.generate import Generator, check_sampling

        if not 1 <= seeds <= 1000:
            raise UserError(f"--seeds must be from 1 to 1000, got {seeds}", param="seeds")
        chosen = tuple(m.strip() for m in modes.split(",") if m.strip())
        if not chosen or any(m not in MODES for m in chosen):
            raise UserError(f"--modes must list {' and/or '.join(MODES)}, got {modes!r}", param="modes")
        if json_out.suffix.lower() != ".json" or not json_out.parent.exists():
            raise UserError(f"cannot write {json_out}: give a .json file in an existing folder", param="json")
        check_sampling(steps=steps, guidance=guidance, stagger=stagger)
        cfg = DirectionConfig(seeds=seeds, modes=chosen, steps=steps, guidance=guidance, stagger=stagger)
        results = []
        for model in models:
            gen = Generator.load(model, device=device, precision=precision)
            with tqdm(total=video_count(cfg), desc=f"direction {model}", unit="video",
                      file=sys.stderr, leave=False) as bar:
                def progress(fraction: float) -> None:
                    bar.n = round(fraction * bar.total)
                    bar.refresh()

                result = run_direction(gen, cfg, progress=progress)
            results.append({"model": model, "precision": gen.precision, **result})
        write_json(json_out, {"benchmark": "direction", "results": results})
        table = Table(title="Does the stated side decide the motion? (same seeds both ways)")
        table.add_column("")
        for r in results:
            table.add_column(r["model"], justify="right")
        for mode in chosen:
            for key, label in (("follows", "moves as stated"), ("other_way", "moves the other way"),
                               ("both", "follows both sides (pairs)")):
                table.add_row(f"{mode}: {label}", *[f"{r['summary'][mode][key]:.0%}" for r in results])
            for side in ("right", "left"):
                table.add_row(f"{mode}: stated {side}, moves so",
                              *[f"{r['summary'][mode]['by_side'][side]['follows']:.0%}" for r in results])
        Console().print(table)
        n = results[0]["summary"][chosen[0]]
        print(f"{n['videos']} videos and {n['pairs']} left/right pairs per mode and model; wrote {json_out}")


def _float_or_none(value):
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
