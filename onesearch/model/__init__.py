"""The generative retriever (encoder-decoder over semantic IDs), its inputs and its training."""
