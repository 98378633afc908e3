"""A pipeline file whose import fails (a bug in user code)."""

import eventspine as es

pipeline = es.Pipeline("broken")
value = {"a": 1}["missing"]
