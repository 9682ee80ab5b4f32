"""Deletion requests: forget an image, a family or a caption concept, and prove it against a retrain reference.

`request` says which training rows a request names; `retrain`, `sisa` and `finetune` forget them, each behind the
`Unlearner` interface (`registry.UNLEARNERS`); `verify` measures extraction, membership and utility against the
reference and judges them by thresholds fixed in the config; `record` writes the audit record a regulator reads.
"""
