"""A small WordPiece tokenizer built from the run's own data (`smoke`: no hub, no download).

The special tokens and their layout follow the seed model's tokenizer, so the tiny model sees
inputs shaped like the real one's: BERT's [CLS] x [SEP], XLNet's x <sep> <cls> padded on the
left (its classifier reads the last token), BART's <s> x </s>."""

from __future__ import annotations

from collections import Counter

from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
)
from transformers import PreTrainedTokenizerFast

STYLES = {
    "bert": {
        "special": {
            "unk_token": "[UNK]",
            "pad_token": "[PAD]",
            "cls_token": "[CLS]",
            "sep_token": "[SEP]",
            "mask_token": "[MASK]",
        },
        "lowercase": True,
        "padding_side": "right",
    },
    "xlnet": {
        "special": {
            "unk_token": "<unk>",
            "pad_token": "<pad>",
            "cls_token": "<cls>",
            "sep_token": "<sep>",
            "mask_token": "<mask>",
            "bos_token": "<s>",
            "eos_token": "</s>",
        },
        "lowercase": False,
        "padding_side": "left",
    },
    "bart": {
        "special": {
            "bos_token": "<s>",
            "pad_token": "<pad>",
            "eos_token": "</s>",
            "unk_token": "<unk>",
            "mask_token": "<mask>",
            "cls_token": "<s>",
            "sep_token": "</s>",
        },
        "lowercase": False,
        "padding_side": "right",
    },
}


def _template(style: str, special: dict[str, str], ids: dict[str, int]):
    if style == "bert":
        cls, sep = special["cls_token"], special["sep_token"]
        single, pair = f"{cls} $A {sep}", f"{cls} $A {sep} $B:1 {sep}:1"
    elif style == "xlnet":
        cls, sep = special["cls_token"], special["sep_token"]
        single, pair = f"$A {sep} {cls}", f"$A {sep} $B:1 {sep}:1 {cls}:2"
    else:
        cls, sep = special["bos_token"], special["eos_token"]
        single, pair = f"{cls} $A {sep}", f"{cls} $A {sep} {sep} $B {sep}"
    tokens = [(t, ids[t]) for t in dict.fromkeys([cls, sep])]
    return processors.TemplateProcessing(single=single, pair=pair, special_tokens=tokens)


def train_tokenizer(
    texts: list[str], style: str, vocab_size: int = 2000
) -> PreTrainedTokenizerFast:
    spec = STYLES[style]
    special = spec["special"]
    specials = list(dict.fromkeys(special.values()))
    # pad first so its id is 0 for every style
    specials.remove(special["pad_token"])
    specials.insert(0, special["pad_token"])

    tok = Tokenizer(models.WordPiece(unk_token=special["unk_token"]))
    norm = [normalizers.NFKC()] + ([normalizers.Lowercase()] if spec["lowercase"] else [])
    tok.normalizer = normalizers.Sequence(norm)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    vocab = _vocabulary(tok, texts, specials, vocab_size)
    tok.model = models.WordPiece(vocab=vocab, unk_token=special["unk_token"])
    tok.post_processor = _template(style, special, vocab)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, padding_side=spec["padding_side"], model_max_length=1024, **special
    )


def _vocabulary(tok: Tokenizer, texts: list[str], specials: list[str], size: int) -> dict[str, int]:
    """The same texts give the same ids in every process, so a seed reproduces a smoke run.
    (The library's WordPieceTrainer breaks ties in hash-map order, which changes from one
    process to the next: huggingface/tokenizers#1794.) Every character seen, alone and as a
    `##` continuation, so that no word is unknown; then the most frequent words whole, ties in
    alphabetical order, up to `size`."""
    counts: Counter[str] = Counter()
    for text in texts:
        words = tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(text))
        counts.update(word for word, _ in words)
    chars = sorted({c for word in counts for c in word})
    tokens = specials + chars + [f"##{c}" for c in chars]
    frequent = sorted((w for w in counts if len(w) > 1), key=lambda w: (-counts[w], w))
    tokens += frequent[: max(0, size - len(tokens))]
    return {token: i for i, token in enumerate(tokens)}
