"""The reliability harness: workload, reference pipeline, oracle, verifier, supervisor.

Import from tests as ``reliability.harness.<module>`` (``tests/`` is on ``sys.path``).
See docs/guarantees.md for what the suite proves.
"""
