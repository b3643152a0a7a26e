"""HTTP API of the payments package (issue 4)."""
