"""The systems the generator must beat: popularity, the BM25 + dense + co-purchase recall with a LightGBM
LambdaRank ranker (the cascade), and SASRec."""
