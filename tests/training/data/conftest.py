"""Fixtures of the training-data tests: a tiny text tokenizer, model config and sequence builder."""

from __future__ import annotations

import pytest

from tests.training.data.make_golden import make_builder, make_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="session")
def builder(tokenizer):
    return make_builder(tokenizer)
