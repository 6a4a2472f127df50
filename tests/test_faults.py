"""Faults: models and their validation, the seeded plan, and every kind injected through the transport seam.

Each kind is injected through ``TapTransport(InMemoryTransport(server), injector)`` under
``mcp.Client`` against a small in-process server defined here (boxes, masks and TTL
handles, with a truth manifest), and the test asserts what the client observes and
what ``on_fault`` recorded.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import mcp.types as types
import numpy as np
import pytest
import yaml
from mcp import Client, MCPError
from mcp.client._memory import InMemoryTransport
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.message import SessionMessage
from scipy.stats import binom

from testbed.conventions import (
    BoxConvention,
    ImageSize,
    MaskEncoding,
    MaskResolution,
    convert_boxes,
    decode_masks,
    encode_masks,
    resize_masks,
)
from testbed.events import Direction, FaultEvent
from testbed.faults import (
    FAULT_ADAPTER,
    FAULT_CATALOG,
    FAULT_KINDS,
    SCHEMA_RUG_PULL_ARGUMENT,
    DelayFault,
    FaultError,
    FaultInjector,
    FaultLayer,
    FaultPlan,
    FaultTarget,
    check_targets,
    load_faults,
    parse_payload_path,
    read_path,
    remove_at,
    rename_at,
    write_path,
)
from testbed.protocol import CLOCK_META_KEY, MemoryScope, SchemaStyle, SemanticRole, ServerTruth, ToolTruth
from testbed.registry import registry
from testbed.transport import LISTING_NODE, CallSite, Item, TapTransport, current_call

pytestmark = pytest.mark.anyio

ALIAS = "srv"
SIZE = ImageSize(width=40, height=30)
BOX_CONVENTION = BoxConvention.from_name("xywh/pixel")
BOXES = [[2.0, 3.0, 10.0, 8.0], [20.0, 5.0, 12.0, 20.0]]
TTL_S = 30.0
READ_TIMEOUT_S = 0.5
BOUND_S = 10.0
"""Bound on any single test's MCP exchange."""

TRUTH = ServerTruth(
    name="fault-fixture",
    kind="detection",
    summary="Boxes in xywh pixels, PNG masks at image resolution, TTL image handles.",
    declares_conventions=False,
    tools=(
        ToolTruth(
            name="detect",
            schema_style=SchemaStyle.LOOSE,
            box_convention=BOX_CONVENTION,
            paths={
                SemanticRole.DETECTIONS: "detections",
                SemanticRole.BOUNDING_BOX: "detections[*].bbox",
                SemanticRole.CLASS_LABEL: "detections[*].label",
            },
        ),
        ToolTruth(
            name="segment",
            schema_style=SchemaStyle.LOOSE,
            mask_encoding=MaskEncoding.PNG_BASE64,
            mask_resolution=MaskResolution.IMAGE,
            paths={SemanticRole.INSTANCES: "masks", SemanticRole.MASK: "masks[*].mask_png"},
        ),
        ToolTruth(
            name="load_image",
            schema_style=SchemaStyle.TEXT_JSON,
            accepts=(MemoryScope.BY_VALUE,),
            returns=MemoryScope.TTL,
            ttl_seconds=TTL_S,
            paths={SemanticRole.IMAGE_HANDLE: "image_id"},
        ),
        ToolTruth(
            name="use_image",
            schema_style=SchemaStyle.LOOSE,
            accepts=(MemoryScope.TTL,),
            inputs={SemanticRole.IMAGE_HANDLE: "image_id"},
        ),
        ToolTruth(name="first", schema_style=SchemaStyle.LOOSE),
        ToolTruth(name="second", schema_style=SchemaStyle.LOOSE),
    ),
)


def make_masks() -> np.ndarray:
    masks = np.zeros((2, SIZE.height, SIZE.width), dtype=np.bool_)
    masks[0, 3:11, 2:12] = True
    masks[1, 5:25, 20:32] = True
    return masks


MASKS = make_masks()


def structured(payload: dict[str, Any]) -> types.CallToolResult:
    """``payload`` as structuredContent and as JSON in a text block."""
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=json.dumps(payload))], structured_content=payload
    )


def tool_error(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)


@dataclass
class Fixture:
    """The test server and what it saw."""

    server: MCPServer
    calls: list[str] = field(default_factory=list)
    """Tools called, in the order the server received them."""
    clocks: list[float] = field(default_factory=list)
    """The logical clock of every use_image call."""
    second_started: anyio.Event = field(default_factory=anyio.Event)
    release_second: anyio.Event = field(default_factory=anyio.Event)


def build_fixture() -> Fixture:
    server = MCPServer("fault-fixture", log_level="ERROR")
    fixture = Fixture(server=server)
    handles: dict[str, float] = {}

    def clock_of(ctx: Context) -> float:
        meta: dict[str, Any] = dict(ctx.request_context.meta or {})
        return float(meta.get(CLOCK_META_KEY, 0.0))

    @server.tool()
    def detect(fail: bool = False) -> types.CallToolResult:
        fixture.calls.append("detect")
        if fail:
            return tool_error("detector failed")
        detections = [{"bbox": box, "label": label} for box, label in zip(BOXES, ("circle", "square"), strict=True)]
        return structured({"detections": detections, "count": len(detections)})

    @server.tool()
    def segment() -> types.CallToolResult:
        fixture.calls.append("segment")
        pngs = encode_masks(MASKS, MaskEncoding.PNG_BASE64)
        return structured({"masks": [{"mask_png": png, "label": "circle"} for png in pngs]})

    @server.tool()
    def load_image(ctx: Context) -> types.CallToolResult:
        fixture.calls.append("load_image")
        handle = f"ttl-{len(handles):06x}"
        handles[handle] = clock_of(ctx)
        payload = {"image_id": handle, "expires_at": handles[handle] + TTL_S}
        return types.CallToolResult(content=[types.TextContent(type="text", text=json.dumps(payload))])

    @server.tool()
    def use_image(image_id: str, ctx: Context) -> types.CallToolResult:
        fixture.calls.append("use_image")
        clock = clock_of(ctx)
        fixture.clocks.append(clock)
        if image_id not in handles:
            return tool_error(f"unknown handle {image_id!r}")
        if clock >= handles[image_id] + TTL_S:
            return tool_error(f"handle {image_id!r} expired at {handles[image_id] + TTL_S:g}")
        return structured({"ok": True, "clock": clock})

    @server.tool()
    async def first() -> types.CallToolResult:
        fixture.calls.append("first")
        await fixture.second_started.wait()
        return structured({"n": 1})

    @server.tool()
    async def second() -> types.CallToolResult:
        fixture.calls.append("second")
        fixture.second_started.set()
        await fixture.release_second.wait()
        return structured({"n": 2})

    return fixture


@dataclass
class Harness:
    """A client connected through the injector, with what the client saw and what was recorded."""

    client: Client
    fixture: Fixture
    recorded: list[FaultEvent]
    delivered: list[Item]
    """Every server→client item as the client received it (after the injector)."""

    async def call(
        self,
        tool: str,
        arguments: dict[str, Any] | None = None,
        *,
        run: int = 0,
        node: str = "node",
        item: int = 0,
        clock: float = 0.0,
        read_timeout_s: float = READ_TIMEOUT_S,
    ) -> types.CallToolResult:
        """Make one tool call inside its call site, as the orchestrator does."""
        site = CallSite(run=run, node=node, item=item, server=ALIAS, tool=tool, image_size=SIZE, truth=TRUTH.tool(tool))
        params = types.CallToolRequestParams.model_validate(
            {"name": tool, "arguments": arguments or {}, "_meta": {CLOCK_META_KEY: clock}}
        )
        with call_site(site), anyio.fail_after(BOUND_S):
            return await self.client.session.send_request(
                types.CallToolRequest(params=params),
                types.CallToolResult,
                request_read_timeout_seconds=read_timeout_s,
            )

    async def list_tools(self, *, run: int | None = None) -> list[dict[str, Any]]:
        """List the tools, inside run ``run``'s listing context (``None``: outside any)."""
        token = current_call.set(CallSite(run=run, node=LISTING_NODE, item=0)) if run is not None else None
        try:
            with anyio.fail_after(BOUND_S):
                listed = await self.client.list_tools()
        finally:
            if token is not None:
                current_call.reset(token)
        return [tool.model_dump(by_alias=True, mode="json", exclude_none=True) for tool in listed.tools]

    def responses(self) -> list[types.JSONRPCResponse]:
        """The result responses the client received, in order."""
        return [
            entry.message
            for entry in self.delivered
            if isinstance(entry, SessionMessage) and isinstance(entry.message, types.JSONRPCResponse)
        ]


@contextmanager
def call_site(site: CallSite) -> Iterator[None]:
    token = current_call.set(site)
    try:
        yield
    finally:
        current_call.reset(token)


@asynccontextmanager
async def connected(
    faults: list[dict[str, Any]],
    *,
    seed: int = 0,
    kill: Callable[[], Any] | None = None,
    restart: Callable[[], Any] | None = None,
    on_fault: Callable[[FaultEvent], None] | None = None,
    fixture: Fixture | None = None,
) -> AsyncIterator[Harness]:
    fixture = fixture or build_fixture()
    recorded: list[FaultEvent] = []
    delivered: list[Item] = []

    def record(fault: FaultEvent) -> None:
        recorded.append(fault)
        if on_fault is not None:
            on_fault(fault)

    injector = FaultInjector(
        FaultPlan(load_faults(faults), seed=seed), ALIAS, on_fault=record, kill=kill, restart=restart
    )

    async def observe(direction: Direction, item: Item) -> list[Item]:
        if direction is Direction.SERVER_TO_CLIENT:
            delivered.append(item)
        return [item]

    transport = TapTransport(TapTransport(InMemoryTransport(fixture.server), injector), observe)
    async with Client(transport, cache=None) as client:
        yield Harness(client=client, fixture=fixture, recorded=recorded, delivered=delivered)


def target(tool: str | None = None, **place: str) -> dict[str, Any]:
    return {"server": ALIAS, **({"tool": tool} if tool else {}), **place}


def assert_recorded(harness: Harness, kind: str, *, node: str = "node") -> FaultEvent:
    """Exactly one fault was recorded, of ``kind``, with the catalog's layer and expected IDs."""
    assert [fault.kind for fault in harness.recorded] == [kind]
    fault = harness.recorded[0]
    assert fault.applied, fault.detail
    assert fault.expected == FAULT_CATALOG[kind].expected
    assert fault.layer is FAULT_CATALOG[kind].layer
    assert (fault.run, fault.node, fault.item, fault.server, fault.index) == (0, node, 0, ALIAS, 0)
    return fault


def text_payload(result: types.CallToolResult) -> Any:
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return json.loads(block.text)


# --- catalog --------------------------------------------------------------------------------------

EXPECTED_IDS = {
    "delay": (),
    "timeout": ("proto.timeout",),
    "drop": ("proto.timeout",),
    "duplicate": ("proto.id_mismatch",),
    "reorder": (),
    "truncate": ("proto.malformed_message",),
    "corrupt_json": ("proto.malformed_message",),
    "jsonrpc_error": ("proto.error_misclassified",),
    "rename_field": ("schema.structured_mismatch",),
    "remove_field": ("schema.structured_mismatch",),
    "flip_convention": ("coords.mismatch",),
    "change_units": ("coords.mismatch",),
    "mask_resolution": ("mask.size_mismatch",),
    "evict_handle": ("memory.handle_unknown",),
    "expire_handle": ("memory.handle_expired",),
    "rug_pull": ("proto.tool_list_changed",),
    "kill": ("proto.transport_closed",),
    "restart": (),
}

EXAMPLES: dict[str, dict[str, Any]] = {
    "delay": {"kind": "delay", "seconds": 0.5, "target": target("detect")},
    "timeout": {"kind": "timeout", "target": target("detect")},
    "drop": {"kind": "drop", "target": target("detect")},
    "duplicate": {"kind": "duplicate", "target": target("detect")},
    "reorder": {"kind": "reorder", "hold_s": 0.2, "target": target("detect")},
    "truncate": {"kind": "truncate", "keep": 0.5, "target": target("detect")},
    "corrupt_json": {"kind": "corrupt_json", "target": target("detect")},
    "jsonrpc_error": {"kind": "jsonrpc_error", "code": -32603, "message": "boom", "target": target("detect")},
    "rename_field": {
        "kind": "rename_field",
        "new_name": "name",
        "target": target("detect", path="detections[*].label"),
    },
    "remove_field": {"kind": "remove_field", "target": target("detect", path="count")},
    "flip_convention": {
        "kind": "flip_convention",
        "to": "cxcywh/normalized",
        "target": target("detect", role="bounding_box"),
    },
    "change_units": {"kind": "change_units", "to_units": "per_mille", "target": target("detect", role="bounding_box")},
    "mask_resolution": {"kind": "mask_resolution", "size": [20, 15], "target": target("segment", role="mask")},
    "evict_handle": {"kind": "evict_handle", "target": target("load_image", role="image_handle")},
    "expire_handle": {"kind": "expire_handle", "target": target("load_image")},
    "rug_pull": {"kind": "rug_pull", "change": "description", "target": target("detect")},
    "kill": {"kind": "kill", "target": target("detect")},
    "restart": {"kind": "restart", "target": target("detect")},
}


def test_catalog_lists_every_fault_kind_with_its_expected_violation_ids() -> None:
    faults = registry().faults
    union_kinds = {kind for kind, plugin in faults.items() if plugin.origin.distribution == "mcp-vision-testbed"}
    assert set(FAULT_KINDS) == union_kinds == set(EXPECTED_IDS) == set(EXAMPLES)
    for kind, info in FAULT_CATALOG.items():
        assert info.expected == EXPECTED_IDS[kind], kind
        assert info.description
        assert "\n" not in info.description
    assert {kind for kind, info in FAULT_CATALOG.items() if info.layer is FaultLayer.PROCESS} == {"kill", "restart"}


def test_every_example_fault_round_trips_through_yaml() -> None:
    faults = load_faults(list(EXAMPLES.values()))
    dumped = [FAULT_ADAPTER.dump_python(fault, mode="json", exclude_none=True) for fault in faults]
    assert load_faults(yaml.safe_load(yaml.safe_dump(dumped))) == faults
    assert [fault.kind for fault in faults] == list(EXAMPLES)


def test_the_v1_fault_scenario_lists_valid_faults() -> None:
    data = yaml.safe_load((Path(__file__).parent.parent / "scenarios" / "v1" / "faults.yaml").read_text())
    assert {fault.kind for fault in load_faults(data["faults"])} == set(FAULT_KINDS)


# --- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "where", "words"),
    [
        ({"kind": "delay", "probability": 1.5, "target": target()}, "faults[0].probability:", "between 0 and 1"),
        ({"kind": "delay", "probability": -0.1, "target": target()}, "faults[0].probability:", "between 0 and 1"),
        ({"kind": "melt", "target": target()}, "faults[0].kind:", "expected one of: delay, timeout, drop"),
        ({"kind": "delay", "seconds": -1, "target": target()}, "faults[0].seconds:", "negative"),
        ({"kind": "flip_convention", "to": "xywh/pixel", "target": target()}, "faults[0].target:", "path or"),
        ({"kind": "mask_resolution", "size": [2, 2], "target": target()}, "faults[0].target:", "path or"),
        (
            {"kind": "flip_convention", "to": "xyzz/pixel", "target": target(path="boxes")},
            "faults[0].to:",
            "box format",
        ),
        (
            {"kind": "flip_convention", "to": "xywh/pixel", "from": "xywh/pixel", "target": target(path="boxes")},
            "faults[0].to:",
            "already",
        ),
        ({"kind": "rename_field", "new_name": "x", "target": target(path="a[*]")}, "faults[0].target.path:", "field"),
        ({"kind": "delay", "target": target(path="a..b")}, "faults[0].target.path:", "position 1"),
        ({"kind": "delay", "target": target(path="a", role="mask")}, "faults[0].target.role:", "not both"),
        ({"kind": "rug_pull", "change": "schema", "target": target()}, "faults[0].target.tool:", "tool"),
        ({"kind": "delay", "target": target(), "color": "red"}, "faults[0].color:", "unknown field"),
    ],
)
def test_each_invalid_fault_is_one_line_naming_its_field(fault: dict[str, Any], where: str, words: str) -> None:
    with pytest.raises(FaultError) as caught:
        load_faults([fault])
    message = str(caught.value)
    assert message.startswith(where), message
    assert words in message
    assert "\n" not in message


def test_an_invalid_fault_later_in_the_list_is_named_by_its_index() -> None:
    with pytest.raises(FaultError, match=r"^faults\[1\]\.probability: "):
        load_faults([EXAMPLES["delay"], {**EXAMPLES["drop"], "probability": 2}])


def test_check_targets_names_an_unknown_server_alias_or_tool() -> None:
    faults = load_faults([EXAMPLES["delay"], {"kind": "drop", "target": {"server": ALIAS, "tool": "nope"}}])
    with pytest.raises(FaultError, match=r"^faults\[0\]\.target\.server: unknown server alias 'srv'"):
        check_targets(faults, aliases={"det": "detect-xyxy"}, tools=None)
    with pytest.raises(FaultError, match=r"^faults\[1\]\.target\.tool: .*no tool 'nope'"):
        check_targets(faults, aliases={ALIAS: "fixture"}, tools={ALIAS: ["detect"]})
    check_targets(faults, aliases={ALIAS: "fixture"}, tools=None)  # third-party: tools unknown
    check_targets(faults, aliases={ALIAS: "fixture"}, tools={})  # this alias's tools unknown


def test_a_fault_target_resolves_a_role_through_the_truth_manifest() -> None:
    by_role = FaultTarget(server=ALIAS, role=SemanticRole.BOUNDING_BOX)
    assert by_role.payload_path(TRUTH.tool("detect")) == parse_payload_path("detections[*].bbox")
    with pytest.raises(ValueError, match="no payload path for role 'bounding_box'"):
        by_role.payload_path(TRUTH.tool("segment"))
    with pytest.raises(ValueError, match="without a truth manifest"):
        by_role.payload_path(None)


# --- payload paths --------------------------------------------------------------------------------


def test_payload_paths_read_write_rename_and_remove_without_touching_the_input() -> None:
    payload: dict[str, Any] = {
        "detections": [{"bbox": [1, 2, 3, 4], "label": "a"}, {"bbox": [5, 6, 7, 8], "label": "b"}],
        "n": 2,
    }
    original = json.loads(json.dumps(payload))
    boxes = parse_payload_path("detections[*].bbox")
    assert read_path(payload, boxes) == [[1, 2, 3, 4], [5, 6, 7, 8]]
    written = write_path(payload, boxes, [[0, 0, 1, 1], [2, 2, 3, 3]])
    assert read_path(written, boxes) == [[0, 0, 1, 1], [2, 2, 3, 3]]
    assert read_path(written, parse_payload_path("detections[1].label")) == "b"
    renamed = rename_at(payload, parse_payload_path("detections[*].label"), "name")
    assert [sorted(d) for d in renamed["detections"]] == [["bbox", "name"], ["bbox", "name"]]
    assert remove_at(payload, parse_payload_path("n")) == {"detections": payload["detections"]}
    assert remove_at(payload, parse_payload_path("detections[0]"))["detections"] == [payload["detections"][1]]
    assert payload == original
    with pytest.raises(ValueError, match="do not match"):
        write_path(payload, boxes, [[0, 0, 1, 1]])
    with pytest.raises(ValueError, match="no field 'missing'"):
        read_path(payload, parse_payload_path("missing"))


# --- the plan -------------------------------------------------------------------------------------


def sites(count: int, *, server: str = ALIAS, tool: str = "detect") -> list[CallSite]:
    nodes = ("detect", "segment", "crop")
    return [
        CallSite(run=i // 30, node=nodes[i % 3], item=(i // 3) % 10, server=server, tool=tool) for i in range(count)
    ]


def decisions(plan: FaultPlan, at: list[CallSite]) -> list[list[int]]:
    return [[index for index, _ in plan.faults_for(site)] for site in at]


def test_the_same_seed_injects_the_same_faults_and_another_seed_differs() -> None:
    faults = load_faults([{**EXAMPLES[kind], "probability": 0.5} for kind in ("delay", "timeout", "duplicate")])
    at = sites(1000)
    first = decisions(FaultPlan(faults, seed=7), at)
    assert first == decisions(FaultPlan(faults, seed=7), at)
    assert first == decisions(FaultPlan(faults, seed=7), list(reversed(at)))[::-1]  # order of calls is irrelevant
    assert first != decisions(FaultPlan(faults, seed=8), at)


def test_each_kind_fires_at_its_probability_within_a_binomial_bound() -> None:
    probability, count = 0.3, 2000
    any_tool = [
        {**example, "probability": probability, "target": {**example["target"], "tool": None}}
        if kind != "rug_pull"
        else {**example, "probability": probability}
        for kind, example in EXAMPLES.items()
    ]
    faults = load_faults(any_tool)
    plan = FaultPlan(faults, seed=11)
    fired = np.zeros(len(faults), dtype=int)
    for site in sites(count):
        for index, _ in plan.faults_for(site):
            fired[index] += 1
    for run in range(count):
        for index, _ in plan.listing_faults(run):
            fired[index] += 1
    low, high = binom.interval(0.999, count, probability)
    for index, fault in enumerate(faults):
        assert low <= fired[index] <= high, (fault.kind, fired[index], (low, high))


def test_probability_zero_never_fires_and_one_always_fires() -> None:
    faults = load_faults([{**EXAMPLES["delay"], "probability": 0.0}, {**EXAMPLES["drop"], "probability": 1.0}])
    assert decisions(FaultPlan(faults, seed=3), sites(200)) == [[1]] * 200


def test_runs_and_nodes_schedules_restrict_where_a_fault_fires() -> None:
    faults = load_faults(
        [
            {**EXAMPLES["delay"], "runs": [1, 3]},
            {**EXAMPLES["drop"], "nodes": ["segment"]},
            {**EXAMPLES["timeout"], "runs": [2], "nodes": ["crop"]},
            {**EXAMPLES["rug_pull"], "runs": [4]},
        ]
    )
    plan = FaultPlan(faults, seed=0)
    for site in sites(300):
        fired = {index for index, _ in plan.faults_for(site)}
        assert (0 in fired) == (site.run in (1, 3))
        assert (1 in fired) == (site.node == "segment")
        assert (2 in fired) == (site.run == 2 and site.node == "crop")
        assert 3 not in fired  # rug pulls apply only to listings
    assert [run for run in range(10) if plan.listing_faults(run)] == [4]
    assert plan.listing_faults(4, server="other") == []


def test_a_fault_fires_only_on_its_server_and_tool() -> None:
    plan = FaultPlan(load_faults([EXAMPLES["delay"]]), seed=0)
    assert plan.faults_for(sites(1, tool="segment")[0]) == []
    assert plan.faults_for(sites(1, server="other")[0]) == []
    assert [index for index, _ in plan.faults_for(sites(1)[0])] == [0]
    any_tool = FaultPlan([DelayFault(target=FaultTarget(server=ALIAS))], seed=0)
    assert len(any_tool.faults_for(sites(1, tool="segment")[0])) == 1


# --- transport faults -----------------------------------------------------------------------------


async def test_delay_holds_the_request_and_the_call_still_succeeds() -> None:
    async with connected([{**EXAMPLES["delay"], "seconds": 0.02}]) as harness:
        result = await harness.call("detect")
    assert result.structured_content is not None
    assert result.structured_content["count"] == 2
    assert harness.fixture.calls == ["detect"]
    assert "0.02s late" in assert_recorded(harness, "delay").detail


async def test_timeout_withholds_the_response_so_the_client_times_out() -> None:
    async with connected([EXAMPLES["timeout"]]) as harness:
        with pytest.raises(MCPError) as caught:
            await harness.call("detect")
        assert caught.value.code == types.REQUEST_TIMEOUT
        assert harness.fixture.calls == ["detect"]  # the server did answer
        assert (await harness.call("segment")).structured_content is not None  # the session stays usable
    assert_recorded(harness, "timeout")


async def test_drop_keeps_the_request_from_the_server_so_the_client_times_out() -> None:
    async with connected([EXAMPLES["drop"]]) as harness:
        with pytest.raises(MCPError) as caught:
            await harness.call("detect")
    assert caught.value.code == types.REQUEST_TIMEOUT
    assert harness.fixture.calls == []
    assert_recorded(harness, "drop")


async def test_duplicate_delivers_the_response_twice_and_the_client_returns_one_result() -> None:
    async with connected([EXAMPLES["duplicate"]]) as harness:
        result = await harness.call("detect")
        again = await harness.call("segment")
    assert result.structured_content is not None
    assert result.structured_content["count"] == 2
    assert again.structured_content is not None
    ids = [response.id for response in harness.responses()]
    assert len(ids) == 4
    assert ids[1] == ids[2]
    assert ids[2] != ids[3]
    assert_recorded(harness, "duplicate")


async def test_reorder_holds_a_response_until_the_next_response_passes_it() -> None:
    fixture = build_fixture()

    def release_second_when_held(fault: FaultEvent) -> None:
        if fault.kind == "reorder":
            fixture.release_second.set()

    fault = {"kind": "reorder", "target": target("first")}
    async with connected([fault], on_fault=release_second_when_held, fixture=fixture) as harness:
        results: dict[str, types.CallToolResult] = {}

        async def call(tool: str) -> None:
            results[tool] = await harness.call(tool, node=tool)

        async with anyio.create_task_group() as group:
            group.start_soon(call, "first")
            group.start_soon(call, "second")
    assert {tool: result.structured_content for tool, result in results.items()} == {
        "first": {"n": 1},
        "second": {"n": 2},
    }
    delivered = [response.result.get("structuredContent") for response in harness.responses()[1:]]
    assert delivered == [{"n": 2}, {"n": 1}]  # first answered first, but arrived second
    assert "passes it" in assert_recorded(harness, "reorder", node="first").detail


async def test_a_held_response_is_released_when_the_request_it_waits_on_is_cancelled() -> None:
    # "second" never answers; once "first" is held, the caller of "second" gives up (which cancels
    # the request). Nothing else could pass the held response, so a ping's answer releases it.
    second_scope = anyio.CancelScope()
    results: dict[str, types.CallToolResult] = {}

    def cancel_second_when_held(fault: FaultEvent) -> None:
        if fault.kind == "reorder":
            second_scope.cancel()

    async def call(harness: Harness, tool: str) -> None:
        results[tool] = await harness.call(tool, node=tool, read_timeout_s=BOUND_S / 2)

    async def call_second(harness: Harness) -> None:
        with second_scope:
            await call(harness, "second")

    fault = {"kind": "reorder", "target": target("first")}
    async with (
        connected([fault], on_fault=cancel_second_when_held) as harness,
        anyio.create_task_group() as group,
    ):
        group.start_soon(call, harness, "first")
        group.start_soon(call_second, harness)
    assert second_scope.cancelled_caught
    assert results["first"].structured_content == {"n": 1}
    assert "second" not in results
    assert "passes it" in assert_recorded(harness, "reorder", node="first").detail


async def test_reorder_with_nothing_else_in_flight_holds_the_response_briefly() -> None:
    async with connected([{"kind": "reorder", "hold_s": 0.01, "target": target("detect")}]) as harness:
        result = await harness.call("detect")
    assert result.structured_content is not None
    assert "nothing else in flight" in assert_recorded(harness, "reorder").detail


@pytest.mark.parametrize("kind", ["truncate", "corrupt_json"])
async def test_a_damaged_frame_arrives_as_an_unparseable_line_and_the_call_times_out(kind: str) -> None:
    async with connected([EXAMPLES[kind]]) as harness:
        with pytest.raises(MCPError) as caught:
            await harness.call("detect")
        assert (await harness.call("segment")).structured_content is not None
    assert caught.value.code == types.REQUEST_TIMEOUT
    damaged = [entry for entry in harness.delivered if isinstance(entry, Exception)]
    assert len(damaged) == 1
    assert isinstance(damaged[0], ValueError)
    assert_recorded(harness, kind)


async def test_jsonrpc_error_replaces_the_result_with_a_protocol_error() -> None:
    async with connected([{**EXAMPLES["jsonrpc_error"], "code": -32099, "message": "injected"}]) as harness:
        with pytest.raises(MCPError) as caught:
            await harness.call("detect")
    assert (caught.value.code, caught.value.message) == (-32099, "injected")
    assert_recorded(harness, "jsonrpc_error")


# --- semantic faults ------------------------------------------------------------------------------


def assert_text_matches_structured(result: types.CallToolResult) -> None:
    assert text_payload(result) == result.structured_content


async def test_rename_field_renames_the_field_in_structured_content_and_its_text() -> None:
    async with connected([EXAMPLES["rename_field"]]) as harness:
        result = await harness.call("detect")
    assert result.structured_content is not None
    assert [sorted(d) for d in result.structured_content["detections"]] == [["bbox", "name"], ["bbox", "name"]]
    assert_text_matches_structured(result)
    assert_recorded(harness, "rename_field")


async def test_remove_field_removes_the_field_in_structured_content_and_its_text() -> None:
    async with connected([EXAMPLES["remove_field"]]) as harness:
        result = await harness.call("detect")
    assert result.structured_content is not None
    assert "count" not in result.structured_content
    assert_text_matches_structured(result)
    assert_recorded(harness, "remove_field")


async def test_flip_convention_rewrites_the_true_boxes_in_the_target_convention() -> None:
    async with connected([EXAMPLES["flip_convention"]]) as harness:
        result = await harness.call("detect")
    assert result.structured_content is not None
    boxes = [d["bbox"] for d in result.structured_content["detections"]]
    target_convention = BoxConvention.from_name("cxcywh/normalized")
    np.testing.assert_allclose(boxes, convert_boxes(BOXES, BOX_CONVENTION, target_convention, SIZE))
    assert_text_matches_structured(result)
    assert str(target_convention) in assert_recorded(harness, "flip_convention").detail


async def test_change_units_rewrites_only_the_units_of_the_boxes() -> None:
    async with connected([EXAMPLES["change_units"]]) as harness:
        result = await harness.call("detect")
    assert result.structured_content is not None
    boxes = [d["bbox"] for d in result.structured_content["detections"]]
    per_mille = BoxConvention.from_name("xywh/per_mille")
    np.testing.assert_allclose(boxes, convert_boxes(BOXES, BOX_CONVENTION, per_mille, SIZE))
    assert_text_matches_structured(result)
    assert_recorded(harness, "change_units")


async def test_mask_resolution_returns_the_masks_on_the_new_grid() -> None:
    async with connected([EXAMPLES["mask_resolution"]]) as harness:
        result = await harness.call("segment")
    assert result.structured_content is not None
    pngs = [m["mask_png"] for m in result.structured_content["masks"]]
    smaller = ImageSize(width=20, height=15)
    masks = decode_masks(pngs, MaskEncoding.PNG_BASE64, smaller)
    np.testing.assert_array_equal(masks, resize_masks(MASKS, smaller))
    assert_text_matches_structured(result)
    assert "from 40x30 to 20x15" in assert_recorded(harness, "mask_resolution").detail


async def test_evict_handle_returns_a_handle_the_server_never_issued_so_using_it_fails() -> None:
    async with connected([EXAMPLES["evict_handle"]]) as harness:
        loaded = text_payload(await harness.call("load_image"))
        used = await harness.call("use_image", {"image_id": loaded["image_id"]}, node="use", clock=10.0)
        original = await harness.call("use_image", {"image_id": "ttl-000000"}, node="use", clock=10.0)
    assert loaded["image_id"] != "ttl-000000"
    assert loaded["image_id"].startswith("ttl-")
    assert used.is_error
    assert "unknown handle" in text_content(used)
    assert not original.is_error
    assert_recorded(harness, "evict_handle")


def text_content(result: types.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


async def test_expire_handle_advances_the_clock_of_later_requests_past_the_ttl() -> None:
    async with connected([{**EXAMPLES["expire_handle"], "runs": [0]}]) as harness:
        handle = text_payload(await harness.call("load_image", clock=0.0))["image_id"]
        same_step = await harness.call("use_image", {"image_id": handle}, node="use", clock=0.0)
        later = await harness.call("use_image", {"image_id": handle}, node="use", clock=10.0)
        other_run = await harness.call("use_image", {"image_id": handle}, run=1, node="use", clock=10.0)
    assert harness.fixture.clocks == [0.0, 10.0 + TTL_S + 1.0, 10.0]
    assert not same_step.is_error
    assert later.is_error
    assert not other_run.is_error
    assert "expired" in text_content(later)
    assert "31s" in assert_recorded(harness, "expire_handle").detail


@pytest.mark.parametrize("change", ["description", "schema", "remove_tool"])
async def test_rug_pull_alters_the_tool_list_of_the_runs_listing(change: str) -> None:
    async with connected([{**EXAMPLES["rug_pull"], "change": change, "runs": [1]}]) as harness:
        before = await harness.list_tools(run=0)
        pulled = await harness.list_tools(run=1)
        outside = await harness.list_tools()
    assert before == outside
    old = {tool["name"]: tool for tool in before}
    new = {tool["name"]: tool for tool in pulled}
    if change == "remove_tool":
        assert set(old) - set(new) == {"detect"}
    elif change == "description":
        assert new["detect"]["description"] != old["detect"].get("description")
    else:
        assert SCHEMA_RUG_PULL_ARGUMENT in new["detect"]["inputSchema"]["required"]
    assert {name: tool for name, tool in new.items() if name != "detect"} == {
        name: tool for name, tool in old.items() if name != "detect"
    }
    fault = harness.recorded[0]
    assert len(harness.recorded) == 1
    assert fault.kind == "rug_pull"
    assert fault.applied
    assert (fault.run, fault.node, fault.expected) == (1, LISTING_NODE, ("proto.tool_list_changed",))


async def test_a_semantic_fault_on_an_error_result_is_recorded_as_not_applicable() -> None:
    async with connected([EXAMPLES["flip_convention"]]) as harness:
        result = await harness.call("detect", {"fail": True})
    assert result.is_error
    [fault] = harness.recorded
    assert fault.detail.startswith("not applicable: ")
    assert "error" in fault.detail
    assert fault.expected == ()
    assert not fault.applied


async def test_payload_faults_apply_before_wire_faults_whatever_their_order() -> None:
    faults = [EXAMPLES["duplicate"], EXAMPLES["flip_convention"]]
    async with connected(faults) as harness:
        result = await harness.call("detect")
    assert result.structured_content is not None
    boxes = [d["bbox"] for d in result.structured_content["detections"]]
    flipped = convert_boxes(BOXES, BOX_CONVENTION, BoxConvention.from_name("cxcywh/normalized"), SIZE)
    np.testing.assert_allclose(boxes, flipped)
    copies = [response.result["structuredContent"] for response in harness.responses()[1:]]
    assert copies == [result.structured_content] * 2
    assert [(fault.kind, fault.applied) for fault in harness.recorded] == [
        ("flip_convention", True),
        ("duplicate", True),
    ]


async def test_response_faults_of_a_dropped_request_are_recorded_as_not_applicable() -> None:
    async with connected([EXAMPLES["drop"], EXAMPLES["duplicate"]]) as harness:
        with pytest.raises(MCPError):
            await harness.call("detect")
    assert [(f.kind, f.applied) for f in harness.recorded] == [("drop", True), ("duplicate", False)]


async def test_a_server_without_truth_is_faulted_through_the_current_call_and_an_explicit_convention() -> None:
    # Only testbed.transport.current_call is set (no CallSite): the tool comes from the request,
    # and there is no truth manifest, so a role cannot be resolved and 'from' must be given.
    faults = [
        {
            "kind": "flip_convention",
            "from": "xywh/pixel",
            "to": "xyxy/pixel",
            "target": target(path="detections[*].bbox"),
        },
        {"kind": "remove_field", "target": target(role="detections")},
    ]
    async with connected(faults) as harness:
        token = current_call.set(CallSite(run=0, node="node", item=0))
        try:
            with anyio.fail_after(BOUND_S):
                result = await harness.client.session.send_request(
                    types.CallToolRequest(params=types.CallToolRequestParams(name="detect", arguments={})),
                    types.CallToolResult,
                    request_read_timeout_seconds=READ_TIMEOUT_S,
                )
        finally:
            current_call.reset(token)
    assert result.structured_content is not None
    boxes = [d["bbox"] for d in result.structured_content["detections"]]
    np.testing.assert_allclose(boxes, [[x, y, x + w, y + h] for x, y, w, h in BOXES])
    flip, remove = harness.recorded
    assert flip.applied
    assert flip.expected == ("coords.mismatch",)
    assert not remove.applied
    assert "without a truth manifest" in remove.detail


async def test_faults_apply_only_inside_a_call_site_of_their_server() -> None:
    async with connected([EXAMPLES["timeout"]]) as harness:
        other = CallSite(run=0, node="n", item=0, server="other", tool="detect")
        with call_site(other), anyio.fail_after(BOUND_S):
            result = await harness.client.session.send_request(
                types.CallToolRequest(params=types.CallToolRequestParams(name="detect", arguments={})),
                types.CallToolResult,
                request_read_timeout_seconds=READ_TIMEOUT_S,
            )
    assert not result.is_error
    assert harness.recorded == []


# --- process faults -------------------------------------------------------------------------------


async def test_kill_awaits_the_kill_callback_and_closes_the_transport() -> None:
    killed: list[int] = []

    async def kill() -> None:
        await anyio.lowlevel.checkpoint()
        killed.append(len(killed))

    async with connected([EXAMPLES["kill"]], kill=kill) as harness:
        with pytest.raises(MCPError) as caught:
            await harness.call("detect")
        with pytest.raises(MCPError) as later:
            await harness.call("segment")
    assert killed == [0]
    assert caught.value.code == types.CONNECTION_CLOSED
    assert later.value.code == types.CONNECTION_CLOSED
    assert_recorded(harness, "kill")


async def test_restart_awaits_the_restart_callback_before_the_call_reaches_the_server() -> None:
    calls_seen_at_restart: list[list[str]] = []
    connections: list[Harness] = []

    async def restart() -> None:
        await anyio.lowlevel.checkpoint()
        calls_seen_at_restart.append(list(connections[0].fixture.calls))

    async with connected([EXAMPLES["restart"]], restart=restart) as harness:
        connections.append(harness)
        result = await harness.call("detect")
    assert calls_seen_at_restart == [[]]
    assert result.structured_content is not None
    assert_recorded(harness, "restart")
