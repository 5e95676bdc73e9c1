"""Progress output of the long commands, without a terminal and with one."""

from __future__ import annotations

import io

from proxy.commands.progress import Reporter


def test_without_a_terminal_each_item_is_two_plain_lines() -> None:
    out = io.StringIO()
    with Reporter("warm", stream=out) as progress:
        image = progress.item("docker.io/library/alpine:3.20", 100)
        image.advance(60)
        image.grow(150)
        image.advance(90)
        image.finish("3 blobs")
        progress.item("docker.io/library/gone:1").fail("404 MANIFEST_UNKNOWN")
    lines = out.getvalue().splitlines()
    assert lines[0] == "warm docker.io/library/alpine:3.20: started"
    assert lines[1].startswith("warm docker.io/library/alpine:3.20: done, 150 B in ")
    assert lines[1].endswith("; 3 blobs")
    assert lines[2:] == [
        "warm docker.io/library/gone:1: started",
        "warm docker.io/library/gone:1: FAILED: 404 MANIFEST_UNKNOWN",
    ]
    assert "\x1b" not in out.getvalue()


def test_on_a_terminal_a_total_bar_counts_every_item() -> None:
    out = io.StringIO()
    with Reporter("export", stream=out, live=True) as progress:
        for name in ("a", "b"):
            item = progress.item(name, 1000)
            item.advance(1000)
            item.finish()
    text = out.getvalue()
    assert "export a: done, 1000 B" in text
    assert "export: total" in text
    assert "2.0/2.0 kB" in text or "2000/2000 bytes" in text
