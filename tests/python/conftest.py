"""Shared fixtures of the Python tests. CTest runs them with PYTHONPATH set to the source
tree's python/ and the build's python/ (tests/CMakeLists.txt); by hand:
PYTHONPATH=python:BUILD/python /usr/bin/python3 -m pytest tests/python"""
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A tiny Fashion-MNIST-shaped data set (128 train / 64 test, 28x28, learnable)."""
    import pimtrain.testing
    return pimtrain.testing.write_tiny_mnist(str(tmp_path_factory.mktemp("tiny")), 128, 64)


@pytest.fixture(scope="session")
def cli():
    """The pimtrain binary of this build (PIMTRAIN_CLI), or skip."""
    path = os.environ.get("PIMTRAIN_CLI", "")
    if not path or not os.path.exists(path):
        pytest.skip("no pimtrain binary given (PIMTRAIN_CLI)")
    return path


def run_cli(cli, *args):
    return subprocess.run([cli, *args], capture_output=True, text=True)
