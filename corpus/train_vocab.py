"""Train the shared sentencepiece vocabulary on a language-balanced sample of the corpus.

    python corpus/train_vocab.py --corpus data/corpus --out data/vocab [--vocab-size 20000]

Every language contributes its first `--chars-per-language` characters of training text (or all
of it, if it has less), so small languages are not drowned by English: the same cap for all is
the balance. Long documents are cut at whitespace into pieces of at most 2,000 characters, since
sentencepiece skips longer "sentences". The model is a unigram model with sentencepiece's
`nmt_nfkc` normalization, as XLM-R's, and a character coverage of 0.9995, so that the common
Chinese and Japanese characters get pieces of their own and only the rarest fall to `<unk>`.

The result is written with XLM-R's special-token layout by `XmodTokenizer.save_pretrained`
(`<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3, pieces from 4, `<mask>` last), which transformers'
`XLMRobertaTokenizer` loads too: `--vocab-size` counts all of these ids.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Iterator

import sentencepiece as spm

import xmod_jax as xj
from xmod_jax.train.mlm_data import read_documents

PIECE_CHARS = 2000
EXTRA_IDS = 2  # <pad> and <mask> are added to sentencepiece's own ids


def pieces(document: str, limit: int = PIECE_CHARS) -> Iterator[str]:
    """`document` cut at whitespace into pieces of at most `limit` characters (a longer run
    without whitespace is cut anywhere)."""
    while len(document) > limit:
        cut = document.rfind(" ", 0, limit)
        cut = cut if cut > 0 else limit
        yield document[:cut]
        document = document[cut:].lstrip()
    if document:
        yield document


def balanced_sample(corpus: str, languages: list[str], chars_per_language: int) -> list[str]:
    """The first `chars_per_language` characters of each language's training split, in pieces."""
    sample = []
    for code in languages:
        docs = read_documents(os.path.join(corpus, f"{code}.train.txt"), chars_per_language)
        sample.extend(p for doc in docs for p in pieces(doc))
    return sample


def train(corpus: str, out: str, languages: list[str], vocab_size: int, chars: int) -> None:
    sample = balanced_sample(corpus, languages, chars)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, "spm")
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sample),
            model_prefix=prefix,
            vocab_size=vocab_size - EXTRA_IDS,
            model_type="unigram",
            character_coverage=0.9995,
            normalization_rule_name="nmt_nfkc",
            input_sentence_size=len(sample),
            shuffle_input_sentence=True,
            max_sentence_length=PIECE_CHARS * 4,
            num_threads=os.cpu_count() or 1,
            minloglevel=2,
        )
        tokenizer = xj.XmodTokenizer(model_file=prefix + ".model")
        tokenizer.save_pretrained(out)
    took = time.perf_counter() - start
    print(
        f"trained a {len(tokenizer)}-id vocabulary for {len(languages)} languages on "
        f"{len(sample):,} pieces ({chars:,} characters per language at most) in {took:.0f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="data/corpus", help="corpus/build.py's output")
    parser.add_argument("--out", default="data/vocab", help="tokenizer folder to write")
    parser.add_argument("--vocab-size", type=int, default=20000, help="all ids (20000)")
    parser.add_argument("--chars-per-language", type=int, default=1_500_000)
    parser.add_argument("--languages", nargs="*", help="codes (default: every language)")
    args = parser.parse_args()
    languages = args.languages or sorted(
        name.split(".")[0] for name in os.listdir(args.corpus) if name.endswith(".train.txt")
    )
    train(args.corpus, args.out, languages, args.vocab_size, args.chars_per_language)


if __name__ == "__main__":
    main()
