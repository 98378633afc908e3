"""Serialization: codecs for records on the wire and for operator state."""
