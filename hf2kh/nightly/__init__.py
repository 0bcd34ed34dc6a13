"""`hf2kh nightly`: port and verify a list of checkpoints, one process each, and compare the run
with the previous one (list file, runner, reports, baseline comparison)."""
