"""The violation catalog: stable, well-formed IDs that every fault's expectations refer to."""

from __future__ import annotations

import re

from testbed.faults import FAULT_CATALOG
from testbed.validators import CATALOG, CATEGORIES, Severity

ID_PATTERN = re.compile(r"^[a-z]+\.[a-z_]+$")


def test_every_catalog_id_is_well_formed_and_in_a_known_category() -> None:
    for violation_id, entry in CATALOG.items():
        assert entry.id == violation_id
        assert ID_PATTERN.match(violation_id), violation_id
        assert violation_id.split(".")[0] in CATEGORIES
        assert entry.behaviour.endswith("."), violation_id
        assert ". " not in entry.behaviour, f"{violation_id}: one sentence"
        assert entry.source


def test_every_category_has_an_entry_and_memory_scope_entries_are_warnings() -> None:
    assert {violation_id.split(".")[0] for violation_id in CATALOG} == set(CATEGORIES)
    assert all(entry.severity is Severity.WARNING for vid, entry in CATALOG.items() if vid.startswith("memory."))


def test_every_fault_expects_only_catalogued_violations() -> None:
    for kind, info in FAULT_CATALOG.items():
        unknown = set(info.expected) - set(CATALOG)
        assert not unknown, f"fault {kind} expects uncatalogued {sorted(unknown)}"


# IDs whose validator needs agents or servers the testbed does not have yet; each names what it waits for.
NOT_YET_VALIDATED: dict[str, str] = {}


def _test_names() -> set[str]:
    import ast
    from pathlib import Path

    names: set[str] = set()
    for path in Path(__file__).resolve().parent.rglob("test_*.py"):
        tree = ast.parse(path.read_text())
        names.update(node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef))
    return {name for name in names if name.startswith("test_")}


def test_every_catalogued_id_has_a_test_naming_it_or_is_listed_as_not_yet_validated() -> None:
    names = _test_names()
    for violation_id in CATALOG:
        token = violation_id.replace(".", "_")
        tested = any(token in name for name in names)
        assert tested != (violation_id in NOT_YET_VALIDATED), violation_id


def test_every_validator_test_names_a_known_id() -> None:
    tokens = {violation_id.replace(".", "_") for violation_id in CATALOG}
    claims = [name.split("_reported_as_", 1)[1] for name in _test_names() if "_reported_as_" in name]
    assert len(claims) >= 10
    for claimed in claims:
        assert any(claimed.startswith(token) for token in tokens), claimed


def test_every_registered_validator_emits_only_catalogued_ids_and_covers_the_validated_ones() -> None:
    from testbed.validators import VALIDATORS

    emitted = {violation_id for spec in VALIDATORS for violation_id in spec.emits}
    emitted |= {"memory.handle_out_of_scope", "memory.unbounded_store"}  # the two cross-run checks
    assert emitted <= set(CATALOG)
    assert set(CATALOG) - emitted == set(NOT_YET_VALIDATED)
