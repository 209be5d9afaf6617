"""The kit's background thread: started once, stopped with a bounded join, reset in a forked child."""

from __future__ import annotations

import json
import os
import threading

from services.kit.background import BackgroundThread


class Counter(BackgroundThread):
    def __init__(self) -> None:
        super().__init__(name="test-counter")
        self.after_fork()

    def after_fork(self) -> None:
        self.rounds = 0
        self.forked = os.getpid()

    def run(self) -> None:
        while not self.halt.is_set():
            if self.wake.wait(5):
                self.wake.clear()
                self.rounds += 1


def test_starts_once_and_stops_within_the_timeout():
    # given a started thread
    counter = Counter()
    assert counter.start() is True
    assert counter.is_alive()

    # when it is started again and woken
    assert counter.start() is False
    counter.wake.set()

    # then it is the same daemon thread, and stop ends it
    assert counter._thread is not None
    assert counter._thread.daemon
    assert counter._thread.name == "test-counter"
    assert counter.stop(timeout=2) is True
    assert not counter.is_alive()


def test_a_stopped_thread_starts_again():
    counter = Counter()
    counter.start()
    counter.stop(timeout=2)

    assert counter.start() is True
    assert counter.is_alive()
    assert not counter.halt.is_set()
    counter.stop(timeout=2)


def test_stop_reports_a_thread_that_does_not_end():
    # given a body that ignores halt for a while
    release = threading.Event()

    class Stubborn(BackgroundThread):
        def run(self) -> None:
            release.wait(5)

    stubborn = Stubborn(name="test-stubborn")
    stubborn.start()

    # then stop says it has not ended, until it has
    assert stubborn.stop(timeout=0.05) is False
    release.set()
    assert stubborn.stop(timeout=2) is True


def test_a_forked_child_has_no_thread_and_starts_its_own():
    # given a running thread in this process
    counter = Counter()
    counter.start()
    counter.rounds = 7
    parent_thread = counter._thread

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what it sees, then leave at once
        try:
            before = {"alive": counter.is_alive(), "thread": counter._thread is not None, "rounds": counter.rounds}
            started = counter.start()
            seen = {**before, "started": started, "alive_after": counter.is_alive(), "own": counter.forked}
            os.write(write, json.dumps(seen).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        seen = json.loads(pipe.read())
    os.waitpid(pid, 0)

    # then the child started from nothing (after_fork ran there), and the parent's thread runs on
    assert seen == {"alive": False, "thread": False, "rounds": 0, "started": True, "alive_after": True, "own": pid}
    assert parent_thread is not None
    assert parent_thread.is_alive()
    assert counter.stop(timeout=2) is True
