"""generate: model spec -> KerasHub package (templates, weight map and audit, tokenizer)."""
