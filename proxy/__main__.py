"""``python -m proxy`` runs the ``regcache`` command line."""

from proxy.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
