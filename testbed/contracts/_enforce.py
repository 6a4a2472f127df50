"""Runtime contracts around an agent: every call's edge values are checked before the orchestrator makes it.

:func:`with_contracts` wraps the scenario's agent. At each step the wrapped agent's calls are judged by
the registered rules (:mod:`._rules`); a breach is answered by the scenario's policy (:class:`ContractPolicy`),
and every finding with its decision becomes a :class:`~testbed.events.ContractEvent` in the run's agent
events. The decisions are pure functions of what the run's view holds (listed schemas, recorded results),
so a replay, session or direct, makes them again exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from testbed.agent import Agent, ContractNotice, PlannedCall, Replanning, RunView, Step
from testbed.contracts._edges import Unreadable, call_edges
from testbed.contracts._fallback import resolve_fallback
from testbed.contracts._inserted import describe_inserted
from testbed.contracts._rules import ContractRule, Finding, registered_rules
from testbed.contracts._spec import ContractPolicy, ContractsSpec
from testbed.conventions import ImageSize
from testbed.events import ContractEvent
from testbed.workflow import Adapter, AdapterError, parse_payload_path, write_path

__all__ = ["CONTRACTS_AGENT", "MAX_REPLANS", "ContractedAgent", "with_contracts"]

CONTRACTS_AGENT = "contracts"
"""The ``agent`` of every contract event."""
MAX_REPLANS = 2
"""How often, per run, an agent may choose again before a refused node halts the run."""
_UNREADABLE_RULE = "edge"


def with_contracts(agent: Agent, spec: ContractsSpec | None) -> Agent:
    """``agent`` itself without contracts, else wrapped so that its calls are judged before they are made."""
    return agent if spec is None else ContractedAgent(agent, spec)


@dataclass(frozen=True)
class _Judged:
    """One call after judgement: the call to make (``None``: refused), the events, and whether the run halts."""

    call: PlannedCall | None
    events: list[ContractEvent] = field(default_factory=list)
    halt: str | None = None
    refused: str | None = None
    """Why the node is refused, for the agent to choose again."""


@dataclass(frozen=True)
class _Found:
    """A rule's finding on the edge from ``source`` into ``argument``."""

    source: str
    argument: str
    finding: Finding


@dataclass
class _Verdict:
    findings: list[_Found]
    """Every finding of every rule on every edge into the call."""

    @property
    def breaches(self) -> list[_Found]:
        return [found for found in self.findings if not found.finding.unevaluable]

    @property
    def unevaluable(self) -> list[_Found]:
        return [found for found in self.findings if found.finding.unevaluable]


class ContractedAgent:
    """An agent whose every call crosses the scenario's runtime contracts first."""

    def __init__(self, agent: Agent, spec: ContractsSpec) -> None:
        self.inner = agent
        self.kind = agent.kind
        self.spec = spec
        self.rules: tuple[ContractRule, ...] = registered_rules(spec.rules)
        self._seq = 0
        self._replans = 0

    def start(self, view: RunView) -> None:
        self._seq = 0
        self._replans = 0
        self.inner.start(view)

    async def step(self, view: RunView) -> Step:
        step = await self.inner.step(view)
        kept: list[Step] = []
        while True:
            judged, halt, refused = self._judge_step(step, view)
            if halt is not None:
                return Step(error=f"contract halt: {halt}")
            kept.append(judged)
            if not refused:
                return _merged(kept)
            self._replans += 1
            assert isinstance(self.inner, Replanning)
            for notice in refused:
                view.skipped[notice.node] = notice.reason
            step = _merged([await self.inner.replan(view, notice) for notice in refused])
            if step.error is not None:
                return _merged([*kept, step])

    def _judge_step(self, step: Step, view: RunView) -> tuple[Step, str | None, list[ContractNotice]]:
        """The step with its calls judged: the calls to make, why the run halts, and the nodes refused."""
        if step.error is not None or not step.calls:
            return step, None, []
        calls: list[PlannedCall] = []
        refused: list[ContractNotice] = []
        refused_nodes: dict[str, str] = {}
        for node, node_calls in _by_node(step.calls):
            judged = [self._judge(call, view) for call in node_calls]
            for outcome in judged:
                view.agent_events.extend(outcome.events)
            halt = next((outcome.halt for outcome in judged if outcome.halt is not None), None)
            if halt is not None:
                return step, halt, []
            reason = next((outcome.refused for outcome in judged if outcome.refused is not None), None)
            if reason is not None:
                first = node_calls[0]
                refused.append(ContractNotice(node=node, call=f"{first.server}.{first.tool}", reason=reason))
                refused_nodes[node] = reason
                continue
            calls.extend(outcome.call for outcome in judged if outcome.call is not None)
        skipped = (*step.skipped, *((node, f"refused by contract: {why}") for node, why in refused_nodes.items()))
        judged_step = Step(calls=tuple(calls), skipped=skipped, empty=step.empty)
        return judged_step, None, refused

    def _judge(self, call: PlannedCall, view: RunView) -> _Judged:
        verdict = self._verdict(call, view, {})
        if not verdict.breaches:
            return _Judged(call, self._events(call, view, verdict.unevaluable, "pass"))
        policy = self.spec.policy
        if policy is ContractPolicy.CONVERT:
            return self._convert(call, view, verdict)
        if policy is ContractPolicy.FALLBACK:
            return self._fall_back(call, view, verdict)
        if policy is ContractPolicy.REPLAN and self._may_replan():
            events = self._events(call, view, verdict.unevaluable, "pass")
            events += self._events(call, view, verdict.breaches, "replan")
            return _Judged(None, events, refused=_reason(verdict.breaches))
        return self._halt(call, view, verdict)

    def _may_replan(self) -> bool:
        return isinstance(self.inner, Replanning) and self._replans < MAX_REPLANS

    def _halt(self, call: PlannedCall, view: RunView, verdict: _Verdict, why: str = "") -> _Judged:
        events = self._events(call, view, verdict.unevaluable, "pass")
        events += self._events(call, view, verdict.breaches, "halt")
        return _Judged(None, events, halt=_reason(verdict.breaches) + why)

    def _convert(self, call: PlannedCall, view: RunView, verdict: _Verdict) -> _Judged:
        """Insert, per argument, the adapter the declarations give; re-judge the converted call."""
        remedies: dict[str, Adapter] = {}
        for found in verdict.breaches:
            if found.finding.remedy is not None:
                remedies.setdefault(found.argument, found.finding.remedy)
        if not remedies:
            return self._halt(call, view, verdict, "; no declaration says how to convert it")
        size = ImageSize(width=view.scene.width, height=view.scene.height)
        arguments = call.arguments
        sources = {edge.argument: edge.source for edge in call_edges(call, view) if not isinstance(edge, Unreadable)}
        try:
            for argument, adapter in remedies.items():
                value = adapter.apply(sources[argument], image_size=size)
                arguments = write_path(arguments, parse_payload_path(argument), value)
        except (AdapterError, KeyError, ValueError) as error:
            return self._halt(call, view, verdict, f"; converting failed: {error}")
        adapters = {_top(argument): adapter for argument, adapter in remedies.items()}
        described = tuple(describe_inserted(name, adapter) for name, adapter in adapters.items())
        converted = replace(call, arguments=arguments, adapters=(*call.adapters, *described))
        after = self._verdict(converted, view, adapters)
        if after.breaches:
            return self._halt(call, view, after, "; still after converting")

        def inserted(found: _Found) -> str:
            return str(remedies.get(found.argument))

        events = [
            *self._events(call, view, verdict.breaches, "convert", remedy=inserted),
            *self._events(call, view, after.unevaluable, "pass"),
        ]
        return _Judged(converted, events)

    def _fall_back(self, call: PlannedCall, view: RunView, verdict: _Verdict) -> _Judged:
        """Send the call to the consumer's declared fallback tool, if the values meet its contract."""
        target = resolve_fallback(call.server, call.tool, view.catalog)
        if target is None:
            return self._halt(call, view, verdict, f"; {call.server}.{call.tool} declares no usable fallback")
        server, tool = target
        moved = replace(call, server=server, tool=tool)
        after = self._verdict(moved, view, {})
        if after.breaches:
            return self._halt(moved, view, after, f" (fallback {server}.{tool})")
        events = [
            *self._events(call, view, verdict.breaches, "fallback", remedy=lambda _: f"{server}.{tool}"),
            *self._events(moved, view, after.unevaluable, "pass"),
        ]
        return _Judged(moved, events)

    def _verdict(self, call: PlannedCall, view: RunView, adapters: dict[str, Adapter]) -> _Verdict:
        findings: list[_Found] = []
        for edge in call_edges(call, view, adapters):
            if isinstance(edge, Unreadable):
                unreadable = Finding(_UNREADABLE_RULE, edge.detail, unevaluable=True)
                findings.append(_Found(edge.source, edge.argument, unreadable))
                continue
            source = f"{edge.source_node}.{edge.source_path}"
            for rule in self.rules:
                if rule.applies(edge):
                    found = rule.check(edge)
                    if found is not None:
                        findings.append(_Found(source, edge.argument, found))
        return _Verdict(findings)

    def _events(
        self,
        call: PlannedCall,
        view: RunView,
        findings: Sequence[_Found],
        decision: str,
        *,
        remedy: Callable[[_Found], str] | None = None,
    ) -> list[ContractEvent]:
        events = []
        for located in findings:
            found = located.finding
            events.append(
                ContractEvent(
                    time=time.time(),
                    run=view.run,
                    agent=CONTRACTS_AGENT,
                    seq=self._seq,
                    node=call.node,
                    item=call.item,
                    server=call.server,
                    tool=call.tool,
                    argument=located.argument,
                    source=located.source,
                    rule=found.rule,
                    finding="unevaluable" if found.unevaluable else "breach",
                    detail=found.detail,
                    decision=decision,  # type: ignore[arg-type]
                    remedy=remedy(located) if remedy is not None else None,
                )
            )
            self._seq += 1
        return events


def _top(argument: str) -> str:
    """The top-level argument of an argument path (``options`` of ``options.boxes[0]``): adapters key on it."""
    return argument.split(".", 1)[0].split("[", 1)[0]


def _reason(breaches: Sequence[_Found]) -> str:
    return "; ".join(f"{found.finding.rule}: {found.finding.detail}" for found in breaches)


def _by_node(calls: Sequence[PlannedCall]) -> list[tuple[str, list[PlannedCall]]]:
    grouped: dict[str, list[PlannedCall]] = {}
    for call in calls:
        grouped.setdefault(call.node, []).append(call)
    return list(grouped.items())


def _merged(steps: Sequence[Step]) -> Step:
    """One step doing what ``steps`` do (the first error, if any, ends the run)."""
    return Step(
        calls=tuple(call for step in steps for call in step.calls),
        skipped=tuple(pair for step in steps for pair in step.skipped),
        empty=tuple(node for step in steps for node in step.empty),
        error=next((step.error for step in steps if step.error is not None), None),
    )
