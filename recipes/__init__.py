"""What a user runs from the repository root; a package only so that `python -m recipes.benchmarks.<name>` works."""
