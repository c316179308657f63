"""Kill a command at a chosen moment of its life, for crash tests.

Moments, by kill number: the first lands within start-up (imports, connections, before the
group join), the second while the command joins its group (after it printed that it began),
later ones after the test's own sign of progress; each after a seeded random pause, so a
schedule is the same on every run of the same seed.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from refluent.embedded.commands import RefluentCommand


def kill_at_moment(cmd: RefluentCommand, rnd: random.Random, kill: int, *, began: str,
                   progressed: Callable[[], bool], timeout_s: float = 60.0) -> None:
    """Wait for the moment of ``cmd``'s life the ``kill``-th kill (0-based) lands in, then
    SIGKILL it.

    Args:
        cmd: A started command.
        rnd: The schedule's random numbers.
        kill: Which kill this is (0: start-up, 1: group join, later: mid-work).
        began: What the command prints once it has started its work (the group join follows).
        progressed: True once the command did more work since it started (later kills).
        timeout_s: Longest wait for ``began`` or ``progressed``.

    Raises:
        CommandError: the command exited by itself while waited for.
    """
    deadline = time.monotonic() + timeout_s
    if kill == 0:
        time.sleep(rnd.uniform(0.3, 1.5))  # start-up: imports, connections, no group
    elif kill == 1:
        while began not in cmd.life_output() and time.monotonic() < deadline:
            cmd.check_alive()
            time.sleep(0.05)
        time.sleep(rnd.uniform(0.0, 1.0))  # joining the group
    else:
        while not progressed() and time.monotonic() < deadline:
            cmd.check_alive()
            time.sleep(0.02)
        time.sleep(rnd.uniform(0.0, 0.3))
    cmd.kill9()


__all__ = ["kill_at_moment"]
