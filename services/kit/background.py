"""The one way an Atrium process runs a background thread of its own (outbox relay, payments kicker, job
tracking, catalog agent, revocations watcher and republisher).

A :class:`BackgroundThread` is a daemon thread started on demand (``start`` does nothing while it runs) and
stopped by setting ``halt`` (and ``wake``, for a loop waiting on it) then joining it for a bounded time.

Fork safety: gunicorn and Celery's prefork pool fork processes that have such threads. A forked child has
none of its parent's threads, and its locks may have been copied while held, so each object resets its
thread state in the child (``os.register_at_fork``), then its own (:meth:`BackgroundThread.after_fork`).
The child's thread starts on its first use, as in any new process.
"""

from __future__ import annotations

import os
import threading
import weakref


class BackgroundThread:
    """A daemon thread running :meth:`run` for this object, once per process. Subclasses write ``run`` as a
    loop that ends once ``halt`` is set and waits on ``wake`` (or ``halt``) between rounds."""

    def __init__(self, *, name: str) -> None:
        self.thread_name = name
        self._thread_state_reset()
        ref = weakref.ref(self)  # the fork hook must not keep short-lived objects (tests' agents) alive

        def _in_child() -> None:
            obj = ref()
            if obj is not None:
                obj._thread_state_reset()
                obj.after_fork()

        os.register_at_fork(after_in_child=_in_child)

    def _thread_state_reset(self) -> None:
        self._thread_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._thread_pid = os.getpid()
        self.halt = threading.Event()
        self.wake = threading.Event()

    def after_fork(self) -> None:
        """In a forked child, after the thread state was reset: drop what the parent's thread owned."""

    def run(self) -> None:
        """The thread's body; it should return soon after ``halt`` is set."""
        raise NotImplementedError

    def start(self) -> bool:
        """Start the thread unless it is running in this process; whether it was started."""
        if self.is_alive():  # the common case, on hot paths (every commit, every task event): no lock
            return False
        with self._thread_lock:
            if self.is_alive():
                return False
            self.halt.clear()
            self._thread_pid = os.getpid()
            self._thread = threading.Thread(target=self.run, name=self.thread_name, daemon=True)
            self._thread.start()
            return True

    def is_alive(self) -> bool:
        """Whether this process's thread is running."""
        thread = self._thread
        return thread is not None and self._thread_pid == os.getpid() and thread.is_alive()

    def in_thread(self) -> bool:
        """Whether the caller is this object's thread."""
        return self._thread is not None and threading.current_thread() is self._thread

    def stop(self, timeout: float = 5.0) -> bool:
        """Set ``halt`` and ``wake``, then wait up to ``timeout`` seconds for the thread to end; whether it has
        (a later ``start`` starts a new one)."""
        with self._thread_lock:
            thread = self._thread
            self.halt.set()
            self.wake.set()
        if thread is None or thread is threading.current_thread():
            return thread is None
        thread.join(timeout)
        if thread.is_alive():
            return False
        with self._thread_lock:
            if self._thread is thread:
                self._thread = None
        return True
