"""Names of the fields of a shard sample (a WebDataset dict of bytes keyed by extension).

One sample is one image. Its region masks are stored as each region's row and column profile
(layout separable-v1, see `fcdata.masks`), binary or soft; a sample where some regions have a real
(segmentation) mask adds those masks, cut to their rectangles, as run boundaries (layout runs-v1,
see `fcdata.segmasks`).
"""

KEY = "__key__"  # "000000123": the Visual Genome image id, zero-padded so keys sort numerically
URL = "__url__"  # the shard a sample came from (set by webdataset when reading)
IMAGE = "jpg"  # RGB JPEG, shorter side = ShardOptions.image_size (never upscaled)
MASK_PROFILES = "profiles.png"  # K x (H + W) PNG, 1-bit (binary) or 8-bit (soft)
MASK_RUNS = "runs.png"  # runs-v1, binary masks: per mask row, the columns where it switches
MASK_CROPS = "crops.png"  # runs-v1, graded masks: the masks' 8-bit crops, stacked
META = "json"  # image id, sizes, per-region ids/phrases/boxes/objects, mask layout

MASK_LAYOUT_SEPARABLE = "separable-v1"
MASK_LAYOUT_RUNS = "runs-v1"
