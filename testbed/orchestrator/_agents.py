"""The scenario's agent, built through the registry with the model clients it needs (live or replayed)."""

from __future__ import annotations

from collections.abc import Sequence

from testbed.agent import Agent, ModelEvents, NoModels
from testbed.contracts import with_contracts
from testbed.events import Event
from testbed.registry import registry
from testbed.scenario import Scenario


def build_agent(scenario: Scenario, models: ModelEvents) -> Agent:
    """Make the agent the scenario asks for, holding ``models``.

    Raises:
        TestbedError: the kind is not registered, or a model the agent needs is missing from ``models``.
    """
    plugin = registry().agent(scenario.agent.kind)
    return with_contracts(plugin.build(scenario.agent, models, seed=scenario.seed), scenario.contracts)


def live_models(scenario: Scenario) -> ModelEvents:
    """Recording clients around the models the scenario's agent needs (loaded on first use)."""
    plugin = registry().agent(scenario.agent.kind)
    return plugin.live_models(scenario.agent) if plugin.live_models is not None else NoModels()


def replay_models(scenario: Scenario, recorded: Sequence[Event]) -> ModelEvents:
    """Clients that answer the scenario's agent from a recording: no model is loaded."""
    plugin = registry().agent(scenario.agent.kind)
    return plugin.replay_models(scenario.agent, recorded) if plugin.replay_models is not None else NoModels()
