"""Request lanes: which requests run, in which order, and which are refused at once.

A request's work is several stages (inflate, parse JSON, build tensors, run the model, write JSON),
run as jobs on threads: one job for all of them without batching (a `Ticket.stage` each), or a
job before and one after the batch with it. On one FIFO pool the jobs of all requests
interleave: every request waits for everyone's, so under load they all finish together, late,
and past their deadline every one of them fails while the server stays busy (throughput falls
to zero).

So requests are sorted by body size into lanes (small, regular, large), each with its own threads,
so that large bodies never take the threads of small requests. Within a lane a job is run in the
order its request was admitted (a heap keyed by admission number): the first request admitted
runs all its stages before a later one starts, so requests finish in order, one by one.

Model runs: TensorFlow runs every function call's ops on process-wide thread pools, in the order
they were queued, so a one-sentence predict waits behind the ops of every large batch running at
once (seconds). The regular and large lanes share a bound on their model runs at once
(`model_runs`), the small lane has none: its ops then wait behind those of a few runs only.

Admission: a lane measures its throughput (busy seconds per body byte, over its recent requests)
and refuses a request whose estimated wait -- the bytes admitted before it and not finished, plus
its own, at that rate -- is past `ADMISSION_SHARE` of the request deadline, with TF Serving's
UNAVAILABLE (HTTP 503), at once: it would only have been answered 504 after waiting for nothing,
and taken the work of requests that can still finish in time. Until a lane has measured anything
it admits every request; jobs of requests already past their deadline are dropped before they
start.
"""

import collections
import concurrent.futures
import contextlib
import dataclasses
import heapq
import itertools
import logging
import threading
import time

from keras_s2s.serving.errors import ServingError

logger = logging.getLogger(__name__)

#: Requests over which a lane's throughput is measured.
THROUGHPUT_WINDOW = 32
#: The share of the deadline a request may be expected to wait: the estimate leaves out reading
#: the body and answering, and is an average.
ADMISSION_SHARE = 0.8


@dataclasses.dataclass(eq=False)
class Ticket:
    """One admitted request of a lane."""

    number: int
    cost: int  # body bytes
    lane: "Lane"
    started: bool = False
    released: bool = False

    def stage(self, function, *args):
        """`function(*args)`, one stage of a job of this request, unless the request was
        answered meanwhile (past its deadline): stages that have not started never start."""
        if self.released:
            raise concurrent.futures.CancelledError
        return function(*args)


class Lane:
    """Threads running the jobs of admitted requests, the earliest admitted first."""

    def __init__(self, name, threads, deadline_seconds, model_runs=None):
        self.name = name
        self._deadline_seconds = deadline_seconds
        self._model_runs = model_runs if model_runs is not None else contextlib.nullcontext()
        self._condition = threading.Condition()
        self._jobs = []  # heap of (ticket number, job number, ticket, future, function, args)
        self._job_numbers = itertools.count()
        self._ticket_numbers = itertools.count()
        self._backlog = 0  # bytes of admitted requests not yet finished
        self._running = set()  # tickets whose first job started, not yet finished
        self._busy_seconds = 0.0  # since the last finished request, while any was running
        self._busy_mark = time.monotonic()
        self._finished = collections.deque(maxlen=THROUGHPUT_WINDOW)  # (cost, busy seconds)
        self._stopped = False
        self._threads = [
            threading.Thread(target=self._work, name=f"rest-{name}-{index}", daemon=True)
            for index in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def _seconds_per_byte(self):
        """Measured busy seconds per body byte, or None before any measurement."""
        cost = sum(finished[0] for finished in self._finished)
        return sum(finished[1] for finished in self._finished) / cost if cost else None

    def admit(self, cost):
        """A ticket for a request of `cost` body bytes; UNAVAILABLE if it would wait past the
        deadline."""
        cost = max(cost, 1)
        with self._condition:
            rate = self._seconds_per_byte()
            wait = (self._backlog + cost) * rate if rate is not None else 0.0
            if wait > ADMISSION_SHARE * self._deadline_seconds:
                logger.warning("Refused a %s request: %.1f s of work queued", self.name, wait)
                raise ServingError(
                    "UNAVAILABLE",
                    f"Server overloaded: the {self.name} requests ahead of this one would take "
                    f"about {wait:.1f} s, past the {self._deadline_seconds * 1000:.0f} ms "
                    "deadline (--rest_api_timeout_in_ms); retry later",
                )
            self._backlog += cost
            return Ticket(next(self._ticket_numbers), cost, self)

    def submit(self, ticket, function, *args):
        """Queues one job of `ticket`'s request; returns its Future (cancel it to drop the job)."""
        future = concurrent.futures.Future()
        with self._condition:
            if self._stopped:
                raise ServingError("UNAVAILABLE", "The server is shutting down")
            heapq.heappush(
                self._jobs, (ticket.number, next(self._job_numbers), ticket, future, function, args)
            )
            self._condition.notify()
        return future

    def run_model(self, function, inputs):
        """`function(inputs)` once the lane's bound on model runs at once allows."""
        with self._model_runs:
            return function(inputs)

    def release(self, ticket):
        """The request of `ticket` is answered (or failed, or timed out)."""
        with self._condition:
            ticket.released = True
            self._backlog -= ticket.cost
            if ticket in self._running:
                self._mark_busy()
                self._running.discard(ticket)
                self._finished.append((ticket.cost, self._busy_seconds))
                self._busy_seconds = 0.0

    def _mark_busy(self):
        now = time.monotonic()
        if self._running:
            self._busy_seconds += now - self._busy_mark
        self._busy_mark = now

    def stop(self):
        """Stops the threads; queued jobs are cancelled."""
        with self._condition:
            self._stopped = True
            pending, self._jobs = self._jobs, []
            self._condition.notify_all()
        for job in pending:
            job[3].cancel()
        for thread in self._threads:
            thread.join()

    def _work(self):
        while True:
            with self._condition:
                while not self._jobs and not self._stopped:
                    self._condition.wait()
                if self._stopped:
                    return
                _, _, ticket, future, function, args = heapq.heappop(self._jobs)
                if ticket.released:
                    future.cancel()  # its request was answered meanwhile (past its deadline)
                if not future.set_running_or_notify_cancel():
                    continue  # never start the work of a request past its deadline
                if not ticket.started:
                    ticket.started = True
                    self._mark_busy()
                    self._running.add(ticket)
            try:
                result = function(*args)
            except BaseException as error:  # handed to the request, which answers it
                future.set_exception(error)
            else:
                future.set_result(result)
