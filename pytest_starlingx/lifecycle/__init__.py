"""How labs live: acquired under a policy (``acquire``), their state on the host (``state``),
who holds them (``leases``), golden snapshots (``golden``), per-stage snapshots
(``checkpoints``), and the collection of what dead owners left (``gc``)."""
