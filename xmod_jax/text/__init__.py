"""Text: XLM-R's sentencepiece tokenizer with fairseq ids. Imports neither jax nor flax.

tokenizer.py   `XmodTokenizer`
spm_files.py   sentencepiece model files, and the unigram model inside `tokenizer.json`
normalizer.py  sentencepiece's precompiled character normalizer
"""

from xmod_jax.text.tokenizer import Encoding, XmodTokenizer, as_text_batch

__all__ = ["Encoding", "XmodTokenizer", "as_text_batch"]
