"""Step names are one type (fulfilment/step_names.py): every table keyed by step covers each of them."""

from __future__ import annotations

from fulfilment.cli.dlq import Actor
from fulfilment.rabbitmq.queues import INTAKE_ACTOR, QUEUES, REFRESH_ACTOR, STEP_QUEUES
from fulfilment.state_machine import NEXT_STEP
from fulfilment.step_names import StepName
from fulfilment.steps.runner import STEPS


def test_every_step_has_a_function_a_queue_and_is_reached_from_some_state() -> None:
    assert set(STEPS) == set(StepName)
    assert set(STEP_QUEUES) == set(StepName)
    assert set(NEXT_STEP.values()) == set(StepName)
    assert set(STEP_QUEUES.values()) <= set(QUEUES)


def test_the_dead_letter_commands_know_every_actor() -> None:
    assert {str(actor) for actor in Actor} == {INTAKE_ACTOR, REFRESH_ACTOR, *StepName}
