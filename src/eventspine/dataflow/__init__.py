"""Pure pipeline definitions: steps, expressions, windows, aggregations and ports."""
