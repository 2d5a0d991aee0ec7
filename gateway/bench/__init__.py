"""`ledger bench`: each workload beside its baseline in the same run, with invariant checks."""
