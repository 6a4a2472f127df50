"""Accuracy of the auditor (issue 15, item 6): audit servers whose truth is known and compare, per property.

Audited, each in process (``testbed.audit.in_process_target``: the server is built here and reached in memory,
so its models load once; the audit still sees only what the server says, never its truth manifest):

- every registered reference server (named and parametric with their defaults);
- the plug-in example (``examples/faulty-server-plugin``), imported from its folder when not installed;
- ``--profiles`` random :class:`~testbed.profile.ConventionProfile` s of the parametric ``detect`` and
  ``segment`` servers, drawn from ``--seed`` over box convention, mask encoding, schema style, memory scope
  and whether extensions are declared (profiles the capability refuses are drawn again).

Each audit card's inferred properties are compared with the server's truth manifest (for a profile,
``truth_manifest(capability, profile)``):

- **convention**: per tool that returns boxes, the card's ``box_convention`` against the truth's;
- **encoding**: per tool that returns masks, the card's ``mask_encoding``;
- **schema style**: per tool, the card's ``schema_style``;
- **memory scope**: per server, the scope of the first tool that returns a handle (``by_value`` when none);
  the card's is the first tool's ``memory_scope`` (``by_value`` when no handle pair was found).

A confusion table per property is printed (rich) and written as CSV (``--csv``); goal: >= 0.95 correct per
property. Default size: every registered server and 4 profiles; the full measurement is ``--profiles 40`` (66
servers in about 3 minutes on a busy 2-core machine: in process, models load once).

    .venv/bin/python benchmarks/audit_accuracy.py [--profiles 4] [--seed 0] [--csv FILE] [--device cpu]
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from os import PathLike
from pathlib import Path

import anyio
import numpy as np
from rich.console import Console
from rich.table import Table

from testbed._seeding import derive_seed_sequence
from testbed.audit import AuditCard, AuditOptions, audit, in_process_target
from testbed.conventions import MaskEncoding, all_box_conventions
from testbed.profile import (
    Capability,
    ConventionProfile,
    MaskProfile,
    MemoryProfile,
    ProfileError,
    check_profile,
    truth_manifest,
)
from testbed.protocol import MemoryScope, SchemaStyle, SemanticRole, ServerTruth
from testbed.registry import GROUP, load_entry_points, registry

PROPERTIES = ("convention", "encoding", "schema style", "memory scope")
GOAL = 0.95
PLUGIN_FOLDER = Path(__file__).resolve().parents[1] / "examples" / "faulty-server-plugin"
PLUGIN_DISTRIBUTION = "faulty-server-plugin"
PLUGIN_ENTRY_POINT = "faulty = faulty_detector"
NONE = "none"


@dataclass(frozen=True)
class Audited:
    """One server to audit: its registry name, the profile it follows (if parametric), its truth."""

    label: str
    server: str
    truth: ServerTruth
    profile: ConventionProfile | None = None


@dataclass(frozen=True)
class Comparison:
    label: str
    tool: str | None
    prop: str
    truth: str
    inferred: str

    @property
    def correct(self) -> bool:
        return self.truth == self.inferred


def truth_values(truth: ServerTruth) -> list[tuple[str, str | None, str]]:
    """``(property, tool, value)`` for every property the truth manifest fixes."""
    values: list[tuple[str, str | None, str]] = []
    for tool in truth.tools:
        values.append(("schema style", tool.name, tool.schema_style.value))
        if tool.box_convention is not None and SemanticRole.BOUNDING_BOX in tool.paths:
            values.append(("convention", tool.name, str(tool.box_convention)))
        if tool.mask_encoding is not None and SemanticRole.MASK in tool.paths:
            normalized = " (normalized)" if tool.normalized_polygons else ""
            values.append(("encoding", tool.name, tool.mask_encoding.value + normalized))
    values.append(("memory scope", None, server_scope(truth)))
    return values


def server_scope(truth: ServerTruth) -> str:
    handles = [tool.returns for tool in truth.tools if tool.returns not in (None, MemoryScope.BY_VALUE)]
    return handles[0].value if handles and handles[0] is not None else MemoryScope.BY_VALUE.value


def compare(audited: Audited, card: AuditCard) -> list[Comparison]:
    """The card's inferred value of every property the truth fixes (``none`` where the card has none)."""
    tools = {tool.name: tool for tool in card.tools}
    scopes = [tool.memory_scope for tool in card.tools if tool.memory_scope is not None]
    found: list[Comparison] = []
    for prop, name, value in truth_values(audited.truth):
        report = tools.get(name) if name is not None else None
        inferred: str | None
        if prop == "memory scope":
            inferred = scopes[0] if scopes else MemoryScope.BY_VALUE.value
        elif report is None:
            inferred = None
        elif prop == "schema style":
            inferred = report.schema_style
        elif prop == "convention":
            inferred = report.box_convention
        else:
            inferred = report.mask_encoding
        found.append(Comparison(audited.label, name, prop, value, inferred or NONE))
    return found


def sample_profiles(count: int, seed: int) -> list[tuple[Capability, ConventionProfile]]:
    """``count`` random detect/segment profiles the capability accepts, one generator per draw."""
    conventions = all_box_conventions()
    styles = (SchemaStyle.FULL, SchemaStyle.LOOSE, SchemaStyle.TEXT_JSON)
    encodings = tuple(MaskEncoding)
    scopes = tuple(MemoryScope)
    sampled: list[tuple[Capability, ConventionProfile]] = []
    draw = 0
    while len(sampled) < count:
        rng = np.random.default_rng(derive_seed_sequence(seed, "audit-accuracy", draw))
        draw += 1
        capability: Capability = "detect" if rng.random() < 0.5 else "segment"
        scope = scopes[int(rng.integers(len(scopes)))]
        try:
            profile = ConventionProfile(
                box=conventions[int(rng.integers(len(conventions)))],
                schema_style=styles[int(rng.integers(len(styles)))],
                declares_extensions=bool(rng.random() < 0.5),
                mask=MaskProfile(encoding=encodings[int(rng.integers(len(encodings)))]),
                memory=MemoryProfile(scope=scope, ttl_seconds=1.0 if scope is MemoryScope.TTL else None),
            )
            check_profile(capability, profile)
        except (ProfileError, ValueError):
            continue
        sampled.append((capability, profile))
    return sampled


class _FolderDistribution(metadata.Distribution):
    """The plug-in example as a distribution read from its source folder (its entry point, its name)."""

    def read_text(self, filename: str) -> str | None:
        if filename == "METADATA":
            return f"Metadata-Version: 2.1\nName: {PLUGIN_DISTRIBUTION}\n"
        if filename == "entry_points.txt":
            return f"[{GROUP}]\n{PLUGIN_ENTRY_POINT}\n"
        return None

    def locate_file(self, path: str | PathLike[str]) -> Path:
        return PLUGIN_FOLDER / path


def plugin_servers() -> list[str]:
    """The plug-in example's servers: installed, or loaded from its folder through its entry point."""
    names = set(registry().servers)
    if not any(name.startswith(f"{PLUGIN_DISTRIBUTION}/") for name in names):
        sys.path.insert(0, str(PLUGIN_FOLDER))
        load_entry_points(points=_FolderDistribution().entry_points)
    return [name for name in registry().servers if name.startswith(f"{PLUGIN_DISTRIBUTION}/")]


def targets(profiles: int, seed: int, *, plugins: bool = True, only: Sequence[str] = ()) -> list[Audited]:
    """What to audit: ``only`` registered names if given, else every registered server, the plug-in example and
    ``profiles`` sampled profiles."""
    names = list(only) or list(registry().servers)
    if plugins and not only:
        names += [name for name in plugin_servers() if name not in names]
    chosen = [Audited(name, name, registry().server(name).truth) for name in names]
    for index, (capability, profile) in enumerate(sample_profiles(profiles, seed)):
        label = f"profile-{index}:{capability}"
        chosen.append(Audited(label, capability, truth_manifest(capability, profile), profile))
    return chosen


async def audit_all(chosen: Iterable[Audited], *, work: Path, device: str, seed: int) -> list[Comparison]:
    options = AuditOptions(seed=seed, revisions=False)
    comparisons: list[Comparison] = []
    for index, audited in enumerate(chosen):
        folder = work / f"{index:03d}"
        target = in_process_target(audited.server, sandbox=folder / "sandbox", device=device, profile=audited.profile)
        card = await audit(target, work_dir=folder, options=options)
        comparisons.extend(compare(audited, card))
    return comparisons


def confusion(comparisons: Sequence[Comparison], prop: str) -> dict[tuple[str, str], int]:
    return dict(Counter((c.truth, c.inferred) for c in comparisons if c.prop == prop))


def accuracy(comparisons: Sequence[Comparison], prop: str) -> tuple[int, int]:
    """``(correct, total)`` for one property."""
    mine = [c for c in comparisons if c.prop == prop]
    return sum(c.correct for c in mine), len(mine)


WIDE = 8
"""A property with more distinct values than this is printed as a list of (truth, inferred) cells, not a grid."""


def print_tables(comparisons: Sequence[Comparison], console: Console) -> None:
    for prop in PROPERTIES:
        cells = confusion(comparisons, prop)
        truths = sorted({t for t, _ in cells})
        inferred = sorted({i for _, i in cells})
        correct, total = accuracy(comparisons, prop)
        rate = correct / total if total else float("nan")
        table = Table(title=f"{prop}: {correct}/{total} correct ({rate:.2f}; goal {GOAL})")
        if max(len(truths), len(inferred)) > WIDE:
            for column in ("truth", "inferred", "count"):
                table.add_column(column)
            for (truth, seen), count in sorted(cells.items()):
                table.add_row(truth, seen if seen != truth else "= truth", str(count))
        else:
            table.add_column("truth \\ inferred")
            for name in inferred:
                table.add_column(name, justify="right")
            for truth in truths:
                table.add_row(truth, *(str(cells.get((truth, name), "")) for name in inferred))
        console.print(table)
    for miss in (c for c in comparisons if not c.correct):
        console.print(
            f"miss: {miss.label} {miss.tool or '(server)'} {miss.prop}: truth {miss.truth}, audit {miss.inferred}"
        )


def write_csv(comparisons: Sequence[Comparison], path: Path) -> None:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["property", "truth", "inferred", "count"])
        for prop in PROPERTIES:
            for (truth, inferred), count in sorted(confusion(comparisons, prop).items()):
                writer.writerow([prop, truth, inferred, count])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--profiles", type=int, default=4, help="random parametric profiles to audit (full: 40)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--csv", type=Path, default=None, help="write the confusion tables here")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--server", action="append", default=[], help="audit only these registered servers")
    args = parser.parse_args(argv)
    # In process, a server's own log of the exceptions the error-style probes provoke would reach this terminal.
    logging.getLogger("mcp").setLevel(logging.CRITICAL)
    chosen = targets(args.profiles, args.seed, only=args.server)
    with tempfile.TemporaryDirectory(prefix="audit-accuracy-") as work:
        comparisons = anyio.run(lambda: audit_all(chosen, work=Path(work), device=args.device, seed=args.seed))
    console = Console()
    console.print(f"audited {len(chosen)} server(s), {len(comparisons)} property value(s)")
    print_tables(comparisons, console)
    if args.csv is not None:
        write_csv(comparisons, args.csv)
    return 0 if all(meets_goal(comparisons, prop) for prop in PROPERTIES) else 1


def meets_goal(comparisons: Sequence[Comparison], prop: str) -> bool:
    correct, total = accuracy(comparisons, prop)
    return total == 0 or correct / total >= GOAL


if __name__ == "__main__":
    raise SystemExit(main())
