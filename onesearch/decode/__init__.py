"""Constrained decoding of semantic IDs: the valid-ID trie and batched beam search."""

from onesearch.decode.beam import Decoded, beam_search, greedy, level_logprobs, score_all_items
from onesearch.decode.trie import SIDTrie

__all__ = ["Decoded", "SIDTrie", "beam_search", "greedy", "level_logprobs", "score_all_items"]
