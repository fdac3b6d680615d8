"""Cluster mode: several chatd nodes serving the same rooms through Redis
(see chatd.cluster.node and docs/cluster.md)."""
