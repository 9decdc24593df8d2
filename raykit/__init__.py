"""Helpers behind raykit's invoke tasks."""
