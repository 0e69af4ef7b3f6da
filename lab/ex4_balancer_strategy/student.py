"""Exercise 4: write a balancer strategy that the proxy loads.  This is your file.

Run it:             .venv/bin/python lab/ex4_balancer_strategy/student.py
Check your work:    .venv/bin/python -m lab.check 4        (or: make check LAB=4)

Read README.md in this folder first, and ``proxy/balancer.py``: your classes
subclass its ``Strategy`` and are handed its ``Backend`` objects.
"""

from __future__ import annotations

import random

from proxy.balancer import Backend, Strategy


# Steps 1 and 2 -----------------------------------------------------------------------
class LeastRecentlyUsed(Strategy):
    """The candidate picked longest ago; one never picked comes first (in list order)."""

    def __init__(self) -> None:
        # TODO step 1: whatever you need to remember between picks.
        pass

    def choose(self, candidates: list[Backend]) -> Backend:
        # TODO step 1: return one of `candidates` (never empty; the Balancer has already
        # left out the backends that are down).
        raise NotImplementedError("step 1: LeastRecentlyUsed.choose")


# Step 3 ------------------------------------------------------------------------------
class RandomTwoChoices(Strategy):
    """Sample two different candidates at random; take the one with fewer requests in
    flight (``backend.in_flight``)."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.random = rng or random.Random()

    def choose(self, candidates: list[Backend]) -> Backend:
        # TODO step 3
        raise NotImplementedError("step 3: RandomTwoChoices.choose")


def demo() -> None:
    """Step 4: register both strategies and let a real Balancer pick with them."""
    from proxy import balancer
    from proxy.config import parse_backend

    balancer.STRATEGIES["lab_lru"] = LeastRecentlyUsed
    balancer.STRATEGIES["lab_two_choices"] = RandomTwoChoices
    backends = [parse_backend(f"http://127.0.0.1:{9001 + i}", where="demo") for i in range(3)]
    for name in ("lab_lru", "lab_two_choices"):
        pool = balancer.Balancer("web", backends, strategy=name)
        pool.backends[1].active_down = True  # as if health checks had failed
        picks = [pool.pick() for _ in range(8)]  # no release(): in_flight keeps growing
        print(f"{name:16} picks ports {' '.join(str(b.port) for b in picks)}   (port 9002 is down)")


if __name__ == "__main__":
    try:
        demo()
    except NotImplementedError as todo:
        print(f"... not written yet: {todo}.  Then run: python -m lab.check 4")
