"""The cache logic between the handlers and the stores: resolve, fetch once, verify."""
