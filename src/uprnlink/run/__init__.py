"""Run: the stage order, landing checks, the run lock, run history and evaluation."""
