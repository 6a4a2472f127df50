"""Tables a paper can print: the contrasts and the cells, formatted once, written as CSV, Markdown and LaTeX.

Each table is a DataFrame of display strings (:func:`contrast_table`, :func:`cell_table`); :func:`markdown`
and :func:`latex` only lay them out (a pipe table; a booktabs ``tabular`` with LaTeX's special characters
escaped), so the three files always show the same figures.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Final

from testbed.experiment._outcomes import FAMILIES, LATENCY_QUANTILES, PLAN, TASK

if TYPE_CHECKING:
    import pandas as pd

    from testbed.experiment._analyse import Results

__all__ = ["cell_table", "contrast_table", "latex", "markdown"]

_LATEX_SPECIAL: Final = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def _number(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{float(value):.{digits}g}"


def _p(value: float) -> str:
    return "–" if math.isnan(value) else ("<0.001" if value < 0.001 else f"{value:.3f}")


def _effect(measure: str, difference: float, low: float, high: float) -> str:
    if measure == "proportion":
        return f"{difference * 100:+.1f} pp [{low * 100:+.1f}, {high * 100:+.1f}]"
    if measure == "ratio":
        return f"×{difference:.3f} [{low:.3f}, {high:.3f}]"
    return f"{difference:+.3g} [{low:+.3g}, {high:+.3g}]"


def _value(measure: str, value: float) -> str:
    return f"{value * 100:.1f} %" if measure == "proportion" else _number(value)


def contrast_table(results: Results) -> pd.DataFrame:
    """One row per contrast and outcome: pairs, baseline and treatment values, the effect with its interval
    (percentage points for proportions, a factor for the latency ratio), and the Holm-adjusted p."""
    import pandas as pd

    confidence = f"{results.plan.loaded.design.confidence:.0%}"
    rows = [
        {
            "Contrast": row.contrast,
            "Outcome": row.outcome,
            "Pairs": str(row.pairs),
            "Baseline": _value(row.measure, row.baseline),
            "Treatment": _value(row.measure, row.treatment),
            f"Effect [{confidence} CI]": _effect(row.measure, row.difference, row.low, row.high),
            "p (Holm)": _p(row.p_holm),
        }
        for row in results.contrasts.itertuples(index=False)
    ]
    return pd.DataFrame(rows)


def _rate(row: pd.Series[Any], name: str) -> str:
    estimate = row.get(f"{name}_percent")
    if estimate is None or (isinstance(estimate, float) and math.isnan(estimate)):
        return "–"
    return f"{estimate:.0f} [{row[f'{name}_low']:.0f}, {row[f'{name}_high']:.0f}]"


def _quantile(row: pd.Series[Any], name: str) -> str:
    estimate = row.get(f"latency_{name}_ms")
    if estimate is None or (isinstance(estimate, float) and math.isnan(estimate)):
        return "–"
    return f"{estimate:.3g} [{_number(row[f'latency_{name}_low'])}, {_number(row[f'latency_{name}_high'])}]"


def cell_table(results: Results) -> pd.DataFrame:
    """One row per cell: its levels, task success and plan validity where defined, each family seen in any
    cell (percent of runs, Wilson interval), calls per run, and per-call latency quantiles (ms, order-statistic
    interval)."""
    import pandas as pd

    cells = results.cells
    factors = [name for name, _ in results.plan.factors]
    rates = [name for name in (TASK, PLAN) if cells[f"{name}_percent"].notna().any()]
    families = [family for family in FAMILIES if (cells[f"{family}_percent"].fillna(0) > 0).any()]
    rows = []
    for _, row in cells.iterrows():
        shown: dict[str, str] = {factor: str(row[factor]) for factor in factors}
        shown["Runs"] = str(row["runs"])
        shown.update({f"{name} %": _rate(row, name) for name in (*rates, *families)})
        shown["Calls/run"] = _number(row["calls_per_run"])
        shown.update({f"Latency {name} ms": _quantile(row, name) for name in LATENCY_QUANTILES})
        rows.append(shown)
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame) -> str:
    """A pipe table (GitHub and pandoc Markdown)."""

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    header = [str(column) for column in table.columns]
    body = [line([str(value) for value in values]) for values in table.itertuples(index=False)]
    return "\n".join([line(header), line(["---"] * len(header)), *body]) + "\n"


def _escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(character, character) for character in text).replace("×", r"$\times$")


def latex(table: pd.DataFrame, *, caption: str) -> str:
    """A booktabs ``table`` with a ``tabular`` (needs ``\\usepackage{booktabs}``)."""
    columns = "l" * min(2, len(table.columns)) + "r" * max(0, len(table.columns) - 2)
    header = " & ".join(_escape(str(column)) for column in table.columns) + r" \\"
    body = [" & ".join(_escape(str(value)) for value in values) + r" \\" for values in table.itertuples(index=False)]
    return (
        "\n".join(
            [
                r"\begin{table}",
                r"\centering",
                rf"\caption{{{_escape(caption)}}}",
                rf"\begin{{tabular}}{{{columns}}}",
                r"\toprule",
                header,
                r"\midrule",
                *body,
                r"\bottomrule",
                r"\end{tabular}",
                r"\end{table}",
            ]
        )
        + "\n"
    )
