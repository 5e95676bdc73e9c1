"""Several replicas working as one cache: leases in Redis decide which replica does a piece
of work (a blob's download, a manifest's revalidation, a prefetch run, an eviction pass),
and the others follow it instead of doing it again."""
