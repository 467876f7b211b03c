"""Running one invoke on its namespace: the one function the single process's handler and a
scale-out worker both call, so the deadline, the input's release and the count of the run are
the same wherever an invoke runs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from ..errors import Code, error
from ..runtime.metrics import Metrics
from ..runtime.namespace import Call, InputBytes, Namespace, Result, release
from ..runtime.scheduler import TaskTimeout


async def execute(name: str, namespace: Namespace[Any], task_id: str, appkey: str, params: Any,
                  input_bytes: Awaitable[InputBytes], timeout: float, metrics: Metrics) -> Result:
    """Get the input (decoded, downloaded or read from the queue) and run `params` on it in the
    namespace served as `name`, all within `timeout` seconds; the run counts in `metrics` once,
    where it ran (a front's stand-in reports a run a worker counted)."""
    try:
        async with asyncio.timeout(timeout):
            data = await input_bytes
            try:
                result = await namespace.run(Call(task_id, appkey, params, data))
            finally:
                release(data)
    except (TimeoutError, TaskTimeout) as exc:
        raise error(Code.TIMEOUT, f"no answer within {timeout:g} s") from exc
    metrics.record_run(name, result.report)
    return result
