"""Flax modules of X-MOD, and nothing else: no file I/O, no training code.

Axis legend, used in every einsum and shape comment of this package:
  B batch, T query positions, S key positions, D hidden, N heads, H head dim,
  F intermediate (FFN), R adapter bottleneck, L languages, C choices, V vocabulary.

  module.py    the public module base: fields, runtime options, the one call signature
  inputs.py    checking and normalising call arguments (lang_ids included) before compute
  layers.py    initialisers, dense, layer norm, fill-mode lookups, embeddings
  attention.py masks, multi-head attention, the attention block
  adapters.py  stacked per-language adapters and their routing strategies
  encoder.py   embeddings, layers, the (unrolled or scanned) layer stack, `XmodModel`
  heads.py     task heads, each describing its loss, head parameters and architecture name
  losses.py    the training loss of every head
  cache.py     the functional decoder key/value cache
  outputs.py   output dataclasses
  axes.py      logical axis names of every parameter
  layouts.py   unrolled <-> scanned parameter layouts
  constraints.py  sharding constraints, off unless `xmod_jax.parallel` sets rules
"""
