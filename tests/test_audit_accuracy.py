"""The auditor's accuracy benchmark (``benchmarks/audit_accuracy.py``): its tables come from real audits."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from benchmarks import audit_accuracy as bench
from testbed.conventions import BoxConvention, MaskEncoding
from testbed.profile import check_profile
from testbed.protocol import MemoryScope
from testbed.registry import registry


def test_sampled_profiles_are_seeded_and_every_one_fits_its_capability() -> None:
    first = bench.sample_profiles(6, seed=3)
    assert first == bench.sample_profiles(6, seed=3)
    assert first != bench.sample_profiles(6, seed=4)
    for capability, profile in first:
        check_profile(capability, profile)


def test_truth_values_name_each_audited_property_of_a_manifest() -> None:
    values = bench.truth_values(registry().server("segment-png").truth)
    assert ("convention", "segment_image", "xyxy/pixel/xy/top_left") in values
    assert ("encoding", "segment_image", "png_base64") in values
    assert ("schema style", "load_image", "full") in values
    assert ("memory scope", None, "ttl") in values


@pytest.mark.slow
def test_audited_servers_match_their_truth_and_a_wrong_truth_is_a_miss(tmp_path: Path) -> None:
    chosen = bench.targets(1, seed=0, only=["detect-yxyx", "crop-handle", "segment-png"])  # and one sampled profile
    assert chosen[-1].label == "profile-0:segment"
    assert chosen[-1].profile is not None
    assert chosen[-1].profile.mask.encoding is MaskEncoding.RESOURCE_URI
    truth = registry().server("detect-yxyx").truth
    said = truth.tools[0].model_copy(update={"box_convention": BoxConvention.from_name("xyxy/pixel")})
    wrong = bench.Audited("wrong", "detect-yxyx", truth.model_copy(update={"tools": (said,)}))
    comparisons = anyio.run(lambda: bench.audit_all([*chosen, wrong], work=tmp_path, device="cpu", seed=0))
    by = {(c.label, c.prop): c for c in comparisons}
    assert by[("detect-yxyx", "convention")].inferred == "xyxy/per_mille/yx/top_left"
    assert by[("detect-yxyx", "convention")].correct
    assert by[("crop-handle", "memory scope")].inferred == MemoryScope.GLOBAL.value
    assert by[("crop-handle", "memory scope")].correct
    # segment-png's TTL is undeclared: the handle stops resolving once the logical clock is far ahead.
    assert by[("segment-png", "memory scope")].inferred == MemoryScope.TTL.value
    # resource_uri masks, recognised by their mask:// URIs though the server serves no resources/read.
    assert by[("profile-0:segment", "encoding")].inferred == MaskEncoding.RESOURCE_URI.value
    assert by[("wrong", "convention")].inferred == "xyxy/per_mille/yx/top_left"  # what the server does
    assert not by[("wrong", "convention")].correct
    correct, total = bench.accuracy(comparisons, "convention")
    assert total == 4
    assert correct == 3
    assert sum(bench.confusion(comparisons, "convention").values()) == total
