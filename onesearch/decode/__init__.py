"""The trie of valid semantic IDs that constrained decoding walks (:mod:`onesearch.model.beam` runs the search).

It knows nothing of the model: the model package depends on it, never the other way.
"""

from onesearch.decode.trie import SIDTrie

__all__ = ["SIDTrie"]
