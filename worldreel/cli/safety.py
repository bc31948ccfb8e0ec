"""CLI commands: ``worldreel safety check | eval | train | build-set`` (the prompt policy, safety/policy.py).

    worldreel safety check "a red ball hits a blue box"      # allowed / refused, category, scores
    worldreel safety eval --json runs/safety-eval.json        # k-fold cross-validation table
    worldreel safety train                                    # refit the shipped classifier head
    worldreel safety build-set                                # recompose data/prompts.jsonl
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from worldreel.errors import UserError


def register(groups) -> None:
    """Add this module's commands to the CLI groups ("" is the top level)."""
    safety = groups["safety"]

    @safety.command("check")
    def check(
        prompt: Annotated[str, typer.Argument(help="The prompt to check, as a user would type it.")],
        as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON.")] = False,
    ) -> None:
        """Say whether the prompt policy allows PROMPT; exits 1 when it is refused."""
        from worldreel.safety.policy import default_policy

        if not prompt.strip():
            raise UserError("the prompt is empty", param="prompt")
        verdict = default_policy().check(prompt)
        if as_json:
            print(json.dumps({"allowed": verdict.allowed, "category": verdict.category, "source": verdict.source,
                              "matched": verdict.matched, "normalized": verdict.normalized,
                              "scores": {k: round(v, 4) for k, v in verdict.scores.items()}}, indent=2))
        else:
            print(verdict.describe())
            if verdict.normalized != prompt:
                print(f"read as: {verdict.normalized}")
            if verdict.scores:
                print("scores: " + "  ".join(f"{k} {v:.2f}" for k, v in verdict.scores.items()))
        if not verdict.allowed:
            sys.exit(1)  # so scripts can test it (the CLI's main returns 0 for a typer.Exit in non-standalone mode)

    @safety.command("eval")
    def evaluate(
        data: Annotated[Optional[Path], typer.Option("--data", help="Labelled set (JSONL; default: the shipped one).")] = None,
        folds: Annotated[int, typer.Option("--folds", min=2, max=20, help="Cross-validation folds.")] = 5,
        threshold: Annotated[Optional[float], typer.Option("--threshold", help="Classifier threshold (default: FitConfig's).")] = None,
        seed: Annotated[int, typer.Option("--seed", help="Fold assignment seed.")] = 0,
        json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the report here (JSON).")] = None,
        holdout: Annotated[Optional[Path], typer.Option("--holdout", help="Instead: train on the whole set and measure "
                                                        "on this JSONL (e.g. worldreel/safety/data/prompts_fresh.jsonl).")] = None,
    ) -> None:
        """Grouped k-fold cross-validation of the whole policy: recall per kind, false refusals, confusion."""
        from worldreel.atomic import write_json
        from worldreel.safety.fit import FitConfig, cross_validate, held_out, report_table
        from worldreel.safety.policy import Embedder

        cfg = FitConfig(folds=folds, seed=seed)
        if threshold is not None:
            if not 0.0 < threshold < 1.0:
                raise UserError(f"threshold must be between 0 and 1, got {threshold}", param="threshold")
            cfg.threshold = threshold
        if json_out is not None and (json_out.suffix.lower() != ".json" or not json_out.parent.exists()):
            raise UserError(f"cannot write {json_out}: give a .json file in an existing folder", param="json")
        if holdout is not None:
            report = held_out(_rows(data), _rows(holdout, param="holdout"), Embedder(), cfg)
        else:
            report = cross_validate(_rows(data), Embedder(), cfg)
        print(report_table(report))
        if json_out is not None:
            write_json(json_out, report)
            print(f"wrote {json_out}")

    @safety.command("train")
    def train(
        data: Annotated[Optional[Path], typer.Option("--data", help="Labelled set (JSONL; default: the shipped one).")] = None,
        out: Annotated[Optional[Path], typer.Option("--out", help="Head file to write (default: the shipped one).")] = None,
    ) -> None:
        """Fit the classifier head on the whole labelled set and write it (safetensors)."""
        import hashlib

        from worldreel.safety.fit import FitConfig, embed_rows, fit_head, targets
        from worldreel.safety.policy import HEAD_FILE, PROMPTS_FILE, Embedder

        path = data or PROMPTS_FILE
        rows = _rows(data)
        out = out or HEAD_FILE
        if out.suffix != ".safetensors" or not out.parent.exists():
            raise UserError(f"cannot write {out}: give a .safetensors file in an existing folder", param="out")
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
        head = fit_head(embed_rows(rows, Embedder()), targets(rows), FitConfig(),
                        meta={"data_sha256": digest, "rows": len(rows), "encoder": "minilm-l6 mean-pooled"})
        head.save(out)
        print(f"wrote {out} (trained on {len(rows)} prompts, data sha256 {digest})")

    @safety.command("build-set")
    def build_set(
        out: Annotated[Optional[Path], typer.Option("--out", help="JSONL to write (default: the shipped one).")] = None,
        seed: Annotated[int, typer.Option("--seed", help="Seed for the templates and obfuscations.")] = 0,
    ) -> None:
        """Recompose the labelled set from the hand-written lines and templates in safety/prompt_set.py."""
        from collections import Counter

        from worldreel.safety import prompt_set
        from worldreel.safety.policy import PROMPTS_FILE

        out = out or PROMPTS_FILE
        if not out.parent.exists():
            raise UserError(f"cannot write {out}: folder {out.parent} does not exist", param="out")
        rows = prompt_set.build(seed)
        prompt_set.write(out, rows)
        counts = Counter(r["kind"] for r in rows)
        print(f"wrote {out}: {len(rows)} prompts ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})",
              file=sys.stderr)


def _rows(data: Path | None, param: str = "data") -> list[dict]:
    from worldreel.safety import prompt_set
    from worldreel.safety.policy import PROMPTS_FILE

    path = data or PROMPTS_FILE
    if not Path(path).is_file():
        raise UserError(f"cannot read {path}: no such file", param=param)
    try:
        rows = prompt_set.read(path)
    except (ValueError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read {path}: {err}", param=param) from None
    labels = {r["label"] for r in rows}
    if "safe" not in labels or len(labels) < 2:
        raise UserError(f"{path} needs safe prompts and unsafe ones", param=param)
    return rows
