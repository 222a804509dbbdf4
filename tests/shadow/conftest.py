"""The server tests' trained models, shared."""

from tests.server.conftest import models_dir  # noqa: F401 (a fixture)
