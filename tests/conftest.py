"""Shared test configuration."""

import sys
from pathlib import Path

# Make helper modules in tests/ (e.g. the Kafka broker fixture) importable.
sys.path.insert(0, str(Path(__file__).parent))

# The Kafka broker fixtures (kafka_bootstrap, kafka_broker, kafka_cluster3): a real broker
# from Maven Central jars, started on first use and stopped at the end of the session.
pytest_plugins = ["kafka_broker"]
