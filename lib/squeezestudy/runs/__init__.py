"""The study's runs once trained: read back (finished), trained-or-loaded with their weights
exported (study), the committed weights loaded and used to predict (weights), and the test split
opened once for a frozen recipe (sealed)."""
