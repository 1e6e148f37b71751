"""Runs that chain stages (the layer above sclora_tools.stages; the CLI calls them)."""
