"""An example mmcore plugin package."""
