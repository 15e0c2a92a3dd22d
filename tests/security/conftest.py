"""Fixtures for the security checks (helpers live in securitykit.py: `conftest` is not a unique
module name across the test tree, so tests never import from it)."""

from securitykit import make_app  # noqa: F401 - the fixture
