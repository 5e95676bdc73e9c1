"""bench/procfs.py's memory figures: PSS counts the pages a process shares with the one it
was forked from once between them, where the sum of their RSS counts them twice."""

from __future__ import annotations

import os

from bench.procfs import pss, rss, status_bytes, total_pss, total_rss


def test_pss_divides_the_pages_a_forked_child_shares() -> None:
    ballast = bytearray(32 * 2**20)  # written, so resident, and shared with the child
    for at in range(0, len(ballast), 4096):
        ballast[at] = 1
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(writer)
        os.read(reader, 1)  # until the parent has measured
        os._exit(0)
    os.close(reader)
    try:
        me = os.getpid()
        mine, shared = rss(me), pss(me)
        assert mine is not None
        assert shared is not None
        assert 0 < shared < mine
        both_rss, both_pss = total_rss([me, child]), total_pss([me, child])
        assert both_rss is not None
        assert both_pss is not None
        # The ballast alone: 32 MB in each RSS, 32 MB in all between the two PSS.
        assert both_rss - both_pss > 24 * 2**20
        assert status_bytes(me, "RssAnon") is not None
    finally:
        os.close(writer)
        os.waitpid(child, 0)
    del ballast


def test_a_process_that_is_gone_has_no_figures() -> None:
    child = os.fork()
    if child == 0:
        os._exit(0)
    os.waitpid(child, 0)
    assert pss(child) is None
    assert total_pss([child]) is None
