"""The project's benchmarks, run from the repository root as modules (see benchmarks/README.md):
``benchmarks.perf`` prints speed and memory figures, ``benchmarks.diagnostics`` research
diagnostics of the method; ``benchmarks.common`` holds what several of them share."""
