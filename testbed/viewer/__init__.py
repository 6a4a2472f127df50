"""The run viewer: a static, self-contained HTML site over recorded experiments (``testbed view``).

Pages: an overview per experiment (rates with intervals, task success,
faults, per server, agent and fault kind), a page per violation ID (catalog
text, source, severity, a seeded gallery of evidence figures, the runs
affected), a page per run (a timeline of calls with their arguments and
responses, injected faults, LLM requests and replies, plan decisions, and the
evidence of each violation) and, for several experiments, a comparison page.
Opens from the file system: relative links, no server, no network.
"""

from __future__ import annotations

from testbed.viewer._load import LoadedExperiment, load_experiment
from testbed.viewer._site import DEFAULT_SITE_DIR, MARKER, SiteResult, build_site, default_site, open_site

__all__ = [
    "DEFAULT_SITE_DIR",
    "MARKER",
    "LoadedExperiment",
    "SiteResult",
    "build_site",
    "default_site",
    "load_experiment",
    "open_site",
]
