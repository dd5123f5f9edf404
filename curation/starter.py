"""The commented starter config ``mrbench init`` writes: it runs as-is on a folder of photos sorted into one
sub-folder per subject, and names the settings a new user changes first."""

from __future__ import annotations

STARTER_CONFIG = """\
# MRBench curation config. Run:   mrbench curate --config {name} --out runs/v1
# Every key with its default:     mrbench config show --config {name}
# Paths are relative to this file. Any key can be overridden on the command line: --set split.held_out_groups=5
seed: 0
num_shards: 2                     # units of work; fixed for a run folder once it has started
sources:
  - kind: folder                  # your photos: {photos}<subject>/*.jpg (the sub-folder name is the tag)
    paths: [{photos}]
    folder_tag: true              # false: sub-folder names are not tags (then set crawl.require_tag: false)
  # - kind: metadata              # LAION / COYO / DataComp-style parquet, csv or jsonl (needs crawl.tag_list)
  #   paths: ["laion/part-*.parquet"]
  #   url_col: URL                # LAION: URL / TEXT; COYO, DataComp: url / text
  #   caption_col: TEXT
crawl:
  require_tag: true               # false: keep untagged images too (photos directly in {photos}, captions
                                  # naming no tag); they form one group, or visual groups with embed.encoder
  # tag_list: tags.yaml           # [{{name, category: celebrity|character|style|subject, aliases: [...]}}]
  # allow_private_network: false  # true: also fetch URLs on your own network (refused by default)
group:
  min_group_size: 2               # a group needs a target and at least one reference
split:                            # groups drawn for evaluation, the rest is train (the paper: 50 and 300)
  held_out_groups: 1
  held_in_groups: 1
# embed: {{encoder: mobilenet_v2}}  # embeddings (offline weights): near-duplicate removal, visual groups
# dedup: {{threshold: 0.94}}
executor: {{name: local, workers: 2}}
"""


def starter_config(name: str, photos: str = "photos/") -> str:
    """The starter config's text for a file called ``name`` reading the folder ``photos``."""
    photos = photos if photos.endswith("/") else photos + "/"
    return STARTER_CONFIG.format(name=name, photos=photos)
