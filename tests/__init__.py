"""sclora-tools' test suite: offline, on tiny Llama models built from a config (tests/tiny.py), with
the calibrate -> init -> train -> merge chain built once per setting (tests/chain.py) and a Hub test
double on 127.0.0.1 (tests/hubdouble/). The tree mirrors the package: tests/core/test_subspace.py
tests sclora_tools/core/subspace.py, and so on."""

import os

# Before anything imports huggingface_hub, transformers or datasets: they read these once, at import.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("SCLORA_QUIET", "1")
