"""Evaluation: one module per benchmark (reading its data, applying its protocol) over shared
method code (how each method shows a region to CLIP: methods) and scoring (scoring).

- regions: box/phrase selection, retrieval and zero-shot classification on our VG validation shards.
- rec: zero-shot referring expressions on RefCOCO, RefCOCO+, RefCOCOg (ReCLIP's protocol).
- imagenet_s: zero-shot ImageNet-S919 classification with mask, box and whole alphas (Alpha-CLIP's).
- published: the published numbers of those protocols, to print beside measured ones.

A new benchmark is one module that turns its data into (image, regions) items for
methods.Tower.encode_images and scores the features it gets back.
"""
