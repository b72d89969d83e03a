"""Absorption: turn documents into training samples and train a memory on them."""
