"""Prefect tasks that run as plain calls outside a flow run.

Prefect tracks every task run through its API: without a configured server, a task call
would start a temporary one (seconds on a busy machine) for a one-off local run. Tasks made
with this module's ``task`` behave exactly like Prefect's inside a flow run (retries, states,
``.submit``, ``.fn``); called outside one, as when ``prefect_env.run_flow`` runs a flow's
function without Prefect, they simply call their function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import Task
from prefect.context import FlowRunContext


class LocalTask(Task):
    """A Prefect task that is a plain call when no flow run is active."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if FlowRunContext.get() is None:
            return self.fn(*args, **kwargs)
        return super().__call__(*args, **kwargs)


def task(**options: Any) -> Callable[[Callable[..., Any]], LocalTask]:
    """``prefect.task(**options)``, making a ``LocalTask``."""
    return lambda fn: LocalTask(fn=fn, **options)
