"""The soak (``python -m bench soak``) for half a minute of load: the clients, the fault proxy
and regcache run for real, and the clients' checks hold (no time is asserted)."""

from __future__ import annotations

from pathlib import Path

from bench.soak import SoakSettings, result_document, soak
from bench.soakimages import MB
from bench.soakreport import render_markdown, render_text


async def test_half_a_minute_of_soak_serves_no_wrong_byte_and_no_5xx_for_cached_content(
    tmp_path: Path,
) -> None:
    settings = SoakSettings(minutes=0.5, workers=4, large_sizes=(2 * MB, 4 * MB), quiet_settle=2.0)
    figures, samples = await soak(settings, tmp_path, print)

    assert figures["wrong_bytes"] == 0, figures["wrong_examples"]
    assert figures["cached_5xx"] == 0, figures["cached_5xx_examples"]
    # The soak tested something: the upstream failed, and content was served cold and warm.
    assert figures["faults"]["faults_total"] > 0
    assert figures["pulls"].get("cold ok", 0) > 0
    assert figures["pulls"].get("warm ok", 0) > 0
    assert figures["requests"]["blob cached"]["ok"] > 0
    assert figures["bytes_checked"] > 0
    # Memory and files were watched: the two quiet points the goals compare, regcache's own.
    quiet = [s for s in samples if s.label.startswith("quiet")]
    assert len(quiet) == 2
    assert all(s.rss_bytes > 0 and s.fds > 0 and s.processes >= 1 for s in quiet)

    document = result_document(settings, figures, samples)
    by_name = {goal["name"]: goal for goal in document["goals"]}
    assert by_name["wrong bytes"]["met"]
    assert by_name["5xx answers for cached content"]["met"]
    assert "| wrong bytes | 0 | 0 | yes |" in render_markdown(document)
    assert "goals:" in render_text(document)
