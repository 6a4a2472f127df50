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
