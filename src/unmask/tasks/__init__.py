"""Tasks: synthetic problems, answer checking and the tokenizer the bundled model is trained with."""
