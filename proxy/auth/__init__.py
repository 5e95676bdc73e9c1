"""Client authentication and per-repository access rules (off unless ``auth.htpasswd`` is set).

- rules: access rules matched against ``<upstream>/<repository>``, pure
- passwords: htpasswd bcrypt checks, in a thread, with a short cache of successes
- tokens: regcache's own short-lived bearer tokens (JWT, HS256)
- ratelimit: failed logins per client address; sharedlimit: the same, counted in Redis for a fleet
- gate: who is asking (Basic, Bearer, anonymous) and whether they may; every denial counted
  and logged
"""
