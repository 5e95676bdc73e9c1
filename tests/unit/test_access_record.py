"""Access records are made from a per-thread template: they must be the records logging makes."""

from __future__ import annotations

import logging
import threading
import time

from proxy.server.accesslog import _record


def test_an_access_record_has_what_logging_would_give_it() -> None:
    before = time.time()
    made = _record("regcache.access", "a line")
    after = time.time()
    real = logging.LogRecord("regcache.access", logging.INFO, "", 0, "a line", None, None)
    assert set(made.__dict__) == set(real.__dict__)
    assert made.getMessage() == "a line"
    assert (made.levelname, made.name, made.process) == ("INFO", "regcache.access", real.process)
    assert made.threadName == threading.current_thread().name
    assert before <= made.created <= after
    assert made.msecs == int((made.created - int(made.created)) * 1000)
    since_real = (made.created - real.created) * 1000
    assert abs(made.relativeCreated - since_real - real.relativeCreated) < 1


def test_each_record_is_its_own() -> None:
    first, second = _record("regcache.access", "one"), _record("regcache.access", "two")
    first.fields = {"a": 1}
    assert (first.getMessage(), second.getMessage()) == ("one", "two")
    assert not hasattr(second, "fields")
