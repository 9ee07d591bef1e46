"""Generative e-commerce search: data, semantic-ID tokenizers, the generative retriever, the cascade baseline."""
