"""``openclip-ce demo``: the whole pipeline on toy data, on a laptop, with no download."""
