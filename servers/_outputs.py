"""Output models that the well-behaved servers share: canonical, declared boxes with labels and scores."""

from __future__ import annotations

from pydantic import BaseModel, Field

from servers._schemas import declare_role
from testbed.conventions import CANONICAL
from testbed.protocol import Modality, SemanticRole, declare_box

__all__ = ["CanonicalLabeledBoxOut", "ImageSizeOut"]


class ImageSizeOut(BaseModel):
    """An image size by named axis."""

    width: int = Field(gt=0)
    height: int = Field(gt=0)


class CanonicalLabeledBoxOut(BaseModel):
    """A labelled, scored box in the canonical convention, every field declared."""

    label: str = Field(
        description="Class name.", json_schema_extra=declare_role(SemanticRole.CLASS_LABEL, Modality.LABEL)
    )
    score: float = Field(
        ge=0.0, le=1.0, description="Confidence.", json_schema_extra=declare_role(SemanticRole.SCORE, Modality.SCORE)
    )
    bbox: list[float] = Field(
        min_length=4,
        max_length=4,
        description="[x_min, y_min, x_max, y_max] in pixels, origin top-left.",
        json_schema_extra=declare_box(CANONICAL),
    )
