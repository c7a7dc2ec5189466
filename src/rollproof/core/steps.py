"""The named steps of a rehearsal, and the hook that kills the process at one of them.

Kill tests need to stop rollproof at a known point, not at a random time: with
`ROLLPROOF_TEST_KILL_AT=<step>` in its environment the process sends itself SIGKILL when it
reaches that step (as a crash, the OOM killer or a pulled plug would stop it: no cleanup runs).
The tests then check that the source is byte-identical, that nothing validates as complete,
that the next run to the same output works, and that `rollproof gc` removes what was left.
Without the variable `reached` does nothing.
"""

from __future__ import annotations

import functools
import os
import signal
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any, TypeVar

KILL_AT_ENV = "ROLLPROOF_TEST_KILL_AT"


class Step(StrEnum):
    WORKSPACE_MADE = "workspace-made"
    SNAPSHOT_COPIED = "snapshot-copied"
    SNAPSHOT_FINGERPRINTED = "snapshot-fingerprinted"
    CLONE_MADE = "clone-made"
    APPLY_IN_TRANSACTION = "apply-in-transaction"
    SCRIPT_RUN = "script-run"
    CLONE_FINGERPRINTED = "clone-fingerprinted"
    CLONE_RESTORED = "clone-restored"
    PACKET_STAGED = "packet-staged"


def reached(step: Step) -> None:
    """Kill this process now if the kill-test hook names `step`."""
    if os.environ.get(KILL_AT_ENV) == step.value:
        os.kill(os.getpid(), signal.SIGKILL)


_C = TypeVar("_C", bound=type)


def marks_steps(after: Mapping[str, Step]) -> Callable[[_C], _C]:
    """A class decorator: when the method named in `after` returns, its step is reached."""

    def wrap(method: Callable[..., Any], step: Step) -> Callable[..., Any]:
        @functools.wraps(method)
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            result = method(self, *args, **kwargs)
            reached(step)
            return result

        return call

    def decorate(cls: _C) -> _C:
        for name, step in after.items():
            setattr(cls, name, wrap(getattr(cls, name), step))
        return cls

    return decorate


ENGINE_STEPS: Mapping[str, Step] = {
    "__init__": Step.SNAPSHOT_COPIED,
    "snapshot_fingerprint": Step.SNAPSHOT_FINGERPRINTED,
    "fresh_clone": Step.CLONE_MADE,
    "run_in_transaction": Step.APPLY_IN_TRANSACTION,
    "run_script": Step.SCRIPT_RUN,
    "fingerprint_clone": Step.CLONE_FINGERPRINTED,
    "restore_clone": Step.CLONE_RESTORED,
}
"""The engine session methods after which each step is reached (both engines)."""
