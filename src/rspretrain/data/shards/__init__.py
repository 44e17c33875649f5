"""Sharded, streamed data for pretraining at the papers' scale (``rspretrain prepare``, ``shards:DIR``).

``prepare`` writes any image source the toolkit reads into litdata chunks (original JPEG/PNG bytes, one label per
image, a manifest with classes, bands, value scale and per-band statistics); training streams them, each rank and
each DataLoader worker reading its own part, decoding and cropping each image in the worker. Georeferenced scenes
(``geotiff:`` / ``landcover:``) are tiled once, exactly as in memory, and their tiles -- with land-cover class
proportions for GeoKR -- written losslessly (:mod:`.prepare_tiles`, streamed by :mod:`.shard_tiles`).
"""
