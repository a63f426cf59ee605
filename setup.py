"""Thin shim: the metadata lives in pyproject.toml, the dependencies in requirements.txt."""

from setuptools import setup

setup()
