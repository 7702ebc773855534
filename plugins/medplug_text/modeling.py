"""The offline default network: a compact BERT built from ``transformers.BertConfig``."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification


@dataclass
class CompactBertSize:
    """Width and depth of the default model; small enough to train on 2 CPU cores."""

    hidden_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    intermediate_size: int = 512
    max_position_embeddings: int = 512


def compact_config(vocab_size: int, pad_token_id: int, size: CompactBertSize) -> BertConfig:
    return BertConfig(
        vocab_size=vocab_size,
        pad_token_id=pad_token_id,
        hidden_size=size.hidden_size,
        num_hidden_layers=size.num_hidden_layers,
        num_attention_heads=size.num_attention_heads,
        intermediate_size=size.intermediate_size,
        max_position_embeddings=size.max_position_embeddings,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
    )


def new_masked_lm(config: BertConfig) -> BertForMaskedLM:
    """A freshly initialised compact BERT with an MLM head, for domain pretraining."""
    return BertForMaskedLM(config)


def new_classifier(config: BertConfig, labels: list[str]) -> BertForSequenceClassification:
    """A freshly initialised compact BERT with a classification head for ``labels``."""
    config = BertConfig.from_dict(config.to_dict())
    set_labels(config, labels)
    return BertForSequenceClassification(config)


def set_labels(config: BertConfig, labels: list[str]) -> None:
    """Record label names in an HF config, so the folder is self-describing to HF too."""
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {label: index for index, label in enumerate(labels)}
