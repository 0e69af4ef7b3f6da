"""proxy.admission: the per-client-address connection limit, counted without sockets."""

from __future__ import annotations

import threading

from proxy.admission import ClientAddressLimit


def test_an_address_gets_its_limit_and_no_more_and_others_their_own():
    limit = ClientAddressLimit(2)
    assert [limit.admit("192.0.2.1") for _ in range(3)] == [True, True, False]
    assert limit.admit("192.0.2.2"), "another address has its own count"
    limit.release("192.0.2.1")
    assert limit.admit("192.0.2.1"), "a connection that ended gives its place back"
    assert limit.open == {"192.0.2.1": 2, "192.0.2.2": 1}


def test_a_refused_connection_is_not_counted_and_nothing_is_left_behind():
    limit = ClientAddressLimit(1)
    assert limit.admit("192.0.2.1") and not limit.admit("192.0.2.1")
    limit.release("192.0.2.1")  # the one admitted; the refused one was never counted
    assert limit.open == {}, "an address with no connection keeps no entry"


def test_zero_means_no_limit_and_no_counting():
    limit = ClientAddressLimit(0)
    assert all(limit.admit("192.0.2.1") for _ in range(10_000))
    limit.release("192.0.2.1")
    assert limit.open == {}


def test_threads_admitting_at_once_never_pass_the_limit():
    limit = ClientAddressLimit(50)
    admitted: list[bool] = []
    barrier = threading.Barrier(8)

    def connect() -> None:
        barrier.wait()
        for _ in range(100):
            admitted.append(limit.admit("192.0.2.1"))

    threads = [threading.Thread(target=connect) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert admitted.count(True) == 50 and limit.open["192.0.2.1"] == 50
