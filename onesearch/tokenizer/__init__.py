"""Semantic-ID tokenizers: item embeddings, keyword enhancement, residual / product quantization, RQ-VAE."""
