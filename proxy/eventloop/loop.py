"""The loop itself: readiness events from ``selectors``, a timer heap, and callbacks to run soon.

Theory of operation
-------------------
One thread runs ``EventLoop.run`` until ``stop``.  Each turn of the loop does three
things, in this order::

    1. wait in selector.select(timeout)       timeout = until the earliest timer is due
    2. for every ready socket: obj.handle_events(mask)    (READ and/or WRITE)
    3. run the timers that are due, then the callbacks queued with call_soon

**Readiness, not completion.**  ``select`` (epoll on Linux) says a socket *can* be read
or written without blocking; the callback then does one non-blocking call and returns.
Nothing here ever waits, except step 1, which waits for everything at once.

**The timer heap.**  Every timeout (a handshake, a head, an idle keep-alive, a backend
that does not answer) is an entry ``(deadline, sequence, callback)`` in one binary heap
(``heapq``): the earliest deadline is always ``heap[0]``, so step 1 knows how long it may
sleep, and adding a timer costs O(log n) whatever the number of connections.  A
cancelled timer is not searched for and removed (that would be O(n)); it is only
marked, and thrown away when it reaches the top (*lazy deletion*).  The sequence
number breaks ties between equal deadlines, so callbacks are never compared.  A
cancelled timer lets go of its callback, and when the heap has doubled the cancelled
entries are dropped in one pass (``_compact``, as asyncio's loop does).

**Garbage.**  CPython frees an object when its last reference goes, unless the object
is in a reference cycle: then only the cycle collector finds it, and its full pass walks
every object the process holds while nothing else runs.  An event loop is made of
cycles (a session holds its stream and its clock, and they hold the session's methods
to call back), so whatever closes a connection also breaks them: ``Stream.close`` drops
its callbacks, ``Clock.stop`` its owner's methods, the sessions their exchange.  Before
that, every closed connection waited for a full pass; under a new connection per
request one came every second or two, walked some 150,000 objects and stopped the loop
for 100 ms or more, which was the event loop's p99 (measured with ``gc.callbacks``;
``tests/integration/test_eventloop_garbage.py`` keeps it from coming back).

**call_soon** queues work for step 3 of this turn: a write is coalesced with the other
writes made while handling the same events (one TLS record, one system call), and a
read that may find bytes TLS already decrypted runs even though no event will say so.

**call_soon_threadsafe** is the only way in from another thread (the ``shutdown`` that a
test or a signal handler calls): it queues the callback under a lock and writes one
byte to a socket pair the selector watches, which wakes step 1.
"""

from __future__ import annotations

import heapq
import itertools
import selectors
import socket
import threading
import time
from collections import deque
from typing import Callable

READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
MAX_WAIT = 1.0  # seconds: the loop wakes at least this often even with no timer due
COMPACT_MIN = 1024  # timer heap entries below which cancelled ones are left to expire


class Timer:
    """One entry of the timer heap; ``cancel`` marks it (lazy deletion).

    A cancelled entry stays in the heap until its deadline comes round, so ``cancel``
    also lets go of the callback: otherwise every finished handshake would keep its
    connection (socket, TLS object, buffers) alive until its 10-second timeout was due,
    through the closure in the heap."""

    __slots__ = ("deadline", "callback", "cancelled")

    def __init__(self, deadline: float, callback: Callable[[], None]) -> None:
        self.deadline = deadline
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        self.callback = _cancelled


def _cancelled() -> None:
    pass


def _no_deadline() -> None:
    return None


def _no_expiry(now: float) -> None:
    pass


class Clock:
    """All the timeouts of one connection, as one timer in the heap, re-armed lazily.

    A connection is always waiting for something with a limit (the next request, the
    rest of a head, the backend's answer, the client taking bytes), and the limit moves
    on every byte ("60 s *between two reads*").  Pushing a new timer on every read would
    fill the heap with dead entries, so instead the owner gives ``due()``: the deadline
    of whatever it waits for *now*, computed from its state and its last-activity
    times.  The one timer sits at most ``TICK`` seconds ahead; when it fires, the clock
    asks ``due()`` again: still in the future (bytes came meanwhile) means re-arm, past
    means ``expire(now)``.  Activity costs nothing; only a deadline that moves *earlier*
    than the armed timer (``check``) pushes a new entry.
    """

    TICK = 1.0  # seconds: how far ahead the armed timer may sit

    __slots__ = ("loop", "due", "expire", "timer", "at")

    def __init__(self, loop: "EventLoop", due: Callable[[], float | None], expire: Callable[[float], None]) -> None:
        self.loop = loop
        self.due = due
        self.expire = expire
        self.timer: Timer | None = None
        self.at = float("inf")

    def check(self, when: float | None = None) -> None:
        """After a change of state: make sure the timer fires no later than ``due()``.

        ``when`` is a deadline the caller already knows changed (one exchange's ``due()``):
        the connection's others did not move, so asking ``due()`` for all of them again is
        not needed (an HTTP/2 connection has one exchange per stream)."""
        if when is None:
            when = self.due()
        if when is not None and when < self.at:
            self._arm(when)

    def _arm(self, when: float) -> None:
        when = min(when, time.monotonic() + self.TICK)
        timer = self.loop.call_at(when, lambda: self._fire(timer))
        self.timer, self.at = timer, when

    def _fire(self, timer: Timer) -> None:
        if timer is not self.timer:
            return  # superseded by an earlier one
        self.timer, self.at = None, float("inf")
        when = self.due()
        if when is None:
            return
        now = time.monotonic()
        if when > now:
            self._arm(when)
        else:
            self.expire(now)

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer, self.at = None, float("-inf")  # -inf: check() never arms again
        # The owner holds this clock and the clock holds the owner's methods: a cycle, which
        # only the garbage collector could free.  Let go, so the closed connection is freed
        # at once (see the module docstring, "Garbage").
        self.due, self.expire = _no_deadline, _no_expiry


class EventLoop:
    """A selector, a timer heap and a queue of callbacks (see the module docstring)."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()  # epoll on Linux
        self.timers: list[tuple[float, int, Timer]] = []
        self._compact_at = COMPACT_MIN  # heap size at which the cancelled entries are dropped
        self.sequence = itertools.count()
        self.ready: deque[Callable[[], None]] = deque()
        self.running = False
        self.thread: threading.Thread | None = None
        self._foreign: deque[Callable[[], None]] = deque()  # from other threads
        self._foreign_lock = threading.Lock()
        self._waker_r, self._waker_w = socket.socketpair()
        self._waker_r.setblocking(False)
        self._waker_w.setblocking(False)
        self.selector.register(self._waker_r, READ, self)

    # ------------------------------------------------------------------ registration
    def watch(self, sock: socket.socket, mask: int, obj) -> None:
        """Call ``obj.handle_events(mask)`` when ``sock`` is ready for ``mask`` (0: stop watching)."""
        key = self.selector.get_map().get(sock.fileno()) if sock.fileno() >= 0 else None
        if key is None:
            if mask:
                self.selector.register(sock, mask, obj)
        elif mask:
            if key.events != mask:
                self.selector.modify(sock, mask, obj)
        else:
            self.selector.unregister(sock)

    def forget(self, sock: socket.socket) -> None:
        """Stop watching ``sock`` (before it is closed: a closed descriptor cannot be unregistered)."""
        fd, watched = sock.fileno(), self.selector.get_map()  # (None once the selector is closed)
        if fd < 0 or watched is None or fd not in watched:
            # Not watched (a handshake that ended between two events): asking the selector
            # anyway would build a KeyError whose message is the socket's repr, two system
            # calls (its addresses) on every new connection.
            return
        self.selector.unregister(fd)

    # ------------------------------------------------------------------ time
    def call_at(self, deadline: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(deadline, callback)
        heapq.heappush(self.timers, (deadline, next(self.sequence), timer))
        if len(self.timers) > self._compact_at:
            self._compact()
        return timer

    def _compact(self) -> None:
        """Drop the cancelled entries when they may be most of the heap (as asyncio does).

        Lazy deletion leaves a cancelled timer in the heap until its deadline: with a
        10-second handshake timeout and a thousand new connections a second, that is ten
        thousand dead entries.  Rebuilding costs one pass; doing it only when the heap has
        doubled since the last one keeps that to O(1) per timer, on average."""
        self.timers[:] = [entry for entry in self.timers if not entry[2].cancelled]  # in place: run() holds it
        heapq.heapify(self.timers)
        self._compact_at = max(COMPACT_MIN, 2 * len(self.timers))

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return self.call_at(time.monotonic() + delay, callback)

    def call_soon(self, callback: Callable[[], None]) -> None:
        self.ready.append(callback)

    def call_soon_threadsafe(self, callback: Callable[[], None]) -> None:
        with self._foreign_lock:
            self._foreign.append(callback)
        try:
            self._waker_w.send(b"\0")
        except (BlockingIOError, OSError):  # the pair is full (already woken) or closed
            pass

    def handle_events(self, mask: int) -> None:
        """The waker: drain its bytes; the queued callbacks run in step 3."""
        try:
            while self._waker_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass
        with self._foreign_lock:
            self.ready.extend(self._foreign)
            self._foreign.clear()

    # ------------------------------------------------------------------ running
    def run(self) -> None:
        """Turn the loop until ``stop``; errors in callbacks are printed, never fatal."""
        self.running = True
        select, timers, ready = self.selector.select, self.timers, self.ready
        while self.running:
            if ready:
                timeout = 0.0
            elif timers:
                timeout = min(max(0.0, timers[0][0] - time.monotonic()), MAX_WAIT)
            else:
                timeout = MAX_WAIT
            for key, mask in select(timeout):
                self._guarded(key.data.handle_events, mask)
            now = time.monotonic()
            while timers and timers[0][0] <= now:
                timer = heapq.heappop(timers)[2]
                if not timer.cancelled:
                    self._guarded(timer.callback)
            # Only what is queued now: a callback that queues another runs next turn,
            # after the selector has been asked again (no starving the sockets).
            for _ in range(len(ready)):
                self._guarded(ready.popleft())
        self.selector.close()
        self._waker_r.close()
        self._waker_w.close()

    @staticmethod
    def _guarded(callback, *args) -> None:
        try:
            callback(*args)
        except Exception as error:  # a bug in one connection must not stop every other one
            import sys
            import traceback

            print(f"tlsproxy: internal error in the event loop: {error!r}", file=sys.stderr)
            traceback.print_exc()

    def stop(self) -> None:
        """End ``run`` after the current turn (call from the loop thread, or via call_soon_threadsafe)."""
        self.running = False

    def start_thread(self, name: str = "eventloop") -> threading.Thread:
        self.thread = threading.Thread(target=self.run, name=name, daemon=True)
        self.thread.start()
        return self.thread
