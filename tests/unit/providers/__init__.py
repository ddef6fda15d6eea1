"""Unit tests of the provider plugins; ``contract.py`` holds the tests every provider must pass."""
