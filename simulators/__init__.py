"""Gymnasium environments for ad auctions."""
