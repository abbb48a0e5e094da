"""Research diagnostics: what the objectives, weak labels and trained separators do on known
answers. Each runs as ``python -m benchmarks.diagnostics.NAME`` from the repository root."""
