"""The one trainer: a flat ``main(cfg)`` loop that trains any ``Task`` (train/task.py).

One process (CPU or one GPU):

    worldreel train vae --preset world-tiny --steps 3000

Several processes on one machine (DDP by default; ``--set train.parallel=fsdp`` shards the
weights for large presets; gloo between CPU processes, NCCL between GPUs):

    torchrun --standalone --nproc_per_node 4 -m worldreel train dit --preset world-base

Several machines: the same command on each with ``--nnodes N --node_rank R
--rdzv_endpoint HOST:PORT`` instead of ``--standalone`` (checkpoints on a shared disk).

The run folder (``runs/<preset>/<task>/`` by default) holds ``checkpoints/`` (atomic, the
last N), ``tb/`` (TensorBoard), ``log.jsonl`` (the same numbers as JSON lines), ``samples/``
(the task's ``evaluate`` output), ``run.json`` (the configs) and, at the end, ``model/``: a
model folder with ``config.json`` and the task's exported (EMA) weights.

SIGTERM or SIGINT finishes the current step, saves a checkpoint and returns normally
(``result["stopped"]``); ``resume=True`` continues from the newest checkpoint with the same
model, EMA, optimiser, learning rate, RNG streams and data position, so a stopped and
resumed run follows the same loss curve as an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import math
import random
import signal
import sys
import threading
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worldreel.atomic import write_json, write_text
from worldreel.config import apply_overrides, to_dict
from worldreel.errors import UserError
from worldreel.model_folder import StageRecord, write_config
from worldreel.presets import ModelConfig
from worldreel.train import checkpoint, distributed, records
from worldreel.train.config import TrainConfig
from worldreel.train.ema import EMA

# Tasks known by name; any other Task is named "package.module:Class".
TASKS = {"vae": "worldreel.train.vae_task:VAETask", "dit": "worldreel.train.dit_task:DiTTask"}


@dataclass
class RunConfig:
    task: str = "vae"  # "vae", "dit", or "package.module:Class" of any Task(model_cfg, train_cfg)
    model: ModelConfig = field(default_factory=ModelConfig)  # architecture (a preset's model, overridden)
    train: TrainConfig = field(default_factory=TrainConfig)  # the recipe (a preset's train_<task>, overridden)
    run_dir: str = ""  # run folder; "" = runs/<model.name>/<task name>
    resume: bool = False  # continue from the newest checkpoint in <run_dir>/checkpoints
    task_options: list[str] = field(default_factory=list)  # "key=value" overrides of the task's own config (cfg)
    command: str = ""  # the command that started the run, for the stage record ("" = spelt from the settings)


def load_task(spec: str, model_cfg: ModelConfig, train_cfg: TrainConfig, options: list[str] | tuple = ()) -> Any:
    """Build the task named ``spec`` ("vae", "dit" or "module:Class") from the two configs.

    ``options`` ("key=value") override the task's own config dataclass, when its constructor
    takes one as ``cfg`` (``DiTTaskConfig``, ``VAETaskConfig``); the CLI spells them
    ``--set task.key=value``.
    """
    target = TASKS.get(spec, spec)
    if ":" not in target:
        raise UserError(f"unknown task {spec!r}; use one of {sorted(TASKS)} or package.module:Class", param="task")
    module_name, class_name = target.split(":", 1)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and module_name.startswith(err.name):
            raise UserError(f"task {spec!r} needs module {module_name}, which this installation lacks", param="task") from None
        raise
    if not hasattr(module, class_name):
        raise UserError(f"module {module_name} has no task class {class_name}", param="task")
    cls = getattr(module, class_name)
    kwargs = {}
    options_cls = _task_options_class(cls)
    if options_cls is not None:
        kwargs["cfg"] = apply_overrides(options_cls(), list(options))
    elif options:
        raise UserError(f"task {spec!r} has no options of its own; got {list(options)}", param="task")
    return cls(model_cfg, train_cfg, **kwargs)


def _task_options_class(cls) -> type | None:
    """The dataclass a task's constructor takes as ``cfg`` (``Optional[X]`` unwrapped), if any."""
    try:
        hint = typing.get_type_hints(cls.__init__).get("cfg")
    except Exception:  # unresolvable annotations: no options
        return None
    for candidate in (hint, *typing.get_args(hint)):
        if isinstance(candidate, type) and dataclasses.is_dataclass(candidate):
            return candidate
    return None


def lr_at(step: int, tc: TrainConfig) -> float:
    """Learning rate for 0-based ``step``: linear warmup to ``lr``, then cosine to ``min_lr * lr``."""
    if step < tc.warmup:
        return tc.lr * (step + 1) / tc.warmup
    progress = min(1.0, (step - tc.warmup) / max(1, tc.steps - tc.warmup))
    return tc.lr * (tc.min_lr + (1.0 - tc.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def main(cfg: RunConfig) -> dict:
    """Train ``cfg.task``; returns {"step", "stopped", "rank", "loss", "run_dir", "checkpoint", "model_dir"}."""
    tc = cfg.train
    # 1. Processes, device, precision.
    d = distributed.setup(tc.device)
    from worldreel import precision as precisions

    compute = precisions.resolve(tc.precision, d.device, param="train.precision")  # "fp32" or "bf16"
    use_bf16 = compute == "bf16"  # bf16 autocast; weights, optimiser state and loss stay fp32
    fsdp = d.enabled and tc.parallel == "fsdp"
    writer = bar = None

    def say(msg: str) -> None:  # rank 0 speaks; through the progress bar when one is drawn
        if d.main:
            bar.write(msg, file=sys.stderr) if bar is not None and not bar.disable else print(msg, file=sys.stderr, flush=True)

    stop = _StopRequest(say)
    try:
        # 2. Task and model, initialised identically on every rank.
        task = load_task(cfg.task, cfg.model, tc, cfg.task_options)
        run = Path(cfg.run_dir or Path("runs") / cfg.model.name / task.name)
        ckpt_dir = run / "checkpoints"
        torch.manual_seed(tc.seed)
        model = task.build_model().to(d.device)
        if tc.grad_checkpointing:
            if hasattr(model, "set_grad_checkpointing"):
                model.set_grad_checkpointing(True)
            else:
                say(f"warning: {type(model).__name__} has no set_grad_checkpointing(); train.grad_checkpointing ignored")
        if use_bf16 and d.device.type == "cpu" and hasattr(model, "set_channels_last"):
            model.set_channels_last(True)  # conv models (the autoencoder): oneDNN's fast bf16 layout on a CPU
        n_params = sum(p.numel() for p in model.parameters())
        if tc.compile:
            model.compile()  # in place: the state dict keeps its keys; compiles on the first batch of each shape
        unit = distributed.wrap(task, model, d, parallel=tc.parallel, find_unused=tc.find_unused)
        # On a CPU the fused AdamW kernel: one pass per parameter instead of ~8 elementwise
        # ops (issue 31: the for-loop optimiser was ~15 % of a bf16 step). GPUs keep the default.
        # A task may split the parameters into groups with their own learning-rate scale.
        groups = task.param_groups(model) if hasattr(task, "param_groups") else [{"params": list(model.parameters())}]
        optimizer = torch.optim.AdamW(groups, lr=tc.lr, betas=tc.betas, weight_decay=tc.weight_decay,
                                      fused=True if d.device.type == "cpu" and not d.enabled else None)
        ema = EMA(model, tc.ema) if tc.ema > 0 else None

        # 3. Per-rank random streams: global torch/numpy/python and the loss generator.
        _seed_all(tc.seed, d.rank, 0)
        generator = torch.Generator(device=d.device).manual_seed(_stream_seed(tc.seed, d.rank, 0))

        # 4. Resume: model, EMA, optimiser, RNG and step from the newest checkpoint.
        start_step, elapsed = 0, 0.0
        if not cfg.resume and checkpoint.list_checkpoints(ckpt_dir):
            last = checkpoint.list_checkpoints(ckpt_dir)[-1][0]
            raise UserError(
                f"{run} already holds checkpoints (up to step {last}); pass --resume to continue it or --out for a new run",
                param="resume",
            )
        found = checkpoint.load_latest(ckpt_dir) if cfg.resume else None
        if found is not None:
            state, path = found
            start_step, elapsed = int(state["step"]), float(state["elapsed"])
            saved_model_cfg = json.loads(state["model_config"])
            if saved_model_cfg != json.loads(json.dumps(to_dict(cfg.model))):
                say("warning: the model config differs from the checkpoint's; loading may fail")
            checkpoint.load_model_and_optimizer(model, optimizer, state)
            if ema is not None and state.get("ema") is not None:
                ema.load_full_state(state["ema"])
            if state["world_size"] == d.world_size:
                checkpoint.set_rng_state(state["rng"][d.rank], generator)
            else:  # other process count: fresh streams, derived from the step (continues, not bit-exact)
                say(f"note: checkpoint from {state['world_size']} processes, now {d.world_size}: RNG streams re-seeded")
                _seed_all(tc.seed, d.rank, start_step)
                generator.manual_seed(_stream_seed(tc.seed, d.rank, start_step))
            del state
            say(f"resumed from {path} (step {start_step})")
        elif cfg.resume:
            say(f"no checkpoint in {ckpt_dir}: starting from step 0")

        # 5. Run folder, logs and progress bar (rank 0 writes every file).
        if d.main:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            checkpoint.clean_temp(ckpt_dir)
            task_config = to_dict(task.cfg) if dataclasses.is_dataclass(getattr(task, "cfg", None)) else None
            record = {"task": cfg.task, "task_options": cfg.task_options,
                      "task_config": task_config,  # every option's value, defaults included
                      "model": to_dict(cfg.model), "train": to_dict(tc),
                      "precision": compute}  # what train.precision resolved to on this machine
            if hasattr(task, "data_facts"):  # the data as it is now (a latent cache can grow later)
                record["data"] = task.data_facts()
            write_json(run / "run.json", record)
            # The model named by task.init may be replaced later: keep its stage records as they are now.
            records.start_lineage(run, task.name, getattr(getattr(task, "cfg", None), "init", ""), resumed=start_step > 0)
            _truncate_log(run / "log.jsonl", start_step)
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(run / "tb"), purge_step=start_step)
        say(
            f"training {task.name} ({n_params / 1e6:.2f}M parameters) on {d.world_size} x {d.device.type}"
            f"{' (' + tc.parallel + ')' if d.enabled else ''}, {'bf16 autocast' if use_bf16 else 'fp32'}; run folder {run}"
        )
        if d.main:
            from tqdm import tqdm

            bar = tqdm(total=tc.steps, initial=start_step, disable=not tc.progress, dynamic_ncols=True, file=sys.stderr, unit="step")

        # 6. The loop. batches() receives the number of batches this rank already drew.
        batches = task.batches(seed=tc.seed, rank=d.rank, world_size=d.world_size, start_step=start_step * tc.accum)
        stop_every = 1 if d.device.type == "cpu" else 10  # a stop vote is a collective: rarer on GPU
        window: dict[str, Any] = _new_window()
        step, stopped, ckpt_path = start_step, False, None
        loss_value = float("nan")
        stop.install()
        t_start = stop.clock()
        while step < tc.steps:
            # 6a. Learning rate of this step (a pure function of the step: resumes exactly).
            lr = lr_at(step, tc)
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
            # 6b. Forward and backward over ``accum`` micro-batches; gradients sync on the last.
            for micro in range(tc.accum):
                try:
                    batch = _to_device(next(batches), d.device)
                except StopIteration:
                    raise RuntimeError(f"{type(task).__name__}.batches() ended; it must be endless") from None
                last_micro = micro == tc.accum - 1
                if fsdp:
                    unit.set_requires_gradient_sync(last_micro)
                sync = contextlib.nullcontext() if last_micro or not d.enabled or fsdp else unit.no_sync()
                with sync, torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    loss, logs = unit(batch, generator)
                (loss / tc.accum).backward()
                window["loss"] += loss.detach().float()
                window["micro"] += 1
                window["items"] += float(logs.get("items", _count_items(batch)))
                window["tokens"] += float(logs.get("tokens", 0.0))
                for k, v in logs.items():
                    if k not in ("items", "tokens"):
                        window["logs"][k] = window["logs"].get(k, 0.0) + float(v)
            # 6c. Clip, step, average.
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip if tc.grad_clip > 0 else float("inf"))
            window["norm"] += _full(norm).float()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(model, step + 1)
            step += 1
            window["steps"] += 1
            stop.mark()
            if bar is not None:
                bar.update(1)

            # 6d. Log: TensorBoard, log.jsonl, progress bar.
            if step % tc.log_every == 0 or step == tc.steps:
                seconds = max(stop.clock() - t_start, 1e-9)
                loss_value = _flush_window(window, step, lr, seconds, d, writer, bar, run)
                window, t_start = _new_window(), stop.clock()
            # 6e. The task's quick evaluation (samples, score) on the EMA weights.
            t_pause = stop.clock()
            if hasattr(task, "evaluate") and ((tc.eval_every and step % tc.eval_every == 0) or step == tc.steps):
                _evaluate(task, model, ema, d, step, run, writer, say)
            # 6f. Stop requested (any rank): save, then leave the loop together.
            if step % stop_every == 0 or step == tc.steps:
                stopped = distributed.any_rank(stop.requested, d) and step < tc.steps
            if stopped or step % tc.save_every == 0 or step == tc.steps:
                elapsed += stop.clock() - stop.t0
                stop.t0 = stop.clock()
                ckpt_path = _save(model, optimizer, ema, generator, step, elapsed, cfg, d, ckpt_dir)
            t_start += stop.clock() - t_pause  # throughput counts training time only
            stop.mark()
            if stopped:
                break
        stop.uninstall()

        # 7. The end: a final checkpoint if the loop ran none, then the model folder.
        if bar is not None:
            bar.close()
        if stopped:
            say(f"stopped at step {step}/{tc.steps}; checkpoint {ckpt_path}. Resume: the same command with --resume")
            return {"step": step, "stopped": True, "rank": d.rank, "loss": loss_value, "run_dir": str(run), "checkpoint": str(ckpt_path), "model_dir": None}
        model_dir = run / "model"
        weights = checkpoint.export_weights(model, ema, d)
        if d.main:
            export_model = checkpoint.load_export(task.build_model(), weights).to(d.device).eval()
            model_dir.mkdir(parents=True, exist_ok=True)
            write_config(model_dir, to_dict(cfg.model))
            task.export(export_model, str(model_dir))
            loss = loss_value if math.isfinite(loss_value) else None
            write_json(run / "summary.json", {"task": task.name, "steps": step, "train_seconds": round(elapsed, 1),
                                               "processes": d.world_size, "device": d.device.type, "precision": compute,
                                               "loss": loss})
            command = records.command_for(cfg.command, task.name, cfg.model.name, run, tc.steps, cfg.task_options)
            facts = task.stage_facts() if hasattr(task, "stage_facts") else {}
            records.finish_stage(run, model_dir, StageRecord(
                part=task.name, run=str(run), command=command, steps=step, batch_size=tc.batch_size,
                train_seconds=round(elapsed, 1), processes=d.world_size, device=d.device.type, precision=compute, loss=loss,
                evals=records.last_eval(run), **facts))
            say(f"done: {step} steps in {elapsed / 60:.1f} min; model folder {model_dir}")
        distributed.barrier(d)
        return {"step": step, "stopped": False, "rank": d.rank, "loss": loss_value, "run_dir": str(run),
                "checkpoint": str(ckpt_path) if ckpt_path else None, "model_dir": str(model_dir)}
    finally:
        stop.uninstall()
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
        distributed.teardown(d)


# --- helpers of main(), in the order it uses them -----------------------------------------------


class _StopRequest:
    """SIGTERM/SIGINT set a flag read between steps; a second signal interrupts at once.

    It also keeps the loop's clock, which stands still while the process is stopped (SIGSTOP,
    Ctrl-Z): that time is not training, neither in the wall time a checkpoint records (and the
    model card reports) nor in throughput. SIGCONT tells when a stop ended; it is taken to have
    begun at the loop's latest mark, so the clock is right to within one step.
    """

    def __init__(self, say):
        self.requested = False
        self.say = say
        self.previous: dict[int, Any] = {}
        self.paused = 0.0  # seconds spent stopped, summed at each SIGCONT
        self.last_mark = time.perf_counter()
        self.t0 = self.clock()  # start of the current timing span (for "elapsed")

    def clock(self) -> float:
        """Seconds on a clock that stands still while the process is stopped."""
        return time.perf_counter() - self.paused

    def mark(self) -> None:
        """The loop finished a piece of work: a stop seen later began after this."""
        self.last_mark = time.perf_counter()

    def _continued(self, signum, frame):
        now = time.perf_counter()
        self.paused += now - self.last_mark
        self.last_mark = now

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.say(f"\n{signal.Signals(signum).name}: finishing this step and saving a checkpoint (again to abort)")

    def install(self):
        self.mark()
        self.t0 = self.clock()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.previous[sig] = signal.signal(sig, self._handle)
            if hasattr(signal, "SIGCONT"):  # not on Windows
                self.previous[signal.SIGCONT] = signal.signal(signal.SIGCONT, self._continued)

    def uninstall(self):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous.clear()


def _stream_seed(seed: int, rank: int, step: int) -> int:
    return (seed * 1_000_003 + rank * 7919 + step * 104_729 + 1) % (2**63)


def _seed_all(seed: int, rank: int, step: int) -> None:
    s = _stream_seed(seed, rank, step)
    torch.manual_seed(s)
    np.random.seed(s % (2**32))
    random.seed(s)


def _new_window() -> dict:
    return {"loss": 0.0, "norm": 0.0, "micro": 0, "steps": 0, "items": 0.0, "tokens": 0.0, "logs": {}}


def _to_device(batch: Any, device: torch.device) -> Any:
    """Tensors in (nested) dicts, lists and tuples moved to ``device``; other values kept."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and not hasattr(batch, "_fields"):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _count_items(batch: Any) -> int:
    """Batch size: the first dimension of the first tensor found (0 if none)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    values = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else ()
    for v in values:
        n = _count_items(v)
        if n:
            return n
    return 0


def _full(t: torch.Tensor) -> torch.Tensor:
    """A DTensor (FSDP) gathered to a plain tensor; a plain tensor unchanged."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _flush_window(w: dict, step: int, lr: float, seconds: float, d, writer, bar, run: Path) -> float:
    """Average the window's numbers (loss over all ranks) over its ``seconds``, write them, return the loss."""
    loss = distributed.all_mean(float(w["loss"]) / max(w["micro"], 1), d)
    items = distributed.all_mean(w["items"], d) * d.world_size
    tokens = distributed.all_mean(w["tokens"], d) * d.world_size
    if not math.isfinite(loss):
        raise FloatingPointError(
            f"loss is {loss} at step {step}: lower train.lr or raise train.warmup, then continue from the last good checkpoint with --resume"
        )
    if not d.main:
        return loss
    row = {"step": step, "loss": loss, "lr": lr, "grad_norm": float(w["norm"]) / max(w["steps"], 1),
           "items_per_s": items / seconds, "steps_per_s": w["steps"] / seconds}
    if tokens:
        row["tokens_per_s"] = tokens / seconds
    row.update({k: v / max(w["micro"], 1) for k, v in w["logs"].items()})
    for k, v in row.items():
        if k != "step":
            writer.add_scalar(f"train/{k}", v, step)
    with open(run / "log.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    if bar is not None:
        post = {"loss": f"{loss:.4f}", "items/s": f"{row['items_per_s']:.1f}"}
        if tokens:
            post["tok/s"] = f"{row['tokens_per_s']:.0f}"
        bar.set_postfix(post, refresh=False)
    return loss


@contextlib.contextmanager
def _isolated_rng(device: torch.device):
    """Evaluation may draw random numbers; the training streams must not notice."""
    np_state, py_state = np.random.get_state(), random.getstate()
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield
    np.random.set_state(np_state)
    random.setstate(py_state)


def _evaluate(task, model, ema, d, step: int, run: Path, writer, say) -> None:
    weights = checkpoint.export_weights(model, ema, d)  # collective under FSDP: every rank calls it
    if d.main:
        with _isolated_rng(d.device):
            eval_model = checkpoint.load_export(task.build_model(), weights).to(d.device).eval()
            out = run / "samples"
            out.mkdir(parents=True, exist_ok=True)
            with torch.no_grad():
                scores = task.evaluate(eval_model, step, str(out)) or {}
        for k, v in scores.items():
            if isinstance(v, (int, float)):
                writer.add_scalar(f"eval/{k}", v, step)
        with open(run / "log.jsonl", "a") as f:
            f.write(json.dumps({"step": step, "eval": {k: v for k, v in scores.items() if isinstance(v, (int, float, str))}}) + "\n")
        if scores:
            say(f"step {step} eval: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in scores.items()))
    distributed.barrier(d)


def _save(model, optimizer, ema, generator, step: int, elapsed: float, cfg: RunConfig, d, folder: Path) -> Path | None:
    """Gather the full state (collectives) and let rank 0 write it atomically."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    # Full state dicts keyed by parameter name; under FSDP gathered to rank 0 on the CPU.
    options = StateDictOptions(full_state_dict=True, cpu_offload=d.enabled)
    model_state, optim_state = get_state_dict(model, optimizer, options=options)
    averaged = ema.full_state() if ema is not None else None
    rngs = distributed.gather_objects(checkpoint.rng_state(generator), d)
    path = None
    if d.main:
        state = {
            "format": 1,
            "step": step,
            "elapsed": elapsed,
            "world_size": d.world_size,
            "task": cfg.task,
            "model_config": json.dumps(to_dict(cfg.model)),
            "train_config": json.dumps(to_dict(cfg.train)),
            "model": model_state,
            "ema": averaged,
            "optimizer": optim_state,
            "rng": rngs,
        }
        path = checkpoint.save(state, folder, step, keep=cfg.train.keep)
    distributed.barrier(d)
    return path


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past ``step`` (a killed run logged steps its last checkpoint lacks)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (ValueError, KeyError, TypeError):  # a line cut short by a kill
            continue
    write_text(path, "".join(line + "\n" for line in keep))
