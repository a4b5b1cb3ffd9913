"""Oracle for the oracle plumbing itself: returns x + 1 and x * 2."""
from oracle_io import io

inputs, save, _ = io()
save({"plus_one": inputs["x"] + 1, "twice": inputs["x"] * 2})
