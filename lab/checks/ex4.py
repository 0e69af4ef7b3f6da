"""Checks for exercise 4 (write a balancer strategy that the proxy loads).

The strategies are tried three ways: directly (``choose`` on real
``proxy.balancer.Backend`` objects), inside a real ``proxy.balancer.Balancer`` (which
filters out the backends that are down before the strategy sees them), and inside a
real ``proxy.server.ProxyServer`` terminating TLS in front of two ``Origin`` servers,
with each class registered in ``proxy.balancer.STRATEGIES`` under a lab name (and
removed again afterwards).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections import Counter
from collections.abc import Iterator

from lab.checks import Checklist, Fail, Reference, need, show
from lab.harness import https_get
from proxy import balancer
from proxy import config as cfg
from course.origin import Origin
from proxy.server import ProxyServer

CHECKLIST = Checklist("Write a balancer strategy the proxy loads", Reference(
    forbid=("proxy.balancer.RoundRobin", "proxy.balancer.LeastConnections", "proxy.balancer.SmoothWeighted"),
    why="one of the proxy's built-in strategies, where the exercise asks for a new one"))
check = CHECKLIST.check

WWW = "www.example.test"


def backends(count: int, loads: list[int] | None = None) -> list[balancer.Backend]:
    made = [balancer.Backend(cfg.parse_backend(f"http://127.0.0.1:{9001 + i}", where="lab check"))
            for i in range(count)]
    for backend, load in zip(made, loads or []):
        backend.in_flight = load
    return made


def label(backend: object) -> str:
    return f"backend {backend.port - 9000}" if isinstance(backend, balancer.Backend) else show(backend)


def new_strategy(student, name: str) -> balancer.Strategy:
    """Build the class the way Balancer does (``STRATEGIES[name]()``: no arguments)."""
    cls = need(student, name)
    if not (isinstance(cls, type) and issubclass(cls, balancer.Strategy)):
        raise Fail(f"{name} is {show(cls)}; expected a subclass of proxy.balancer.Strategy")
    return cls()


def working_class(student, name: str) -> type:
    """The class, after one ``choose`` outside the proxy: a TODO or a crash shows up here
    with its real cause, rather than as a closed connection from inside a proxy thread."""
    pick(new_strategy(student, name), backends(2))
    return need(student, name)


def pick(strategy: balancer.Strategy, candidates: list[balancer.Backend]) -> balancer.Backend:
    chosen = strategy.choose(list(candidates))
    if not any(chosen is c for c in candidates):
        raise Fail(f"choose() returned {label(chosen)}, which is not one of the candidates it was given")
    return chosen


@contextlib.contextmanager
def registered(name: str, cls: type) -> Iterator[None]:
    """``STRATEGIES[name] = cls`` for the duration, as a plug-in would register itself."""
    previous = balancer.STRATEGIES.get(name)
    balancer.STRATEGIES[name] = cls
    try:
        yield
    finally:
        if previous is None:
            del balancer.STRATEGIES[name]
        else:
            balancer.STRATEGIES[name] = previous


# --------------------------------------------------------------------------- steps 1, 2
@check(1, "LeastRecentlyUsed, built with no arguments, picks each backend in turn",
       hint="remember when each backend was last picked (by name); choose the oldest, never-picked first")
def _(student, lab):
    strategy = new_strategy(student, "LeastRecentlyUsed")
    pool = backends(3)
    got = [label(pick(strategy, pool)) for _ in range(7)]
    want = [label(pool[i % 3]) for i in range(7)]
    if got != want:
        raise Fail(f"picked {got}; expected {want}")


@check(2, "in a real Balancer, LeastRecentlyUsed skips a backend that is down, then picks it first",
       hint="the Balancer passes only available backends: never keep your own list or index into it")
def _(student, lab):
    cls = working_class(student, "LeastRecentlyUsed")
    with registered("lab_lru", cls):
        pool = balancer.Balancer("web", [b.config for b in backends(3)], "lab_lru")
        a, b, c = pool.backends

        def picks(count: int) -> list[str]:
            chosen = [pool.pick() for _ in range(count)]
            for backend in chosen:
                pool.release(backend)
            return [label(backend) for backend in chosen]

        first = picks(2)
        if first != [label(a), label(b)]:
            raise Fail(f"the first two picks were {first}; expected backends 1, 2")
        b.active_down = True  # as the active health checks would mark it
        while_down = picks(4)
        if while_down != [label(c), label(a), label(c), label(a)]:
            raise Fail(f"with backend 2 down the next picks were {while_down}; expected backends 3, 1, 3, 1 "
                       "(3 was never used, then 1 was used longest ago)")
        b.active_down = False
        back = picks(1)
        if back != [label(b)]:
            raise Fail(f"after backend 2 came back the next pick was {back}; it was used least "
                       "recently, so it should be backend 2")


# --------------------------------------------------------------------------- step 3
@check(3, "RandomTwoChoices never picks the busiest backend, and only picks among the candidates",
       hint="sample two candidates (random.sample), return the one with fewer in_flight")
def _(student, lab):
    strategy = new_strategy(student, "RandomTwoChoices")
    pool = backends(4, loads=[0, 1, 2, 3])
    counts = Counter(label(pick(strategy, pool)) for _ in range(300))
    if counts[label(pool[3])]:
        raise Fail(f"backend 4 (3 requests in flight, the most) was picked {counts[label(pool[3])]} times "
                   f"in 300: picks {dict(counts)}")
    if not all(counts[label(b)] for b in pool[:3]):
        raise Fail(f"picks {dict(counts)}: some backend was never picked")


@check(3, "RandomTwoChoices compares two *different* backends, and copes with one candidate",
       hint="sampling with replacement (random.choice twice) can compare a backend with itself")
def _(student, lab):
    strategy = new_strategy(student, "RandomTwoChoices")
    idle, busy = backends(2, loads=[0, 5])
    picks = Counter(label(pick(strategy, [idle, busy])) for _ in range(100))
    if picks[label(busy)]:
        raise Fail(f"of two backends with 0 and 5 requests in flight, the busy one was picked "
                   f"{picks[label(busy)]} times in 100")
    if pick(strategy, [busy]) is not busy:
        raise Fail("with one candidate, choose() must return it")


@check(3, "RandomTwoChoices is random: the idlest of four wins only when it is sampled (about half)",
       hint="always taking the least loaded is least_connections, which herds every new request "
            "onto one backend between load reports; two random choices do not")
def _(student, lab):
    strategy = new_strategy(student, "RandomTwoChoices")
    pool = backends(4, loads=[0, 1, 1, 1])
    wins = sum(pick(strategy, pool) is pool[0] for _ in range(400))
    if not 140 <= wins <= 260:  # P(sampled) = 1/2: 200 +- 6 standard deviations
        raise Fail(f"the idle backend was picked {wins} times in 400; expected about 200")


# --------------------------------------------------------------------------- step 4 (live)
@contextlib.contextmanager
def proxy_in_front_of(lab, strategy: str, origins: list[Origin]) -> Iterator[ProxyServer]:
    """A real ProxyServer terminating TLS for www.example.test, one pool using ``strategy``.

    The config is built without ``proxy.config.validate``: validate() only accepts the
    three built-in strategy names, and here the point is a strategy added at run time.
    """
    config = cfg.Config(
        listeners=(cfg.ListenerConfig(cfg.Address("127.0.0.1", 0), "terminate",
                                      (cfg.CertFiles(*lab.pki.files(WWW)),)),),
        pools=(cfg.PoolConfig("web", tuple(cfg.parse_backend(o.url, where="lab check") for o in origins),
                              strategy, cfg.HealthConfig(max_fails=1, fail_timeout=30.0)),),
        routes=(cfg.RouteConfig("web"),),
        access_log=None,
    )
    log = io.StringIO()  # internal errors (a strategy that raises inside the proxy) land here
    server = ProxyServer(config, log=log).bind().start()
    try:
        yield server
    except OSError as error:
        raise Fail(f"a request through the proxy failed ({error}); the proxy said: {log.getvalue()[-300:]!r}")
    finally:
        server.shutdown(grace=0.5)


def get_through(server: ProxyServer, lab) -> tuple[int, str | None]:
    reply = https_get(server.addresses[0][1], ca=lab.pki.ca, server_name=WWW)
    origin = json.loads(reply.body).get("origin") if reply.status == 200 else None
    return reply.status, origin


@check(4, "live: a ProxyServer whose pool uses LeastRecentlyUsed alternates between two origins",
       hint="README step 4: the proxy builds your class by name from proxy.balancer.STRATEGIES")
def _(student, lab):
    cls = working_class(student, "LeastRecentlyUsed")
    with registered("lab_lru", cls), Origin("one") as one, Origin("two") as two:
        with proxy_in_front_of(lab, "lab_lru", [one, two]) as server:
            answers = [get_through(server, lab) for _ in range(10)]
    if any(status != 200 for status, _ in answers):
        raise Fail(f"statuses {[s for s, _ in answers]}; expected ten 200s")
    spread = Counter(origin for _, origin in answers)
    if spread != Counter({"one": 5, "two": 5}):
        raise Fail(f"the origins answered {dict(spread)} of 10 requests; expected 5 each")


@check(4, "live: when an origin goes down, the proxy sends everything to the other one",
       hint="the Balancer ejects a backend after a failed connection (max_fails); your strategy only "
            "has to choose among the candidates it is given")
def _(student, lab):
    cls = working_class(student, "LeastRecentlyUsed")
    with registered("lab_lru", cls), Origin("one") as one, Origin("two") as two:
        with proxy_in_front_of(lab, "lab_lru", [one, two]) as server:
            get_through(server, lab)
            get_through(server, lab)
            two.stop()
            answers = [get_through(server, lab) for _ in range(6)]
            down = [b.name for b in server.balancers["web"].backends if not b.available()]
    failed = [status for status, _ in answers if status != 200]
    served = Counter(origin for status, origin in answers if status == 200)
    if len(failed) > 1 or set(served) != {"one"}:
        raise Fail(f"after origin 'two' stopped: statuses {[s for s, _ in answers]}, answered by "
                   f"{dict(served)}; expected at most one 502 (the request that found it down), "
                   "then only 'one'")
    if down != [cfg.parse_backend(two.url, where="lab check").name]:
        raise Fail(f"the balancer marks {down} as down; expected only origin 'two'")


@check(4, "live: a ProxyServer whose pool uses RandomTwoChoices uses both origins",
       hint="register the class under a name, name it in the pool's strategy (README step 4)")
def _(student, lab):
    cls = working_class(student, "RandomTwoChoices")
    with registered("lab_two_choices", cls), Origin("one") as one, Origin("two") as two:
        with proxy_in_front_of(lab, "lab_two_choices", [one, two]) as server:
            answers = [get_through(server, lab) for _ in range(20)]
    spread = Counter(origin for status, origin in answers if status == 200)
    if sum(spread.values()) != 20 or len(spread) != 2:
        raise Fail(f"20 requests: statuses {Counter(s for s, _ in answers)}, answered by {dict(spread)}; "
                   "expected twenty 200s from both origins")
