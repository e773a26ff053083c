"""lm-evaluation-harness integration: unmask as an lm-eval model and lm-eval's tasks in unmask eval."""
