"""A Hugging Face Hub test double on 127.0.0.1 for the real `huggingface_hub` client (tests only).

storage: blobs, commits, repos, request records; transport: the HTTP server; reads / writes: the
endpoints; server: FakeHubServer; client: pointing the client at it; plugin: the pytest fixtures.
"""

from .client import FAKE_HF_TOKEN
from .server import FakeHubServer

__all__ = ["FAKE_HF_TOKEN", "FakeHubServer"]
