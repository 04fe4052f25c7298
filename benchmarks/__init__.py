"""Benchmarks for rinkit: RIN vs ADM U-Nets and vs rin-pytorch (`python -m benchmarks`).
Speed goals live here, never in timed unit tests. See benchmarks/RESULTS.md."""
