"""Prefect tasks and flows that cost nothing until Prefect is used.

Importing Prefect takes about 2 s, and Prefect tracks every task run through its API: without
a configured server, a task call would start a temporary one (seconds on a busy machine). A
one-off local run (``prefect_env.run_flow`` without a server: the flow's function called
directly) should pay neither. So this module's ``task`` and ``flow`` do not import Prefect:
they wrap the function and make the Prefect task or flow on first use.

- A task called outside a flow run (Prefect not imported, or no run active) is a plain call;
  inside a flow run it is the Prefect task (retries, states); ``.submit``, ``.map`` and every
  other attribute are the Prefect task's.
- A flow called is a Prefect flow run; ``.fn`` is its plain function, and every other
  attribute (``.with_options``, ``.serve``, ...) is the Prefect flow's.

Results are never cached by Prefect (``NO_CACHE``): a task's inputs are whole frames and
audio, costly to hash and store, and the stages keep their own checkpoints.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any


class _Lazy:
    """A function and the Prefect object made from it on first use."""

    def __init__(self, fn: Callable[..., Any], make: str, options: dict[str, Any]) -> None:
        self.fn = fn
        self._make = make
        self._options = options
        functools.update_wrapper(self, fn)

    @functools.cached_property
    def prefect(self) -> Any:
        """The Prefect task or flow (``prefect.task``/``prefect.flow`` with the options)."""
        import prefect
        from prefect.cache_policies import NO_CACHE

        options = {"cache_policy": NO_CACHE} if self._make == "task" else {}
        return getattr(prefect, self._make)(**options, **self._options)(self.fn)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # private, or probed by copy and pickle: not Prefect's
            raise AttributeError(name)
        return getattr(self.prefect, name)


class LazyTask(_Lazy):
    """A Prefect task that is a plain call when no flow run is active."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not _in_flow_run():
            return self.fn(*args, **kwargs)
        return self.prefect(*args, **kwargs)


class LazyFlow(_Lazy):
    """A Prefect flow, made when it is first run or asked for (``.fn`` runs without it)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.prefect(*args, **kwargs)


def _in_flow_run() -> bool:
    """Whether a Prefect flow run is active (never, while Prefect has not been imported)."""
    if "prefect" not in sys.modules:
        return False
    from prefect.context import FlowRunContext

    return FlowRunContext.get() is not None


def task(**options: Any) -> Callable[[Callable[..., Any]], LazyTask]:
    """``prefect.task(cache_policy=NO_CACHE, **options)``, made on first use."""
    return lambda fn: LazyTask(fn, "task", options)


def flow(**options: Any) -> Callable[[Callable[..., Any]], LazyFlow]:
    """``prefect.flow(**options)``, made on first use."""
    return lambda fn: LazyFlow(fn, "flow", options)
