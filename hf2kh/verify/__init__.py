"""verify: prove a port computes what the original computes (comparisons, checks, reports)."""
