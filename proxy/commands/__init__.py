"""The commands that work on a cache directory rather than serve it: warm, export, import,
inventory, ls, rm, prune. Each module adds its subcommand with ``add_parser(commands)``."""
