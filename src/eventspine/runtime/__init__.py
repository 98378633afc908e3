"""The runtime: compiles pipelines into operators and runs them (loops, time, state)."""
