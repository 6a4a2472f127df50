"""Populations of parametric servers sampled from published prevalences, and the workflows among them.

A prevalence file (:func:`load_prevalence`, e.g. ``scenarios/populations/audit-2025.yaml``) gives each
property's share with its source; :func:`sample_population` draws servers' convention profiles from it,
seeded; a population file (:func:`load_population`) is plain YAML a person can edit.
"""

from testbed.population._errors import PopulationError
from testbed.population._model import (
    AGENT_OF_MODE,
    Drawn,
    Member,
    Population,
    Workflow,
    load_population,
    population_hash,
    write_population,
)
from testbed.population._prevalence import (
    MODES,
    PROPERTIES,
    Count,
    Distribution,
    Mode,
    Prevalence,
    Share,
    load_prevalence,
)
from testbed.population._sample import MIN_MEMBERS, sample_population

__all__ = [
    "AGENT_OF_MODE",
    "MIN_MEMBERS",
    "MODES",
    "PROPERTIES",
    "Count",
    "Distribution",
    "Drawn",
    "Member",
    "Mode",
    "Population",
    "PopulationError",
    "Prevalence",
    "Share",
    "Workflow",
    "load_population",
    "load_prevalence",
    "population_hash",
    "sample_population",
    "write_population",
]
