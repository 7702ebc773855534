"""Train a BERT WordPiece tokenizer on report text with Hugging Face ``tokenizers``.

The result is a ``transformers.BertTokenizer`` (fast, tokenizers-backed), so it
saves and loads with ``save_pretrained`` / ``AutoTokenizer`` like any hub one.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import WordPiece
from tokenizers.trainers import WordPieceTrainer
from transformers import BertTokenizer

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_wordpiece(
    texts: Iterable[str], vocab_size: int = 4000, min_frequency: int = 2
) -> BertTokenizer:
    """A lower-casing WordPiece tokenizer whose vocabulary is learnt from ``texts``.

    ``XXXX`` placeholders become one ordinary token (``xxxx``), so de-identified
    spans cost one position and the model can learn to ignore them.
    """
    tokenizer = Tokenizer(WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    trainer = WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        continuing_subword_prefix="##",
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    vocab = tokenizer.get_vocab()
    return BertTokenizer(vocab=vocab, do_lower_case=True, strip_accents=True)
