"""The `sclora` command line (installed as sclora_tools.cli)."""
