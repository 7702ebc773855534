"""transformers' LOAD REPORT for a new classification head becomes one plain line."""

from __future__ import annotations

import logging

import pytest

from medplug_text.checkpoint import load_classifier
from medplug_text.load_report import summarise


@pytest.fixture
def tiny_backbone(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4, "lung": 5, "clear": 6}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]",
    )  # fmt: skip
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=32,
    )  # fmt: skip
    BertForMaskedLM(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    return tmp_path


def test_new_head_is_reported_as_expected_in_one_line(tiny_backbone, caplog) -> None:
    with caplog.at_level(logging.INFO):
        load_classifier(tiny_backbone, ["normal", "abnormal"])
    texts = [record.getMessage() for record in caplog.records]
    assert not any("LOAD REPORT" in text for text in texts)
    notes = [text for text in texts if "classification head" in text]
    assert len(notes) == 1 and "expected" in notes[0] and "\n" not in notes[0]
    assert "\x1b[" not in notes[0]


def test_other_missing_weights_stay_a_warning() -> None:
    message = (
        "\x1b[1mBertModel LOAD REPORT\x1b[0m from: /m\nKey | Status |\n----+-------\n"
        "encoder.layer.0.attention.self.query.weight | \x1b[31mMISSING\x1b[0m |\n"
    )
    summary, expected = summarise(message)
    assert not expected and "weights initialised" in summary and "\n" not in summary
