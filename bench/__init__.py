"""Side-by-side benchmark of regcache against Distribution's proxy mode and an nginx cache.

Run ``python -m bench`` (``--quick`` for a short run); see README.md, "Benchmarks".
"""
