"""Talking to upstream registries: authentication, redirects, status mapping."""
