"""The factor kinds a design may use, in one table, and the discriminated union that reads them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Final, Union

from pydantic import Field

from testbed.experiment._extensions import ContractsFactor, ExtensionsFactor, MemoryFactor, ObservabilityFactor
from testbed.experiment._factors import (
    AgentFactor,
    DeclarationsFactor,
    Factor,
    FaultsFactor,
    OverrideFactor,
    ScenarioFactor,
)

__all__ = ["FACTOR_KINDS", "AnyFactor"]

FACTOR_KINDS: Final[tuple[type[Factor], ...]] = (
    AgentFactor,
    FaultsFactor,
    ScenarioFactor,
    OverrideFactor,
    DeclarationsFactor,
    ContractsFactor,
    MemoryFactor,
    ObservabilityFactor,
    ExtensionsFactor,
)
"""The factor kinds a design may use; a new kind is one more entry (and its class)."""

if TYPE_CHECKING:
    AnyFactor = Factor
else:
    AnyFactor = Annotated[Union[FACTOR_KINDS], Field(discriminator="kind")]  # noqa: UP007  (a tuple of classes)
"""One factor, selected by ``kind`` among :data:`FACTOR_KINDS`."""
