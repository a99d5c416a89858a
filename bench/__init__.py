"""pixelgate's benchmarks: one module per scenario, run from the repository root as
`python -m bench.<scenario>` (bench/README.md), on a library of shared parts (bench/lib/)."""
