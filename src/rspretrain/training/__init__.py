"""The training stage: one Lightning harness (:mod:`.trainer`) and one base module (:mod:`.backbone_module`) for
everything that trains -- pretraining methods, fine-tuning tasks and dense tasks."""
