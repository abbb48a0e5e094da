"""Performance benchmarks: speed and memory figures of prep, loading and training, and the
crash-safety soak. Each runs as ``python -m benchmarks.perf.NAME`` from the repository root."""
