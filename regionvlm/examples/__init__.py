"""Worked examples that run end to end and print measured numbers (docs/finetuning.md)."""
