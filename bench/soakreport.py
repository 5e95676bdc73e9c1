"""The soak's verdict and its report: goals judged from the samples and the clients' tally,
as text for the terminal and Markdown beside the JSON."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

GROWTH_LIMIT = 0.10

_OUTCOME_ORDER = ("ok", "aborted", "5xx", "truncated", "connection error", "timeout", "wrong")


def judge(
    figures: dict[str, Any], samples: Sequence[dict[str, Any]], baseline_at: float
) -> list[dict[str, Any]]:
    """One entry per goal: name, value, target, met."""
    goals: list[dict[str, Any]] = []
    quiet = [s for s in samples if s["label"].startswith("quiet")]
    base, end = (quiet[0], quiet[-1]) if len(quiet) >= 2 else (None, None)
    for field, label in (("rss_bytes", "RSS"), ("fds", "open FDs")):
        name = f"{label} at the end within 10% of minute 1 (both with the clients idle)"
        if base is None or end is None or not base[field]:
            goals.append({"name": name, "value": "no samples", "target": "", "met": False})
            continue
        growth = end[field] / base[field] - 1
        # A fall is no leak: only growth misses the goal.
        goals.append(
            {
                "name": name,
                "value": f"{_show(field, base[field])} at {base['t']:.0f} s -> "
                f"{_show(field, end[field])} at {end['t']:.0f} s ({growth:+.1%})",
                "change": round(growth, 4),
                "target": "growth <= 10%",
                "met": growth <= GROWTH_LIMIT,
            }
        )
    goals.append(_count_goal("wrong bytes", figures["wrong_bytes"]))
    goals.append(_count_goal("5xx answers for cached content", figures["cached_5xx"]))
    injected = int(figures["faults"]["faults_total"])
    goals.append(
        {
            "name": "upstream faults injected (the soak tested something)",
            "value": str(injected),
            "target": "> 0",
            "met": injected > 0,
        }
    )
    return goals


def _count_goal(name: str, count: int) -> dict[str, Any]:
    return {"name": name, "value": str(count), "target": "0", "met": count == 0}


def describe_kinds(kinds: dict[str, int]) -> str:
    """ "anon_inode 3, file 4, socket 9": what the descriptors are."""
    return ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))


def _show(field: str, value: int) -> str:
    return f"{value / 2**20:.1f} MiB" if field == "rss_bytes" else str(value)


def under_load(samples: Sequence[dict[str, Any]], baseline_at: float) -> str:
    """The same comparison on the samples taken under load (noisier: transfers in flight)."""
    loaded = [s for s in samples if s["label"] == "load"]
    base = next((s for s in loaded if s["t"] >= baseline_at), None)
    if base is None:
        return "under load: too few samples"
    end = loaded[-1]
    rss = f"{_show('rss_bytes', base['rss_bytes'])} -> {_show('rss_bytes', end['rss_bytes'])}"
    return (
        f"under load, {base['t']:.0f} s -> {end['t']:.0f} s: RSS {rss}, "
        f"FDs {base['fds']} -> {end['fds']}"
    )


def _outcome_columns(requests: dict[str, dict[str, int]]) -> list[str]:
    seen = {o for counts in requests.values() for o in counts}
    known = [o for o in _OUTCOME_ORDER if o in seen]
    return known + sorted(seen - set(known))


def _table(document: dict[str, Any]) -> list[list[str]]:
    requests: dict[str, dict[str, int]] = document["figures"]["requests"]
    columns = _outcome_columns(requests)
    rows = [["requests", *columns]]
    for key, counts in requests.items():
        rows.append([key, *(str(counts.get(c, 0)) for c in columns)])
    return rows


def _summary_lines(document: dict[str, Any]) -> list[str]:
    f = document["figures"]
    s = document["settings"]
    faults = f["faults"]
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(faults["faults"].items()))
    return [
        f"{s['minutes']:g} minutes, {s['workers']} clients, {f['requests_total']} requests, "
        f"{f['bytes_checked'] / 1e6:.0f} MB checked; images pulled {f['images']['pulled']} "
        f"of {f['images']['small'] + f['images']['large']}",
        f"pulls: {', '.join(f'{k} {v}' for k, v in sorted(f['pulls'].items()))}",
        f"upstream faults injected: {faults['faults_total']} ({kinds}) in {faults['windows']} "
        f"windows, of {faults['requests']} upstream requests",
        under_load(document["samples"], document["settings"]["baseline_at_s"]),
    ]


def render_text(document: dict[str, Any]) -> str:
    lines = ["== regcache soak ==", *_summary_lines(document), ""]
    rows = _table(document)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    lines += ["", "goals:"]
    for goal in document["goals"]:
        mark = "met   " if goal["met"] else "MISSED"
        lines.append(f"  {mark} {goal['name']}: {goal['value']} (target {goal['target']})")
    lines += ["", "regcache's counters:"]
    lines += [f"  {k} = {v:g}" for k, v in document["figures"]["regcache_counters"].items()]
    for label, key in (
        ("wrong", "wrong_examples"),
        ("5xx cached", "cached_5xx_examples"),
        ("regcache logged", "regcache_log_errors"),
    ):
        for example in document["figures"][key]:
            lines.append(f"  {label}: {example}")
    return "\n".join(lines)


def render_markdown(document: dict[str, Any]) -> str:
    lines = ["# regcache soak", "", *(f"- {line}" for line in _summary_lines(document)), ""]
    lines += ["| goal | value | target | met |", "|---|---|---|---|"]
    for goal in document["goals"]:
        met = "yes" if goal["met"] else "**no**"
        lines.append(f"| {goal['name']} | {goal['value']} | {goal['target']} | {met} |")
    rows = _table(document)
    lines += ["", "| " + " | ".join(rows[0]) + " |", "|---" * len(rows[0]) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    counters = document["figures"]["regcache_counters"]
    lines += ["", "| regcache counter | value |", "|---|---|"]
    lines += [f"| {name} | {value:g} |" for name, value in counters.items()]
    lines += [
        "",
        "| t (s) | sample | RSS (MiB) | FDs | FDs by kind | processes | requests | faults |",
        "|---" * 8 + "|",
    ]
    for sample in document["samples"]:
        lines.append(
            f"| {sample['t']:.0f} | {sample['label']} | {sample['rss_bytes'] / 2**20:.1f} | "
            f"{sample['fds']} | {describe_kinds(sample['fd_kinds'])} | "
            f"{sample['processes']} | {sample['requests']} | {sample['faults']} |"
        )
    return "\n".join(lines)
