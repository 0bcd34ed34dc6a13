"""`hf2kh zoo`: breadth measured. For every text model type in transformers' causal-LM and
masked-LM auto mappings, build a tiny random checkpoint (generic config shrinker, tokenizer trained
locally), run the full port with verification in its own process under a time limit, and tabulate
what happened.

Modules: `types` (which model types, which head), `shrink` (tiny configs from defaults),
`tokenizer` (locally trained tokenizers), `build` (config + weights + tokenizer -> checkpoint),
`worker` (one type, in a child process), `run` (the sweep), `table` (terminal table and JSON).
"""
