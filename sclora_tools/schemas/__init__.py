"""Package data: the JSON Schema of the `--json` output (output.schema.json)."""
