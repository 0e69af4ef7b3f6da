"""Exercise 4, reference solution: write a balancer strategy that the proxy loads.

The student's file is ``lab/ex4_balancer_strategy/student.py``; this is the same file
with every TODO done.  Check it with ``python -m lab.check 4 --solution``.
"""

from __future__ import annotations

import random

from proxy.balancer import Backend, Strategy


# Steps 1 and 2 -----------------------------------------------------------------------
class LeastRecentlyUsed(Strategy):
    """The candidate picked longest ago; one never picked comes first (in list order)."""

    def __init__(self) -> None:
        self.clock = 0  # counts picks
        self.last_picked: dict[str, int] = {}  # backend name -> the clock at its last pick

    def choose(self, candidates: list[Backend]) -> Backend:
        # min() keeps the first of equals, so never-picked backends (-1) go in list order.
        backend = min(candidates, key=lambda b: self.last_picked.get(b.name, -1))
        self.clock += 1
        self.last_picked[backend.name] = self.clock
        return backend


# Step 3 ------------------------------------------------------------------------------
class RandomTwoChoices(Strategy):
    """"The power of two random choices": sample two different candidates at random,
    take the one with fewer requests in flight (Mitzenmacher 2001; nginx's
    ``random two least_conn``)."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.random = rng or random.Random()

    def choose(self, candidates: list[Backend]) -> Backend:
        if len(candidates) == 1:
            return candidates[0]
        first, second = self.random.sample(candidates, 2)
        return second if second.in_flight < first.in_flight else first


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
    demo()
