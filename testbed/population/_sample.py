"""Sampling a population: each server's properties drawn independently with their prevalence, then workflows."""

from __future__ import annotations

from typing import Any, Final, Literal

import numpy as np

from testbed._errors import TestbedError
from testbed._seeding import derive_rng
from testbed.population._model import AGENT_OF_MODE, Drawn, Member, Population, Workflow
from testbed.population._prevalence import PROPERTIES, Distribution, Mode, Prevalence
from testbed.profile import CAPABILITIES, Capability, ConventionProfile

__all__ = ["MIN_MEMBERS", "sample_population"]

MIN_MEMBERS: Final = 4
"""One server of each capability a workflow uses (detect, segment, crop, crop-mask)."""

_BOX_FIELDS: Final = ("bbox", "box", "bounding_box")
_BOX_ARGUMENTS: Final = ("box", "bbox", "region")
_WORKFLOW_CAPABILITIES: Final = ("detect", "segment", "crop", "crop-mask")
_FALLBACK: Final = "an empty result when the model fails"
_CHAIN_SHARE: Final = 0.25
"""Chains (detect -> segment -> crop-mask) per workflow: a quarter, our choice (the paper gives no share)."""


def _choice(rng: np.random.Generator, distribution: Distribution) -> str:
    names = sorted(distribution.shares)
    weights = np.array([distribution.shares[name] for name in names])
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def _apportion(n: int, distribution: Distribution) -> list[str]:
    """``n`` categories in the distribution's proportions (largest remainder), each present at least once."""
    names = sorted(distribution.shares)
    exact = {name: distribution.shares[name] * n for name in names}
    counts = {name: max(int(distribution.shares[name] > 0), int(exact[name])) for name in names}
    by_remainder = sorted(names, key=lambda name: (-(exact[name] - int(exact[name])), name))
    position = 0
    while sum(counts.values()) < n:
        counts[by_remainder[position % len(names)]] += 1
        position += 1
    while sum(counts.values()) > n:
        largest = max(names, key=lambda name: (counts[name], name))
        counts[largest] -= 1
    return [name for name in names for _ in range(counts[name])]


def _profile(capability: Capability, drawn: Drawn, rng: np.random.Generator) -> ConventionProfile:
    data: dict[str, Any] = {
        "declares_extensions": not drawn.undeclared_conventions,
        "validates_outputs": not drawn.no_output_validation,
        "memory": {"scope": "global" if drawn.memory_retention else "by_value"},
    }
    if capability != "crop-mask":
        data["box"] = drawn.box_convention
    if capability in ("segment", "crop-mask"):
        data["mask"] = {"encoding": drawn.mask_format}
    divergent_style = str(rng.choice(["loose", "text_json"]))
    data["schema_style"] = divergent_style if drawn.schema_divergence else "full"
    if capability in ("detect", "segment"):
        data["names"] = {"box": str(rng.choice(_BOX_FIELDS))}
        if capability == "segment":
            data["names"]["prompts"] = "boxes"
    elif capability in ("crop", "measure"):
        data["names"] = {"box": str(rng.choice(_BOX_ARGUMENTS))}
    if drawn.declared_fallback:
        data["fallback"] = _FALLBACK
    if drawn.bridging:
        data["bridges"] = True
    return ConventionProfile.model_validate(data)


def _member(index: int, capability: Capability, prevalence: Prevalence, secure: bool, seed: int) -> Member:
    rng = derive_rng(seed, "population", "member", index)
    flags = {prop: bool(rng.random() < prevalence.share(prop)) for prop in PROPERTIES}
    drawn = Drawn(
        **flags,
        box_convention=_choice(rng, prevalence.box_conventions),
        mask_format=_choice(rng, prevalence.mask_formats),
    )
    return Member(
        id=f"s{index:03d}",
        capability=capability,
        profile=_profile(capability, drawn, rng),
        drawn=drawn,
        security_subset=secure,
    )


def _workflows(members: list[Member], prevalence: Prevalence, seed: int) -> list[Workflow]:
    """Pairs (detect -> crop, segment -> crop-mask) covering every member, and chains detect -> segment -> crop-mask."""
    rng = derive_rng(seed, "population", "workflows")
    by_capability: dict[str, list[str]] = {capability: [] for capability in CAPABILITIES}
    for member in members:
        by_capability[member.capability].append(member.id)
    chains: list[tuple[str, ...]] = []
    for producer, consumer in (("detect", "crop"), ("segment", "crop-mask")):
        producers, consumers = by_capability[producer], by_capability[consumer]
        for position in range(max(len(producers), len(consumers))):
            chains.append((producers[position % len(producers)], consumers[position % len(consumers)]))
    for _ in range(round(_CHAIN_SHARE * len(chains))):
        chains.append(tuple(str(rng.choice(by_capability[c])) for c in ("detect", "segment", "crop-mask")))
    workflows = []
    for index, chain in enumerate(chains):
        mode: Mode = _choice(rng, prevalence.orchestration_modes)  # type: ignore[assignment]  # checked names
        kind: Literal["pair", "chain"] = "pair" if len(chain) == 2 else "chain"
        workflows.append(Workflow(id=f"w{index:03d}", kind=kind, members=chain, mode=mode, agent=AGENT_OF_MODE[mode]))
    return workflows


def sample_population(prevalence: Prevalence, *, n: int, seed: int, name: str | None = None) -> Population:
    """Draw ``n`` servers and compose workflows among them, reproducibly from ``seed``.

    Capabilities are apportioned to their shares exactly; every other property is drawn independently per
    server with its share; the security subset is ``security_subset / population_size`` of ``n``, drawn
    without replacement.

    Raises:
        TestbedError: ``n`` below :data:`MIN_MEMBERS` or a negative seed.
    """
    if n < MIN_MEMBERS:
        raise TestbedError(f"--n: a population needs at least {MIN_MEMBERS} servers (one per capability), not {n}")
    if seed < 0:
        raise TestbedError(f"--seed: must be non-negative, not {seed}")
    capabilities = _apportion(n, prevalence.capabilities)
    for needed in _WORKFLOW_CAPABILITIES:
        if needed not in capabilities:
            raise TestbedError(
                f"capabilities: a population's workflows need a {needed} server; give it a share above 0"
            )
    order = derive_rng(seed, "population", "capabilities").permutation(n)
    secure_count = round(n * prevalence.security_subset.value / prevalence.population_size.value)
    secure = set(derive_rng(seed, "population", "security").choice(n, size=secure_count, replace=False).tolist())
    members = [
        _member(index, capabilities[int(order[index])], prevalence, index in secure, seed)  # type: ignore[arg-type]
        for index in range(n)
    ]
    return Population(
        seed=seed,
        prevalence=name or prevalence.name,
        members=tuple(members),
        workflows=tuple(_workflows(members, prevalence, seed)),
    )
