"""Gymnasium environments for ad auctions.

Importing this package registers ``simulators/Auction-v0`` (:class:`simulators.env.AuctionEnv`)::

    import gymnasium as gym
    import simulators  # noqa: F401  (registers the env)
    env = gym.make("simulators/Auction-v0", impressions=100_000)
"""

from gymnasium.envs.registration import register, registry

ENV_ID = "simulators/Auction-v0"

if ENV_ID not in registry:
    register(id=ENV_ID, entry_point="simulators.env:AuctionEnv")

__all__ = ["ENV_ID"]
