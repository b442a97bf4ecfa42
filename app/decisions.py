"""Reading and validating the models' JSON trade decisions."""
