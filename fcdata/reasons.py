"""The vocabulary of counted skips and fixes, shared by the sharder, the manifest and the tests.

Skips drop something; fixes keep it after repairing it. Every one is counted in the shard summary.
"""

# Images that are not written (one manifest row each, with the reason).
SKIP_MISSING = "missing"  # listed in image_data.json, no file under VG_100K/, VG_100K_2/ or images/
SKIP_TRUNCATED = "truncated"  # the file ends before the image data does
SKIP_UNDECODABLE = "undecodable"  # not an image PIL can read
SKIP_KNOWN_CORRUPT = "known_corrupt"  # ids other VG pipelines skip (ShardOptions.skip_image_ids)
SKIP_TOO_LARGE = "too_large"  # more pixels than ShardOptions.max_source_pixels (decompression bomb)
SKIP_NO_REGIONS = "no_regions"  # no region survived filtering, or none was listed
SKIP_ERROR = "error"  # anything unexpected; the manifest row carries the exception

IMAGE_SKIPS = (
    SKIP_MISSING, SKIP_TRUNCATED, SKIP_UNDECODABLE, SKIP_KNOWN_CORRUPT, SKIP_TOO_LARGE,
    SKIP_NO_REGIONS, SKIP_ERROR,
)

# Images that are written after a repair.
FIX_GRAYSCALE = "grayscale"  # L / LA / I / 1 source, converted to RGB
FIX_CMYK = "cmyk"  # CMYK / YCCK JPEG, converted to RGB
FIX_PALETTE = "palette"  # P / PA source, converted to RGB
FIX_ALPHA = "alpha"  # RGBA source, alpha dropped
FIX_FORMAT_MISMATCH = "format_mismatch"  # e.g. a PNG stored as .jpg: decoded by content, not name
FIX_SIZE_MISMATCH = "size_mismatch"  # image_data.json states another size: the decoded one is used

IMAGE_FIXES = (
    FIX_GRAYSCALE, FIX_CMYK, FIX_PALETTE, FIX_ALPHA, FIX_FORMAT_MISMATCH, FIX_SIZE_MISMATCH,
)

# Regions that are dropped (counted per reason in the summary, per image in the manifest).
DROP_BAD_RECORD = "bad_record"  # a field missing or not a number
DROP_NO_IMAGE_RECORD = "no_image_record"  # its image is not in image_data.json
DROP_EMPTY_PHRASE = "empty_phrase"  # nothing left after whitespace normalisation
DROP_EMPTY_BOX = "empty_box"  # width or height <= 0, or not finite
DROP_OUTSIDE_IMAGE = "outside_image"  # nothing left after clipping to the decoded image
DROP_TOO_SMALL = "too_small"  # a side under ShardOptions.min_box_side_px in stored pixels
DROP_DUPLICATE = "duplicate"  # same phrase (ignoring case) as an earlier region, IoU above threshold

# Parse-time drops happen before images are opened; filter-time drops need the decoded size.
# The numba filter returns an int code per region; REGION_DROP_CODES[code] names it (0 = kept).
REGION_DROP_CODES = (
    "", DROP_EMPTY_PHRASE, DROP_EMPTY_BOX, DROP_OUTSIDE_IMAGE, DROP_TOO_SMALL, DROP_DUPLICATE,
)
REGION_DROPS = (DROP_BAD_RECORD, DROP_NO_IMAGE_RECORD) + REGION_DROP_CODES[1:]

# Regions that are kept after a repair.
FIX_CLIPPED = "clipped"  # partly outside the image: clipped to it
FIX_WHITESPACE = "whitespace"  # leading/trailing/repeated whitespace, tabs or newlines normalised
FIX_LONG_PHRASE = "long_phrase"  # cut at a word boundary to ShardOptions.max_phrase_chars

REGION_FIXES = (FIX_CLIPPED, FIX_WHITESPACE, FIX_LONG_PHRASE)

# Visual Genome images that other pipelines (e.g. scene-graph benchmarks) treat as corrupt.
KNOWN_CORRUPT_IMAGE_IDS = (1592, 1722, 4616, 4617)

# Shards and samples that readers of shards (train, eval, show, bench, pretraining) skip, counted
# in each command's summary (fcdata.guard classifies the errors).
READ_EMPTY_SHARD = "empty_shard"  # a shard file holding no sample (e.g. 0 bytes)
READ_UNREADABLE_SHARD = "unreadable_shard"  # not a tar archive, or the file cannot be read
READ_TRUNCATED_SHARD = "truncated_shard"  # the archive ends inside a member; samples before it are kept
READ_MISSING_MEMBER = "missing_member"  # a sample without its jpg, json or mask member
READ_BAD_METADATA = "bad_metadata"  # the json member is not UTF-8 JSON
READ_BAD_IMAGE = "bad_image"  # the jpg member does not decode
READ_BAD_SAMPLE = "bad_sample"  # anything else: fields of the wrong shape, masks that do not fit

READ_SKIPS = (
    READ_EMPTY_SHARD, READ_UNREADABLE_SHARD, READ_TRUNCATED_SHARD, READ_MISSING_MEMBER,
    READ_BAD_METADATA, READ_BAD_IMAGE, READ_BAD_SAMPLE,
)
