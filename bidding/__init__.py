"""Auto-bidding agents (heuristics, offline RL, Decision Transformers) behind one bidder protocol."""
