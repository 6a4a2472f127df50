"""The CLI in-process: the demo, the model commands, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from testbed.cli import main
from testbed.imaging import load_image


def test_demo_writes_an_annotated_png_and_a_scored_json(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["demo", "--seed", "3", "--out", str(tmp_path), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    image = load_image(tmp_path / "demo.png")
    assert image.shape == (240, 320, 3)
    document = json.loads((tmp_path / "demo.json").read_text())
    assert document["summary"]["ground_truth_objects"] == len(document["scene"]["ground_truth"]) > 0
    assert document["summary"]["detection_recall_iou50"] >= 0.5
    matched = [d for d in document["detections"] if d["ground_truth"] is not None]
    assert matched
    assert all(d["iou"] >= 0.5 for d in matched)
    assert all(s["mask_iou"] is None or 0.0 <= s["mask_iou"] <= 1.0 for s in document["segments"])


def test_demo_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    runner = CliRunner()
    for name in ("a", "b"):
        assert (
            runner.invoke(main, ["demo", "--seed", "5", "--out", str(tmp_path / name), "--device", "cpu"]).exit_code
            == 0
        )
    first = json.loads((tmp_path / "a" / "demo.json").read_text())
    second = json.loads((tmp_path / "b" / "demo.json").read_text())
    assert first == second
    assert np.array_equal(load_image(tmp_path / "a" / "demo.png"), load_image(tmp_path / "b" / "demo.png"))


def test_demo_on_a_real_image_reports_no_recall(tmp_path: Path) -> None:
    from testbed.scenes import packaged_images

    args = ["demo", "--image", str(packaged_images()["bus.jpg"]), "--out", str(tmp_path), "--device", "cpu"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "demo.json").read_text())["summary"]["detection_recall_iou50"] is None


def test_models_list_shows_both_shipped_models() -> None:
    result = CliRunner().invoke(main, ["models", "list"])
    assert result.exit_code == 0
    assert "shapes-det.pt" in result.output
    assert "shapes-seg.pt" in result.output


def _assert_one_line_error(args: list[str], expected: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert expected in lines[0]


def test_unreadable_image_is_one_line_naming_the_file(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.txt"
    bogus.write_text("not an image")
    _assert_one_line_error(["demo", "--image", str(bogus), "--out", str(tmp_path)], "notes.txt")


def test_missing_weights_are_one_line_naming_the_file(tmp_path: Path) -> None:
    _assert_one_line_error(["demo", "--detector", str(tmp_path / "missing.pt"), "--out", str(tmp_path)], "missing.pt")


def test_corrupt_weights_are_one_line_naming_the_file(tmp_path: Path) -> None:
    corrupt = tmp_path / "broken.pt"
    corrupt.write_bytes(b"garbage")
    _assert_one_line_error(
        ["demo", "--segmenter", str(corrupt), "--out", str(tmp_path), "--device", "cpu"], "broken.pt"
    )


def test_unknown_device_is_one_line_naming_the_value(tmp_path: Path) -> None:
    _assert_one_line_error(["demo", "--device", "tpu", "--out", str(tmp_path)], "'tpu'")


def test_plugins_lists_every_kind_and_where_it_came_from() -> None:
    result = CliRunner().invoke(main, ["plugins"])
    assert result.exit_code == 0, result.output
    for kind, name in [
        ("server", "detect-xyxy"),
        ("agent", "retrieval"),
        ("fault kind", "flip_convention"),
        ("validator", "coords.mismatch"),
        ("task checker", "crop_every"),
        ("scene source", "synthetic"),
    ]:
        assert any(kind in line and name in line for line in result.output.splitlines()), (kind, name)
    # 11 named + 5 parametric + 9 vuln-*
    assert "servers = servers (mcp-vision-testbed): 32 registered" in result.output


def test_serving_an_unknown_server_is_one_line_listing_the_known_ones() -> None:
    result = CliRunner().invoke(main, ["serve", "no-such-server"])
    assert result.exit_code != 0
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert "unknown server 'no-such-server'; known: detect-xyxy" in result.output
