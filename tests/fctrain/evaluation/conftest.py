"""A tiny trained-looking model for the benchmark tests (their data: fcdata.synth_benchmarks)."""

import pytest

from tiny_models import trained_tiny

SIZE = 64
PHRASES = ["the red box on the left", "a blue ball", "green thing", "a photo of a dog", "a photo of a cat"] * 3


@pytest.fixture(scope="session")
def tiny_trained(tmp_path_factory):
    """A tiny LoRA model whose LoRA B and alpha conv are non-zero (as after training), and its tokenizer."""
    return trained_tiny(tmp_path_factory.mktemp("tiny"), PHRASES, SIZE)
