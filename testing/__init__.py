"""Real Ray clusters on one machine for tests and benchmarks (`clusters`: Ray's autoscaler over its
fake multi-node provider, v1 or v2, and the state helpers that watch it). Not used by a run."""
