"""Controlled experiments: paired factorial designs over scenarios, with per-contrast significance.

``testbed experiment FILE.yaml`` loads a design (:func:`load_design`), plans its cells
(:func:`plan_experiment`), runs each cell as an ordinary experiment directory with the
same seed (:func:`run_cells`), and compares them run by run (:func:`analyse`).
"""

from testbed.experiment._analyse import CONTRAST_COLUMNS, Results, analyse
from testbed.experiment._design import (
    MAX_CELLS,
    SCENARIO_SET,
    ContrastSpec,
    Design,
    DesignError,
    LoadedDesign,
    experiment_json_schema,
    load_design,
    load_design_text,
    write_experiment_json_schema,
)
from testbed.experiment._execute import (
    CELLS_DIR,
    MANIFEST_FILE,
    CellRun,
    cell_dir,
    plan_from_manifest,
    run_cells,
    write_manifest,
)
from testbed.experiment._extensions import (
    BUNDLES,
    POLICIES,
    ContractsFactor,
    ExtensionsFactor,
    MemoryFactor,
    ObservabilityFactor,
)
from testbed.experiment._factors import (
    AgentFactor,
    DeclarationsFactor,
    Factor,
    FaultsFactor,
    Level,
    OverrideFactor,
    ScenarioFactor,
)
from testbed.experiment._kinds import FACTOR_KINDS
from testbed.experiment._outcomes import BINARY, FAMILIES, NUMERIC
from testbed.experiment._plan import QUICK_RUNS, Cell, Contrast, Plan, plan_experiment
from testbed.experiment._population import PopulationLevels
from testbed.experiment._render import ResultFiles, effect_plot, render_table, write_results
from testbed.experiment._stats import (
    Comparison,
    compare_binary,
    compare_numeric,
    compare_ratio,
    holm,
    quantile_interval,
)

__all__ = [
    "BINARY",
    "BUNDLES",
    "CELLS_DIR",
    "CONTRAST_COLUMNS",
    "FACTOR_KINDS",
    "FAMILIES",
    "MANIFEST_FILE",
    "MAX_CELLS",
    "NUMERIC",
    "POLICIES",
    "QUICK_RUNS",
    "SCENARIO_SET",
    "AgentFactor",
    "Cell",
    "CellRun",
    "Comparison",
    "ContractsFactor",
    "Contrast",
    "ContrastSpec",
    "DeclarationsFactor",
    "Design",
    "DesignError",
    "ExtensionsFactor",
    "Factor",
    "FaultsFactor",
    "Level",
    "LoadedDesign",
    "MemoryFactor",
    "ObservabilityFactor",
    "OverrideFactor",
    "Plan",
    "PopulationLevels",
    "ResultFiles",
    "Results",
    "ScenarioFactor",
    "analyse",
    "cell_dir",
    "compare_binary",
    "compare_numeric",
    "compare_ratio",
    "effect_plot",
    "experiment_json_schema",
    "holm",
    "load_design",
    "load_design_text",
    "plan_experiment",
    "plan_from_manifest",
    "quantile_interval",
    "render_table",
    "run_cells",
    "write_experiment_json_schema",
    "write_manifest",
    "write_results",
]
