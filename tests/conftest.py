"""Shared test configuration."""

import sys
from pathlib import Path

# Make helper modules in tests/ (e.g. the Kafka broker fixture) importable.
sys.path.insert(0, str(Path(__file__).parent))
