"""Sharded, streamed image sets for pretraining at the papers' scale (``rspretrain prepare``, ``shards:DIR``).

``prepare`` writes any image source the toolkit reads into litdata chunks (original JPEG/PNG bytes, one label per
image, a manifest with classes, bands, value scale and per-band statistics); training streams them, each rank and
each DataLoader worker reading its own part, decoding and cropping each image in the worker.
"""
