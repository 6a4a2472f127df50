"""``testbed reproduce cases`` on its own: its report carries the validators' calibration beside table D."""

from __future__ import annotations

import pandas as pd
import pytest

from tests._helpers import CasesCommand


@pytest.mark.slow
def test_a_cases_report_links_each_finding_to_its_validators_calibration(reproduced_cases_quick: CasesCommand) -> None:
    result, out = reproduced_cases_quick, reproduced_cases_quick.out
    assert result.exit_code == 0, result.output
    assert "validator calibration: recall lower bound >= 0.99 for " in result.output
    assert (out / "calibration" / "calibration.parquet").is_file()  # its own, not a paper run's
    report = (out / "report.html").read_text(encoding="utf-8")
    assert '<section id="calibration"><h2>Validator calibration</h2>' in report
    assert "Recorded under <code>calibration</code>" in report
    tables = pd.read_csv(out / "tables.csv", keep_default_na=False).set_index("row")
    finding = tables.loc["FHIR-like: scale mismatches"]
    assert finding["family"] == "coords"
    assert finding["calibration"].startswith("coords.")
    assert "recall >= " in finding["calibration"]
    assert tables.loc["FHIR-like: size", "calibration"] == ""  # an input: no validator produced it
