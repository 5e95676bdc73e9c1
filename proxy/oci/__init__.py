"""Pure parsing of OCI names, references, digests and request paths: no I/O here."""
