"""Each strategy's own settings: a typed, frozen model with defaults, set per strategy from a grid.

Only settings that can change the picks belong here (they enter the trial's id when they differ from their
default); scoring mechanics that never change them (score batch size, the scoring heap) are resources.
"""

from __future__ import annotations

import types
import typing
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict

from experiments.specs import TrainSpec


class StrategySettings(BaseModel):
    """No settings. Subclasses add typed fields with defaults that reproduce the reference method."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # The names these settings had in the grid files and specs of albench <= 17506af (grid-wide `query:` and
    # `train:` keys), so that old grid files still run and old results folders carry over.
    renamed_from: ClassVar[dict[str, str]] = {}

    def resolved(self, train: TrainSpec, reference: TrainSpec) -> Self:
        """The settings with values derived from the training schedule filled in (none by default).

        `reference` is the dataset's reference schedule (`experiments.defaults`), of which `train` may be a
        shortened version."""
        return self

    @classmethod
    def describe(cls) -> str:
        """'lam (float > 0, default 1.0), oversample (int > 0, default 2)': what a grid may set."""
        if not cls.model_fields:
            return "no settings"
        return ", ".join(
            f"{name} ({_type_name(field.annotation, field.metadata)}, default {yaml_value(field.default)})"
            for name, field in cls.model_fields.items()
        )


def _type_name(annotation: Any, metadata: list | tuple = ()) -> str:
    """A type as a grid writer reads it: 'float > 0', 'layer_sum | l2', 'int > 0 | None'."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a, () if a is type(None) else metadata) for a in args)
    if origin is typing.Annotated:
        return _type_name(args[0], args[1:])
    if annotation is type(None):
        return "None"
    bounds = [f"{op} {getattr(m, attr)}" for m in metadata for attr, op in BOUNDS if hasattr(m, attr)]
    return " ".join([getattr(annotation, "__name__", str(annotation)), *bounds])


BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))


def yaml_value(value: Any) -> str:
    """A setting's value as a grid file writes it: true, false, null, 0.01, l2."""
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
