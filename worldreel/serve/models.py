"""The models a service offers, and the request values (size, seconds) each one accepts.

The API process only needs each model's ``ModelConfig`` (to validate ``size`` and
``seconds``); the weights are loaded by the workers. A model is named by its folder's
name, so ``--model world-tiny`` (shipped) and ``--model runs/my-model`` (a folder) are
requested as ``model="world-tiny"`` and ``model="my-model"``.
"""
from __future__ import annotations

from dataclasses import dataclass
from worldreel.errors import UserError
from worldreel.serve.schemas import APIError


@dataclass
class ServedModel:
    name: str  # what requests put in "model"
    source: str  # what Generator.load receives: a shipped name or a folder path
    config: object  # its worldreel.presets.ModelConfig


def resolve_models(specs: list[str]) -> dict[str, ServedModel]:
    """Served models from names or folders (``worldreel serve --model``), checked to exist."""
    from worldreel.model_folder import find, read_config

    served: dict[str, ServedModel] = {}
    for spec in specs:
        folder = find(spec)
        name = folder.name
        if name in served:
            raise UserError(f"two served models are named {name!r}", param="model")
        served[name] = ServedModel(name=name, source=str(folder), config=read_config(folder))
    if not served:
        raise UserError("serve at least one model (--model NAME or --model FOLDER)", param="model")
    return served


def pick_model(requested: str | None, served: dict[str, ServedModel]) -> ServedModel:
    """The requested model (the first served one when omitted); 400 naming the choices otherwise."""
    if requested in (None, ""):
        return next(iter(served.values()))
    if requested not in served:
        raise APIError(400, f"model {requested!r} is not served here; allowed values: {', '.join(served)}",
                       param="model", code="invalid_value")
    return served[requested]


def parse_size(value: str | None, model: ServedModel) -> tuple[int, int]:
    """(W, H) for the ``size`` parameter; the model's default when omitted."""
    from worldreel.pipelines.generate import parse_size as pipeline_parse_size

    if value in (None, ""):
        return tuple(model.config.default_size)  # type: ignore[attr-defined]
    try:
        return tuple(pipeline_parse_size(value, model.config))  # type: ignore[return-value]
    except UserError as err:
        raise APIError(400, err.message, param="size", code="invalid_value") from None


def parse_seconds(value: str | None, model: ServedModel, *, param: str = "seconds") -> float:
    """Clip length in seconds for the ``seconds`` parameter; the model's default when omitted."""
    from worldreel.pipelines.generate import parse_seconds as pipeline_parse_seconds

    if value in (None, ""):
        return float(model.config.default_seconds)  # type: ignore[attr-defined]
    try:
        return float(pipeline_parse_seconds(value, model.config))
    except UserError as err:
        raise APIError(400, err.message, param=param, code="invalid_value") from None


def format_seconds(seconds: float) -> str:
    """Seconds as the API shows them: "4", "8", "2.5"."""
    return f"{seconds:g}"


def format_size(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"
